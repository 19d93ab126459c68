#define _GNU_SOURCE /* setns, CLONE_NEWNET */
#include <sched.h>
#include "bulkhead_nf_shim.h"
/* glibc socket headers first: linux/in.h (via linux/netfilter.h) guards against them, not the reverse. */
#include <arpa/inet.h>
#include <sys/socket.h>
#include <libmnl/libmnl.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netlink.h>
#include <string.h>

#ifndef NFT_TABLE_F_PERSIST
/* linux commit "netfilter: nf_tables: Introduce NFT_TABLE_F_PERSIST" (6.9). */
#define NFT_TABLE_F_PERSIST 0x4
#endif

int bh_nftnl_probe(void) {
    struct nftnl_table *t = nftnl_table_alloc();
    if (t == NULL) return 0;
    nftnl_table_free(t);
    return 1;
}

uint32_t bh_nft_table_f_owner(void) { return NFT_TABLE_F_OWNER; }
uint32_t bh_nft_table_f_persist(void) { return NFT_TABLE_F_PERSIST; }
uint32_t bh_nlmsg_align(uint32_t len) { return NLMSG_ALIGN(len); }
uint32_t bh_nfnl_header_len(void) { return NLMSG_HDRLEN + sizeof(struct nfgenmsg); }
uint16_t bh_nft_msg_type(uint16_t msg) { return (uint16_t)((NFNL_SUBSYS_NFTABLES << 8) | msg); }
uint16_t bh_nfnl_msg_type(uint16_t type) { return NFNL_MSG_TYPE(type); }
size_t bh_mnl_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }

static struct nlmsghdr *batch_msg(void *buf, uint16_t type, uint32_t seq) {
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    nlh->nlmsg_seq = seq;
    struct nfgenmsg *nfg = mnl_nlmsg_put_extra_header(nlh, sizeof(*nfg));
    nfg->nfgen_family = AF_UNSPEC;
    nfg->version = NFNETLINK_V0;
    /* The subsystem travels in res_id, network byte order (the kernel also accepts the
     * host-order value old nft sent). */
    nfg->res_id = htons(NFNL_SUBSYS_NFTABLES);
    return nlh;
}

struct nlmsghdr *bh_batch_begin(void *buf, uint32_t seq, uint32_t genid, int with_genid, int echo) {
    struct nlmsghdr *nlh = batch_msg(buf, NFNL_MSG_BATCH_BEGIN, seq);
    if (echo)
        nlh->nlmsg_flags |= NLM_F_ECHO;
    if (with_genid)
        mnl_attr_put_u32(nlh, NFNL_BATCH_GENID, htonl(genid));
    return nlh;
}

struct nlmsghdr *bh_batch_end(void *buf, uint32_t seq) {
    return batch_msg(buf, NFNL_MSG_BATCH_END, seq);
}

static int err_attr_cb(const struct nlattr *attr, void *data) {
    const struct nlattr **tb = data;
    uint16_t type = mnl_attr_get_type(attr);
    if (type > NLMSGERR_ATTR_MAX) return MNL_CB_OK; /* newer kernel attribute: ignore */
    tb[type] = attr;
    return MNL_CB_OK;
}

static void parse_err(const struct nlmsghdr *nlh, struct bh_ack *ack) {
    const struct nlmsgerr *err = mnl_nlmsg_get_payload(nlh);
    ack->seq = nlh->nlmsg_seq;
    ack->error = err->error;
    ack->message = NULL;
    ack->offset = UINT32_MAX;
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS)) return;
    /* Without NETLINK_CAP_ACK the kernel echoes the whole request after the nlmsgerr. */
    unsigned int hlen = sizeof(*err);
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED))
        hlen += mnl_nlmsg_get_payload_len(&err->msg);
    if (mnl_nlmsg_size(hlen) > nlh->nlmsg_len) return;
    const struct nlattr *tb[NLMSGERR_ATTR_MAX + 1];
    memset(tb, 0, sizeof(tb));
    if (mnl_attr_parse(nlh, hlen, err_attr_cb, tb) < 0) return;
    if (tb[NLMSGERR_ATTR_MSG] && mnl_attr_validate(tb[NLMSGERR_ATTR_MSG], MNL_TYPE_NUL_STRING) == 0)
        ack->message = mnl_attr_get_str(tb[NLMSGERR_ATTR_MSG]);
    if (tb[NLMSGERR_ATTR_OFFS] && mnl_attr_validate(tb[NLMSGERR_ATTR_OFFS], MNL_TYPE_U32) == 0)
        ack->offset = mnl_attr_get_u32(tb[NLMSGERR_ATTR_OFFS]);
}

int bh_walk_messages(const void *buf, size_t len, bh_msg_cb cb, void *ctx) {
    const struct nlmsghdr *nlh = buf;
    int remaining = (int)len;
    int count = 0;
    while (mnl_nlmsg_ok(nlh, remaining)) {
        struct bh_ack ack = { .seq = nlh->nlmsg_seq, .error = 0, .message = NULL, .offset = UINT32_MAX };
        if (nlh->nlmsg_type == NLMSG_ERROR) {
            if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(struct nlmsgerr))) {
                cb(BH_MSG_TRUNCATED, nlh, NULL, ctx);
            } else {
                parse_err(nlh, &ack);
                cb(BH_MSG_ACK, nlh, &ack, ctx);
            }
        } else if (nlh->nlmsg_type == NLMSG_DONE) {
            if (nlh->nlmsg_len >= mnl_nlmsg_size(sizeof(int)))
                ack.error = *(const int *)mnl_nlmsg_get_payload(nlh);
            cb(BH_MSG_DONE, nlh, &ack, ctx);
        } else if (nlh->nlmsg_type >= NLMSG_MIN_TYPE) {
            cb(BH_MSG_DATA, nlh, NULL, ctx);
        } else {
            cb(BH_MSG_OTHER, nlh, NULL, ctx);
        }
        count++;
        nlh = mnl_nlmsg_next(nlh, &remaining);
    }
    if (remaining != 0) return -1;
    return count;
}

uint32_t bh_nlmsg_len(const struct nlmsghdr *nlh) { return nlh->nlmsg_len; }
uint16_t bh_nlmsg_type(const struct nlmsghdr *nlh) { return nlh->nlmsg_type; }
uint16_t bh_nlmsg_flags(const struct nlmsghdr *nlh) { return nlh->nlmsg_flags; }
uint32_t bh_nlmsg_seq(const struct nlmsghdr *nlh) { return nlh->nlmsg_seq; }
uint8_t bh_nfgen_family(const struct nlmsghdr *nlh) {
    const struct nfgenmsg *nfg = mnl_nlmsg_get_payload(nlh);
    return nfg->nfgen_family;
}

int bh_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }
