/* TCP program family: the records bpf/tcp.bpf.c writes to its ring buffer and
 * the indices of its stats map. Shared with userspace (userspace/event_decoder).
 */
#ifndef KSPAN_BPF_TCP_H
#define KSPAN_BPF_TCP_H

#include "bpf/kspan_common.h"

/* One outgoing connection attempt: SYN_SENT until ESTABLISHED or CLOSE. */
struct kspan_tcp_connect_event {
	__u32 type;        /* KSPAN_EVENT_TCP_CONNECT */
	__u32 pid;         /* tgid of the process that called connect() */
	__u32 tid;         /* its thread */
	__u32 error;       /* 0 once established; else sk_err at close (ECONNREFUSED, ETIMEDOUT, ...) */
	__u64 start_ns;    /* CLOCK_MONOTONIC at SYN_SENT */
	__u64 end_ns;      /* CLOCK_MONOTONIC at ESTABLISHED or CLOSE */
	__u16 family;      /* AF_INET or AF_INET6 */
	__u16 sport;       /* host byte order */
	__u16 dport;       /* host byte order */
	__u8 established;  /* 1: handshake completed */
	__u8 pad0;
	__u8 saddr[16];    /* IPv4 in the first 4 bytes for AF_INET */
	__u8 daddr[16];
	char comm[KSPAN_COMM_LEN];
};

/* Per-CPU counters of the TCP family (map kspan_tcp_stats), summed by userspace. */
enum kspan_tcp_stat {
	KSPAN_TCP_STAT_CONNECT_EMITTED = 0,   /* records submitted to the ring */
	KSPAN_TCP_STAT_RING_FULL,             /* bpf_ringbuf_reserve failed: record lost */
	KSPAN_TCP_STAT_START_TABLE_FULL,      /* SYN_SENT not remembered: attempt lost */
	KSPAN_TCP_STAT_MAX,
};

#endif /* KSPAN_BPF_TCP_H */
