#include "bulkhead_nf_shim.h"
#include <libnftnl/table.h>

int bh_nftnl_probe(void) {
    struct nftnl_table *t = nftnl_table_alloc();
    if (t == NULL) return 0;
    nftnl_table_free(t);
    return 1;
}
