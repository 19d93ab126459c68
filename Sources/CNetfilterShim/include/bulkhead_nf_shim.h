#ifndef BULKHEAD_NF_SHIM_H
#define BULKHEAD_NF_SHIM_H
#include <stdint.h>
/// Returns 1 when libnftnl can allocate a table object (proves the library links).
int bh_nftnl_probe(void);
#endif
