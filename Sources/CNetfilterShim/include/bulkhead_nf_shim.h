#ifndef BULKHEAD_NF_SHIM_H
#define BULKHEAD_NF_SHIM_H
/*
 * Bulkhead's C shim over libmnl / libnftnl / kernel headers.
 *
 * Swift cannot import function-like C macros, and some constants are newer than Debian's
 * kernel headers. Everything of that kind goes through a `bh_` function here so Swift never
 * re-derives a macro by hand.
 */
#include <stdint.h>
#include <stddef.h>

struct nlmsghdr;

/// Returns 1 when libnftnl can allocate a table object (proves the library links).
int bh_nftnl_probe(void);

/// NFT_TABLE_F_OWNER (0x2, linux 5.12).
uint32_t bh_nft_table_f_owner(void);
/// NFT_TABLE_F_PERSIST (0x4, linux 6.9). Debian bookworm's linux-libc-dev predates it.
uint32_t bh_nft_table_f_persist(void);

/// NLMSG_ALIGN(len).
uint32_t bh_nlmsg_align(uint32_t len);
/// NLMSG_HDRLEN + sizeof(struct nfgenmsg): the fixed head of every nfnetlink message.
uint32_t bh_nfnl_header_len(void);
/// (NFNL_SUBSYS_NFTABLES << 8) | msg: the nlmsg_type of an nf_tables message.
uint16_t bh_nft_msg_type(uint16_t msg);
/// The nf_tables message number inside an nlmsg_type (NFNL_MSG_TYPE()).
uint16_t bh_nfnl_msg_type(uint16_t type);
/// MNL_SOCKET_BUFFER_SIZE (a sysconf() expression in libmnl.h).
size_t bh_mnl_socket_buffer_size(void);

/**
 * Writes NFNL_MSG_BATCH_BEGIN for the nf_tables subsystem at `buf`.
 * When `with_genid` is non-zero the NFNL_BATCH_GENID attribute carries `genid`, so the kernel
 * refuses the whole batch with ERESTART if the ruleset generation moved since we read it.
 * With `echo` non-zero, NLM_F_ECHO asks the kernel to send us the NFT_MSG_NEWGEN of the commit
 * (nf_tables_gen_notify reports to the sender when the batch's first header asks for it).
 */
struct nlmsghdr *bh_batch_begin(void *buf, uint32_t seq, uint32_t genid, int with_genid, int echo);
/// Writes NFNL_MSG_BATCH_END at `buf`.
struct nlmsghdr *bh_batch_end(void *buf, uint32_t seq);

/**
 * Decoded NLMSG_ERROR (an ack when error == 0). `message` points into the received buffer
 * (NLMSGERR_ATTR_MSG) or is NULL; `offset` is NLMSGERR_ATTR_OFFS or UINT32_MAX.
 */
struct bh_ack {
    uint32_t seq;
    int32_t error;
    const char *message;
    uint32_t offset;
};

/// Kind of one message in a received buffer.
enum bh_msg_kind { BH_MSG_ACK = 1, BH_MSG_DONE = 2, BH_MSG_DATA = 3, BH_MSG_OTHER = 4, BH_MSG_TRUNCATED = 5 };

/**
 * Walks one received datagram. For each message calls `cb(kind, nlh, ack, ctx)`; `ack` is
 * filled for BH_MSG_ACK and BH_MSG_DONE (a dump's NLMSG_DONE may carry an error code).
 * Returns the number of messages seen, or -1 when the datagram is malformed.
 */
typedef void (*bh_msg_cb)(int kind, const struct nlmsghdr *nlh, const struct bh_ack *ack, void *ctx);
int bh_walk_messages(const void *buf, size_t len, bh_msg_cb cb, void *ctx);

/// nlh->nlmsg_len / nlmsg_type / nlmsg_seq without Swift touching the struct layout.
uint32_t bh_nlmsg_len(const struct nlmsghdr *nlh);
uint16_t bh_nlmsg_type(const struct nlmsghdr *nlh);
uint16_t bh_nlmsg_flags(const struct nlmsghdr *nlh);
uint32_t bh_nlmsg_seq(const struct nlmsghdr *nlh);
/// nfgenmsg.nfgen_family of an nfnetlink message.
uint8_t bh_nfgen_family(const struct nlmsghdr *nlh);

/// setns(fd, CLONE_NEWNET): both need _GNU_SOURCE, which Swift's Glibc import does not set.
int bh_setns_net(int fd);

#endif
