// SPDX-License-Identifier: GPL-2.0
/* TCP program family.
 *
 * - connect: SYN_SENT (in the connecting thread, so pid/tid are right) until
 *   ESTABLISHED or CLOSE (often in softirq, so the owner is remembered).
 * - accept: child socket ESTABLISHED (queued on the listener) until accept()
 *   returns it; the accepting thread becomes the connection's owner.
 * - connection lifetime: ESTABLISHED until CLOSE with tcp_sock counters and
 *   which side closed first; retransmissions and resets as notes.
 *
 * - receiver peers: who connected to kspan's own OTLP receiver (any process
 *   not denied, traced or not), for the receiver to look up per request.
 *
 * The state-change handler exists in three variants, chosen by the loader:
 * tp_btf (typed arguments, cheapest), raw_tp, and the classic tracepoint
 * sock:inet_sock_set_state (works everywhere). The same holds for the notes.
 */
#include "bpf/kspan_core.bpf.h"
#include "bpf/fd.bpf.h"
#include "bpf/filter.bpf.h"
#include "bpf/tcp.h"

char LICENSE[] SEC("license") = "GPL";

#define KSPAN_RCV_SHUTDOWN 1 /* include/net/sock.h */

/* Set by the loader between open and load. */
const volatile __u64 wakeup_bytes = 0;  /* see kspan_wakeup_flag() */
/* 0: every process not denied (the default); 1: only selected processes
 * (kspan_trace_level() == KSPAN_TRACE_FULL), for busy hosts. */
const volatile __u8 selected_only = 0;
/* kspan's own network namespace (inode number of /proc/self/ns/net). */
const volatile __u32 kspan_netns = 0;

/* Entries in kspan_rcv_ports, kept by the loader (TcpCapture), so that while
 * there are none a connect does not look the port up. */
__u32 kspan_rcv_port_count = 0;

static __always_inline bool tcp_traced(__u32 tgid)
{
	if (selected_only)
		return kspan_trace_level(tgid) == KSPAN_TRACE_FULL;
	return !kspan_pid_denied(tgid);
}

struct connect_start {
	__u64 start_ns;
	__u32 pid;
	__u32 tid;
	char comm[KSPAN_COMM_LEN]; /* only when traced */
	__u8 traced;   /* the filter traces the process: connect span, lifetime */
	__u8 receiver; /* to a kspan receiver port: remember the peer */
	__u8 pad[6];
};

/* Attempts in SYN_SENT, keyed by socket address. Every socket leaves SYN_SENT
 * through this same tracepoint (to ESTABLISHED or CLOSE), so entries do not
 * leak; a full table is counted, not silent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct connect_start);
} kspan_connects SEC(".maps");

struct conn_state {
	__u64 start_ns;
	__u32 pid; /* 0 until an incoming connection is accepted */
	__u32 tid;
	__u32 handshake_rtt_us;
	__u8 direction;
	__u8 closed_by;
	__u16 pad;
	char comm[KSPAN_COMM_LEN];
};

/* Established connections kspan follows, keyed by socket address; removed at
 * CLOSE, which every established socket reaches. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn_state);
} kspan_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024); /* resized by the loader */
} kspan_tcp_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KSPAN_TCP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_tcp_stats SEC(".maps");

/* kspan's OTLP receiver ports (host byte order), set by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KSPAN_RCV_MAX_PORTS);
	__type(key, __u16);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_rcv_ports SEC(".maps");

/* Owners of the client ends of connections to those ports, by 4-tuple as
 * the receiver sees it (bpf/tcp.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct kspan_rcv_peer_key);
	__type(value, struct kspan_rcv_peer);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_rcv_peers SEC(".maps");

static __always_inline void read_endpoints(struct sock *sk, struct kspan_tcp_endpoints *ep)
{
	ep->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	/* inet_sport, not skc_num: tcp_set_state(TCP_CLOSE) releases the
	 * port (skc_num = 0) before the tracepoint fires. */
	ep->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	ep->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	ep->pad0 = 0;
	__builtin_memset(ep->saddr, 0, sizeof(ep->saddr));
	__builtin_memset(ep->daddr, 0, sizeof(ep->daddr));
	if (ep->family == AF_INET6) {
		BPF_CORE_READ_INTO(&ep->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&ep->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)ep->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)ep->daddr, sk, __sk_common.skc_daddr);
	}
}

