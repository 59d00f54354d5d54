/* TCP program family: the records bpf/tcp.bpf.c writes to its ring buffer and
 * the indices of its stats map. Shared with userspace (userspace/event_decoder).
 */
#ifndef KSPAN_BPF_TCP_H
#define KSPAN_BPF_TCP_H

#include "bpf/kspan_common.h"

/* Endpoints of a connection as the owning side sees them. */
struct kspan_tcp_endpoints {
	__u16 family;   /* AF_INET or AF_INET6 */
	__u16 sport;    /* local port, host byte order */
	__u16 dport;    /* peer port, host byte order */
	__u16 pad0;
	__u8 saddr[16]; /* local; IPv4 in the first 4 bytes */
	__u8 daddr[16]; /* peer */
};

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

/* One accepted connection: handshake completed (child socket ESTABLISHED,
 * queued on the listener) until accept() handed it to the process. */
struct kspan_tcp_accept_event {
	__u32 type;           /* KSPAN_EVENT_TCP_ACCEPT */
	__u32 pid;            /* the accepting process */
	__u32 tid;
	__u32 handshake_rtt_us; /* SYN-ACK to ACK, from srtt: SYN arrived this long before queued_ns */
	__u64 queued_ns;      /* CLOCK_MONOTONIC: handshake completed */
	__u64 accepted_ns;    /* CLOCK_MONOTONIC: accept() returned */
	struct kspan_tcp_endpoints ep;
	char comm[KSPAN_COMM_LEN];
};

enum kspan_tcp_direction {
	KSPAN_TCP_DIR_UNKNOWN = 0,
	KSPAN_TCP_DIR_OUT = 1, /* this host connected */
	KSPAN_TCP_DIR_IN = 2,  /* this host accepted */
};

enum kspan_tcp_closer {
	KSPAN_TCP_CLOSED_UNKNOWN = 0,
	KSPAN_TCP_CLOSED_LOCAL = 1, /* this side sent FIN first */
	KSPAN_TCP_CLOSED_PEER = 2,  /* the peer sent FIN first */
	KSPAN_TCP_CLOSED_RESET = 3, /* aborted: reset sent or received */
};

/* One connection's lifetime: ESTABLISHED until CLOSE, with its counters. */
struct kspan_tcp_conn_event {
	__u32 type;          /* KSPAN_EVENT_TCP_CONN */
	__u32 pid;           /* owner: the connecting or accepting process (0: never accepted) */
	__u32 tid;
	__u8 direction;      /* enum kspan_tcp_direction */
	__u8 closed_by;      /* enum kspan_tcp_closer */
	__u16 pad0;
	__u64 sock_id;       /* joins kspan_tcp_note records to this connection */
	__u64 start_ns;      /* CLOCK_MONOTONIC at ESTABLISHED */
	__u64 end_ns;        /* CLOCK_MONOTONIC at CLOSE */
	__u64 bytes_sent;    /* tcp_sock.bytes_sent (retransmissions included) */
	__u64 bytes_received;
	__u32 segs_out;
	__u32 segs_in;
	__u32 total_retrans;
	__u32 srtt_us;       /* smoothed RTT at close */
	struct kspan_tcp_endpoints ep;
	char comm[KSPAN_COMM_LEN];
};

enum kspan_tcp_note_kind {
	KSPAN_TCP_NOTE_RETRANSMIT = 1,
	KSPAN_TCP_NOTE_RESET_SENT = 2,
	KSPAN_TCP_NOTE_RESET_RECEIVED = 3,
};

/* Something that happened to a tracked connection; userspace attaches it as
 * a span event to that connection's lifetime span. */
struct kspan_tcp_note {
	__u32 type;    /* KSPAN_EVENT_TCP_CONN_EVENT */
	__u32 kind;    /* enum kspan_tcp_note_kind */
	__u64 sock_id;
	__u64 ts_ns;
	__u32 state;   /* TCP state when it happened */
	__u32 pad0;
};

/* Who connected to kspan's OTLP receiver: map kspan_rcv_peers, written when
 * a connection to a port in kspan_rcv_ports completes its handshake and
 * read by the receiver when a request arrives (userspace/tcp_capture,
 * LookupReceiverPeer). Entries are never removed; the LRU map evicts the
 * oldest, and a 4-tuple used again overwrites its entry. */
struct kspan_rcv_peer_key {
	__u16 family;   /* AF_INET (also for v4-mapped IPv6) or AF_INET6 */
	__u16 sport;    /* the client's port, host byte order */
	__u16 dport;    /* the receiver's port, host byte order */
	__u16 pad;
	__u8 saddr[16]; /* the client's address as the receiver sees it; IPv4 in
			 * the first 4 bytes, the rest zero */
};

struct kspan_rcv_peer {
	__u32 pid;   /* tgid (host pid namespace) of the thread that called connect() */
	__u32 tid;
	__u32 netns; /* inode number of the client socket's network namespace */
	__u32 pad;
	__u64 established_ns; /* CLOCK_MONOTONIC: handshake completed */
};

#define KSPAN_RCV_MAX_PORTS 16

/* Per-CPU counters of the TCP family (map kspan_tcp_stats), summed by userspace. */
enum kspan_tcp_stat {
	KSPAN_TCP_STAT_CONNECT_EMITTED = 0,   /* connect records submitted to the ring */
	KSPAN_TCP_STAT_RING_FULL,             /* bpf_ringbuf_reserve failed: record lost */
	KSPAN_TCP_STAT_START_TABLE_FULL,      /* SYN_SENT not remembered: attempt lost */
	KSPAN_TCP_STAT_ACCEPT_EMITTED,        /* accept records submitted */
	KSPAN_TCP_STAT_CONN_EMITTED,          /* connection lifetime records submitted */
	KSPAN_TCP_STAT_NOTE_EMITTED,          /* retransmit/reset notes submitted */
	KSPAN_TCP_STAT_CONN_TABLE_FULL,       /* connection not tracked: lifetime lost */
	KSPAN_TCP_STAT_MAX,
};

#endif /* KSPAN_BPF_TCP_H */
