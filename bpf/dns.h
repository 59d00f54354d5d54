/* DNS program family: queries to and responses from UDP port 53, copied from
 * the socket syscalls' user buffers. Shared with userspace (dns_spans). */
#ifndef KSPAN_BPF_DNS_H
#define KSPAN_BPF_DNS_H

#include "bpf/kspan_common.h"

#define KSPAN_DNS_PAYLOAD 256 /* header + question; longer messages are cut */

enum kspan_dns_direction {
	KSPAN_DNS_QUERY = 1,
	KSPAN_DNS_RESPONSE = 2,
};

struct kspan_dns_event {
	__u32 type;       /* KSPAN_EVENT_DNS */
	__u32 pid;
	__u32 tid;
	__u16 direction;  /* enum kspan_dns_direction */
	__u16 len;        /* payload bytes copied (message length up to KSPAN_DNS_PAYLOAD) */
	__u64 ts_ns;      /* CLOCK_MONOTONIC: send or receive syscall */
	__u64 sock_id;    /* pairs a response with its query */
	__u16 family;     /* of the server address */
	__u16 server_port;
	__u16 pad0[2];
	__u8 server[16];  /* the DNS server (destination of a query, source of a response) */
	char comm[KSPAN_COMM_LEN];
	__u8 payload[KSPAN_DNS_PAYLOAD];
};

enum kspan_dns_stat {
	KSPAN_DNS_STAT_QUERY_EMITTED = 0,
	KSPAN_DNS_STAT_RESPONSE_EMITTED,
	KSPAN_DNS_STAT_RING_FULL,
	KSPAN_DNS_STAT_MAX,
};

#endif /* KSPAN_BPF_DNS_H */