static __always_inline void *reserve(__u32 size)
{
	void *e = bpf_ringbuf_reserve(&kspan_tcp_ring, size, 0);
	if (!e)
		kspan_count(&kspan_tcp_stats, KSPAN_TCP_STAT_RING_FULL);
	return e;
}

static __always_inline void submit(void *e, __u32 stat)
{
	bpf_ringbuf_submit(e, kspan_wakeup_flag(&kspan_tcp_ring, wakeup_bytes));
	kspan_count(&kspan_tcp_stats, stat);
}

static __always_inline void emit_connect(struct sock *sk, struct connect_start *start,
					 int newstate)
{
	struct kspan_tcp_connect_event *e = reserve(sizeof(*e));
	if (!e)
		return;
	struct kspan_tcp_endpoints ep;
	read_endpoints(sk, &ep);
	e->type = KSPAN_EVENT_TCP_CONNECT;
	e->pid = start->pid;
	e->tid = start->tid;
	e->start_ns = start->start_ns;
	e->end_ns = bpf_ktime_get_ns();
	__builtin_memcpy(e->comm, start->comm, sizeof(e->comm));
	e->family = ep.family;
	e->sport = ep.sport;
	e->dport = ep.dport;
	__builtin_memcpy(e->saddr, ep.saddr, sizeof(e->saddr));
	__builtin_memcpy(e->daddr, ep.daddr, sizeof(e->daddr));
	e->established = newstate == TCP_ESTABLISHED;
	e->pad0 = 0;
	/* tcp_reset()/tcp_write_err() set sk_err before moving to CLOSE:
	 * ECONNREFUSED for a RST, ETIMEDOUT after the SYN retries; 0 when the
	 * application closed the socket first. */
	e->error = e->established ? 0 : BPF_CORE_READ(sk, sk_err);
	submit(e, KSPAN_TCP_STAT_CONNECT_EMITTED);
}

static __always_inline void emit_conn(struct sock *sk, struct conn_state *c)
{
	struct kspan_tcp_conn_event *e = reserve(sizeof(*e));
	if (!e)
		return;
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	e->type = KSPAN_EVENT_TCP_CONN;
	e->pid = c->pid;
	e->tid = c->tid;
	e->direction = c->direction;
	e->closed_by = c->closed_by;
	e->pad0 = 0;
	e->sock_id = (__u64)sk;
	e->start_ns = c->start_ns;
	e->end_ns = bpf_ktime_get_ns();
	e->bytes_sent = BPF_CORE_READ(tp, bytes_sent);
	/* bytes_received follows rcv_nxt, which the peer's FIN advances by
	 * one; report payload only. tcp_fin() sets RCV_SHUTDOWN before the
	 * close, tcp_done() only after this tracepoint. (Bitfield-safe read:
	 * sk_shutdown is a bitfield on some kernels.) */
	__u64 received = BPF_CORE_READ(tp, bytes_received);
	if ((BPF_CORE_READ_BITFIELD_PROBED(sk, sk_shutdown) & KSPAN_RCV_SHUTDOWN) && received > 0)
		received--;
	e->bytes_received = received;
	e->segs_out = BPF_CORE_READ(tp, segs_out);
	e->segs_in = BPF_CORE_READ(tp, segs_in);
	e->total_retrans = BPF_CORE_READ(tp, total_retrans);
	e->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	read_endpoints(sk, &e->ep);
	__builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
	submit(e, KSPAN_TCP_STAT_CONN_EMITTED);
}

/* At SYN_SENT the destination port is set (tcp_v4_connect/tcp_v6_connect
 * store it before the state change); the source port may still be 0. */
static __always_inline bool to_receiver_port(struct sock *sk)
{
	if (!kspan_rcv_port_count)
		return false;
	__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	return bpf_map_lookup_elem(&kspan_rcv_ports, &dport) != NULL;
}

/* The handshake of a connection to a receiver port completed: remember who
 * connected, under the 4-tuple the receiver will see. */
