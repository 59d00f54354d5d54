/* Definitions shared by every kspan BPF program family and by userspace.
 *
 * Included from both sides: fixed-width __u8/__u16/__u32/__u64 fields only, no
 * pointers, explicit padding, so the layout is the same for clang -target bpf
 * and for the C++ compiler (userspace static_asserts sizes and offsets).
 */
#ifndef KSPAN_BPF_COMMON_H
#define KSPAN_BPF_COMMON_H

#ifndef __KSPAN_BPF__
#include <linux/types.h>
#endif

#define KSPAN_COMM_LEN 16

/* The first field of every ring-buffer record: which struct follows. */
enum kspan_event_type {
	KSPAN_EVENT_TCP_CONNECT = 1,    /* bpf/tcp.h */
	KSPAN_EVENT_TCP_ACCEPT = 2,     /* bpf/tcp.h */
	KSPAN_EVENT_TCP_CONN = 3,       /* bpf/tcp.h: connection lifetime */
	KSPAN_EVENT_TCP_CONN_EVENT = 4, /* bpf/tcp.h: retransmit, reset */
	KSPAN_EVENT_SYSCALL = 10,       /* bpf/syscalls.h */
	KSPAN_EVENT_DNS = 20,           /* bpf/dns.h */
	KSPAN_EVENT_HTTP = 30,          /* bpf/http.h */
};

#endif /* KSPAN_BPF_COMMON_H */