static __always_inline void remember_receiver_peer(struct sock *sk, struct connect_start *start)
{
	struct kspan_rcv_peer_key k = {};
	__u32 *a = (__u32 *)k.saddr;
	k.family = BPF_CORE_READ(sk, __sk_common.skc_family);
	k.sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	k.dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (k.family == AF_INET6) {
		BPF_CORE_READ_INTO(&k.saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		if (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff)) {
			/* v4-mapped: an IPv4 connection, whose peer an IPv4
			 * listener sees as plain IPv4. */
			k.family = AF_INET;
			a[0] = a[3];
			a[2] = 0;
			a[3] = 0;
		}
	} else {
		BPF_CORE_READ_INTO(a, sk, __sk_common.skc_rcv_saddr);
	}
	/* A kernel without CONFIG_NET_NS has one namespace, kspan's. */
	__u32 netns = kspan_netns;
	if (bpf_core_field_exists(sk->__sk_common.skc_net.net))
		netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (netns != kspan_netns) {
		/* Loopback in another namespace never reaches kspan's receiver;
		 * recording it would let a collector in a pod, on the same port
		 * number, overwrite a host client's entry with the same tuple. */
		bool loopback = k.family == AF_INET ? k.saddr[0] == 127
						    : (a[0] | a[1] | a[2]) == 0 && a[3] == bpf_htonl(1);
		if (loopback)
			return;
	}
	struct kspan_rcv_peer v = {
		.pid = start->pid,
		.tid = start->tid,
		.netns = netns,
		.established_ns = bpf_ktime_get_ns(),
	};
	bpf_map_update_elem(&kspan_rcv_peers, &k, &v, BPF_ANY);
}

static __always_inline void track_conn(__u64 key, struct conn_state *c)
{
	if (bpf_map_update_elem(&kspan_conns, &key, c, BPF_ANY))
		kspan_count(&kspan_tcp_stats, KSPAN_TCP_STAT_CONN_TABLE_FULL);
}

static __always_inline int on_state(struct sock *sk, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;

	if (newstate == TCP_SYN_SENT) {
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		__u32 tgid = pid_tgid >> 32;
		bool traced = tcp_traced(tgid);
		/* The receiver needs the sender of every connection, also from
		 * processes tcp.selected_only leaves out; never denied ones or
		 * kspan itself (traced implies not denied). */
		bool receiver = to_receiver_port(sk) && (traced || !kspan_pid_denied(tgid));
		if (!traced && !receiver)
			return 0;
		struct connect_start start = {
			.start_ns = bpf_ktime_get_ns(),
			.pid = tgid,
			.tid = (__u32)pid_tgid,
			.traced = traced,
			.receiver = receiver,
		};
		if (traced)
			bpf_get_current_comm(&start.comm, sizeof(start.comm));
		if (bpf_map_update_elem(&kspan_connects, &key, &start, BPF_ANY))
			kspan_count(&kspan_tcp_stats, KSPAN_TCP_STAT_START_TABLE_FULL);
		return 0;
	}

	if (oldstate == TCP_SYN_SENT) {
		struct connect_start *start = bpf_map_lookup_elem(&kspan_connects, &key);
		if (!start)
			return 0; /* began before kspan attached, or not traced */
		if (start->traced) {
			emit_connect(sk, start, newstate);
			if (newstate == TCP_ESTABLISHED) {
				struct conn_state c = {
					.start_ns = bpf_ktime_get_ns(),
					.pid = start->pid,
					.tid = start->tid,
					.direction = KSPAN_TCP_DIR_OUT,
				};
				__builtin_memcpy(c.comm, start->comm, sizeof(c.comm));
				track_conn(key, &c);
			}
		}
		/* Before the final ACK goes out (tcp_finish_connect() runs
		 * first), so before the receiver can accept the connection. */
		if (start->receiver && newstate == TCP_ESTABLISHED)
			remember_receiver_peer(sk, start);
		bpf_map_delete_elem(&kspan_connects, &key);
		return 0;
	}

	if (oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED) {
		/* A passive open completed in softirq: the owner is whoever
		 * accepts it (kspan_tcp_acc*). */
		struct conn_state c = {
			.start_ns = bpf_ktime_get_ns(),
			.direction = KSPAN_TCP_DIR_IN,
			.handshake_rtt_us = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3,
		};
		track_conn(key, &c);
		return 0;
	}

	struct conn_state *c = bpf_map_lookup_elem(&kspan_conns, &key);
	if (!c)
		return 0;
	if (oldstate == TCP_ESTABLISHED) {
		if (newstate == TCP_FIN_WAIT1)
			c->closed_by = KSPAN_TCP_CLOSED_LOCAL;
		else if (newstate == TCP_CLOSE_WAIT)
			c->closed_by = KSPAN_TCP_CLOSED_PEER;
		else if (newstate == TCP_CLOSE)
			c->closed_by = KSPAN_TCP_CLOSED_RESET;
	}
	if (newstate == TCP_CLOSE) {
		/* An incoming connection nobody accepted has no owner: its
		 * lifetime is still reported (pid 0), as the host saw it. */
		emit_conn(sk, c);
		bpf_map_delete_elem(&kspan_conns, &key);
	}
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(kspan_tcp_btf, struct sock *sk, int oldstate, int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	return on_state(sk, oldstate, newstate);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(kspan_tcp_raw, struct sock *sk, int oldstate, int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	return on_state(sk, oldstate, newstate);
}

SEC("tracepoint/sock/inet_sock_set_state")
int kspan_tcp_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	/* Read the fields once, up front: the verifier refuses loads through a
	 * ctx pointer the compiler has offset. */
	int protocol = ctx->protocol;
	int oldstate = ctx->oldstate;
	int newstate = ctx->newstate;
	struct sock *sk = (struct sock *)ctx->skaddr;
	if (protocol != IPPROTO_TCP)
		return 0;
	return on_state(sk, oldstate, newstate);
}

/* The current thread accepted `sk`: it owns the connection; report how
 * long the connection waited in the accept queue. */
static __always_inline int accepted(struct sock *sk)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	__u64 key = (__u64)sk;
	struct conn_state *c = bpf_map_lookup_elem(&kspan_conns, &key);
	if (!c || c->direction != KSPAN_TCP_DIR_IN || c->pid != 0)
		return 0;
	if (!tcp_traced(tgid)) {
		bpf_map_delete_elem(&kspan_conns, &key);
		return 0;
	}
	c->pid = tgid;
	c->tid = (__u32)pid_tgid;
	bpf_get_current_comm(&c->comm, sizeof(c->comm));

	struct kspan_tcp_accept_event *e = reserve(sizeof(*e));
	if (!e)
		return 0;
	e->type = KSPAN_EVENT_TCP_ACCEPT;
	e->pid = c->pid;
	e->tid = c->tid;
	e->handshake_rtt_us = c->handshake_rtt_us;
	e->queued_ns = c->start_ns;
	e->accepted_ns = bpf_ktime_get_ns();
	read_endpoints(sk, &e->ep);
	__builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
	submit(e, KSPAN_TCP_STAT_ACCEPT_EMITTED);
	return 0;
}

/* Accept, fexit variant (where the kernel allows tracing programs): the
 * accepted socket is inet_csk_accept()'s return value, no fd table walk.
 * Its parameters changed in 6.10; the loader picks the program whose
 * arity matches the kernel's BTF. */
SEC("fexit/inet_csk_accept")
int BPF_PROG(kspan_acc_fx4, struct sock *sk, int flags, int *err, bool kern, struct sock *newsk)
{
	return newsk ? accepted(newsk) : 0;
}

SEC("fexit/inet_csk_accept")
int BPF_PROG(kspan_acc_fx2, struct sock *sk, void *arg, struct sock *newsk)
{
	return newsk ? accepted(newsk) : 0;
}

/* Accept, syscall tracepoint variant (everywhere): accept()/accept4()
 * returned fd `ret`; find its socket through the fd table. */
static __always_inline int on_accept(long ret)
{
	if (ret < 0)
		return 0;
	struct sock *sk = kspan_file_sock(kspan_fd_file(ret));
	return sk ? accepted(sk) : 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int kspan_tcp_acc4(struct kspan_sys_exit_args *ctx)
{
	return on_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int kspan_tcp_acc(struct kspan_sys_exit_args *ctx)
{
	return on_accept(ctx->ret);
}

/* Accept, socket data variant (6.3+, where fexit is refused): the thread
 * that first reads or writes an incoming connection not yet owned is the
 * one that accepted it. Runs for the socket I/O of every process, never for
 * other syscalls; a TCP socket costs one lookup of the connection table. The
 * accept span ends at that first data (for a server that waits for its
 * client to speak first, when the request arrives). */
static __always_inline int on_first_data(struct sock *sk)
{
	if (!sk || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	__u64 key = (__u64)sk;
	struct conn_state *c = bpf_map_lookup_elem(&kspan_conns, &key);
	if (!c || c->direction != KSPAN_TCP_DIR_IN || c->pid != 0)
		return 0;
	return accepted(sk);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(kspan_acc_rx, struct sock *sk, int ret, int flags)
{
	return on_first_data(sk);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(kspan_acc_tx, struct sock *sk, int ret, int flags)
{
	return on_first_data(sk);
}

static __always_inline int on_note(struct sock *sk, __u32 kind)
{
	__u64 key = (__u64)sk;
	struct conn_state *c = bpf_map_lookup_elem(&kspan_conns, &key);
	if (!c)
		return 0;
	struct kspan_tcp_note *n = reserve(sizeof(*n));
	if (!n)
		return 0;
	n->type = KSPAN_EVENT_TCP_CONN_EVENT;
	n->kind = kind;
	n->sock_id = key;
	n->ts_ns = bpf_ktime_get_ns();
	n->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	n->pad0 = 0;
	submit(n, KSPAN_TCP_STAT_NOTE_EMITTED);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(kspan_rtx_btf, struct sock *sk)
{
	return on_note(sk, KSPAN_TCP_NOTE_RETRANSMIT);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(kspan_rst_tx_btf, struct sock *sk)
{
	return sk ? on_note(sk, KSPAN_TCP_NOTE_RESET_SENT) : 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(kspan_rst_rx_btf, struct sock *sk)
{
	return on_note(sk, KSPAN_TCP_NOTE_RESET_RECEIVED);
}

SEC("raw_tp/tcp_retransmit_skb")
int BPF_PROG(kspan_rtx_raw, struct sock *sk)
{
	return on_note(sk, KSPAN_TCP_NOTE_RETRANSMIT);
}

SEC("raw_tp/tcp_send_reset")
int BPF_PROG(kspan_rst_tx_raw, struct sock *sk)
{
	return sk ? on_note(sk, KSPAN_TCP_NOTE_RESET_SENT) : 0;
}

SEC("raw_tp/tcp_receive_reset")
int BPF_PROG(kspan_rst_rx_raw, struct sock *sk)
{
	return on_note(sk, KSPAN_TCP_NOTE_RESET_RECEIVED);
}

/* Classic tcp:* records: skaddr follows skbaddr in tcp_retransmit_skb and
 * tcp_send_reset, and leads tcp_receive_reset, on every kernel since 4.16
 * (the layout is tracefs ABI that perf and bpftrace read too). */
struct kspan_tcp_skb_args {
	__u64 common;
	const void *skbaddr;
	const void *skaddr;
};

struct kspan_tcp_sk_args {
	__u64 common;
	const void *skaddr;
};

SEC("tracepoint/tcp/tcp_retransmit_skb")
int kspan_rtx(struct kspan_tcp_skb_args *ctx)
{
	return on_note((struct sock *)ctx->skaddr, KSPAN_TCP_NOTE_RETRANSMIT);
}

SEC("tracepoint/tcp/tcp_send_reset")
int kspan_rst_tx(struct kspan_tcp_skb_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	return sk ? on_note(sk, KSPAN_TCP_NOTE_RESET_SENT) : 0;
}

SEC("tracepoint/tcp/tcp_receive_reset")
int kspan_rst_rx(struct kspan_tcp_sk_args *ctx)
{
	return on_note((struct sock *)ctx->skaddr, KSPAN_TCP_NOTE_RESET_RECEIVED);
}
