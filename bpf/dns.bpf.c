// SPDX-License-Identifier: GPL-2.0
/* DNS program family: UDP messages to or from port 53, from the socket
 * syscalls that glibc, musl and c-ares resolvers use (sendto, sendmsg,
 * sendmmsg; recvfrom, recvmsg, read). Two variants, chosen by the loader
 * (userspace/dns_capture):
 *
 *   tp_btf      the socket layer's sock:sock_send_length/sock_recv_length
 *               (6.3+), after the data moved, with the syscall's arguments
 *               from the task's pt_regs: only socket I/O runs them, and it
 *               leaves at the first field that is not UDP;
 *   tracepoint  the classic syscalls:sys_enter_sendto and friends, on every
 *               supported kernel. The kernel implements those with a probe
 *               on the raw syscall tracepoints, so while they are attached
 *               every syscall of every process takes the syscall tracing
 *               path (some 200 ns a syscall on the benchmark VM): only where
 *               the kernel has nothing else.
 *
 * Responses are only looked for in processes that sent a query recently, so
 * every other process pays one hash lookup per recv.
 */
#include "bpf/kspan_core.bpf.h"
#include "bpf/dns.h"
#include "bpf/fd.bpf.h"
#include "bpf/filter.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define DNS_PORT 53

/* Processes with a DNS query in flight: tgid -> time of the last query. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} kspan_dns_pend SEC(".maps");

struct recv_args {
	__u64 sk;
	__u64 buf;      /* recvfrom: the buffer; recvmsg: the user_msghdr */
	__u64 addr;     /* recvfrom: the source address buffer */
	__u32 is_msg;
	__u32 pad;
};

/* recv syscalls in flight per thread, between enter and exit. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct recv_args);
} kspan_dns_recv SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} kspan_dns_ring SEC(".maps");

/* tp_btf: the sendmmsg message a thread sends next, as the socket layer
 * reports one message at a time (glibc sends A and AAAA in one call). */
struct mmsg_pos {
	__u64 vec; /* the call's struct mmsghdr array */
	__u32 next;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct mmsg_pos);
} kspan_dns_mmsg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KSPAN_DNS_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_dns_stats SEC(".maps");

struct endpoint {
	__u16 family;
	__u16 port;
	__u8 addr[16];
};

/* The UDP socket behind fd, or NULL. */
static __always_inline struct sock *udp_sock(long fd)
{
	struct sock *sk = kspan_file_sock(kspan_fd_file(fd));
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return NULL;
	return sk;
}

/* The peer of a socket: from a user sockaddr when given, else the
 * connected peer. */
static __always_inline void peer_of(struct sock *sk, const void *uaddr, struct endpoint *ep)
{
	__builtin_memset(ep, 0, sizeof(*ep));
	if (uaddr) {
		struct sockaddr_in6 sa = {};
		bpf_probe_read_user(&sa, sizeof(sa), uaddr);
		ep->family = sa.sin6_family;
		ep->port = bpf_ntohs(sa.sin6_port);
		if (ep->family == AF_INET6)
			__builtin_memcpy(ep->addr, &sa.sin6_addr, 16);
		else
			__builtin_memcpy(ep->addr, &((struct sockaddr_in *)&sa)->sin_addr, 4);
		return;
	}
	ep->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	ep->port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (ep->family == AF_INET6)
		BPF_CORE_READ_INTO(&ep->addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	else
		BPF_CORE_READ_INTO((__u32 *)ep->addr, sk, __sk_common.skc_daddr);
}

static __always_inline void emit(struct sock *sk, struct endpoint *ep, const void *buf, __u64 len,
				 __u16 direction)
{
	struct kspan_dns_event *e = bpf_ringbuf_reserve(&kspan_dns_ring, sizeof(*e), 0);
	if (!e) {
		kspan_count(&kspan_dns_stats, KSPAN_DNS_STAT_RING_FULL);
		return;
	}
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	e->type = KSPAN_EVENT_DNS;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->direction = direction;
	e->ts_ns = bpf_ktime_get_ns();
	e->sock_id = (__u64)sk;
	e->family = ep->family;
	e->server_port = ep->port;
	e->pad0[0] = 0;
	e->pad0[1] = 0;
	__builtin_memcpy(e->server, ep->addr, sizeof(e->server));
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	__u32 n = len > KSPAN_DNS_PAYLOAD ? KSPAN_DNS_PAYLOAD : (__u32)len;
	e->len = n;
	if (bpf_probe_read_user(e->payload, n & (2 * KSPAN_DNS_PAYLOAD - 1), buf))
		e->len = 0;
	bpf_ringbuf_submit(e, 0);
	kspan_count(&kspan_dns_stats, direction == KSPAN_DNS_QUERY ? KSPAN_DNS_STAT_QUERY_EMITTED
								   : KSPAN_DNS_STAT_RESPONSE_EMITTED);
}

static __always_inline void on_send(long fd, const void *buf, __u64 len, const void *uaddr)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (kspan_pid_denied(tgid) || len < 12)
		return;
	struct sock *sk = udp_sock(fd);
	if (!sk)
		return;
	struct endpoint ep;
	peer_of(sk, uaddr, &ep);
	if (ep.port != DNS_PORT)
		return;
	__u64 now = bpf_ktime_get_ns();
	bpf_map_update_elem(&kspan_dns_pend, &tgid, &now, BPF_ANY);
	emit(sk, &ep, buf, len, KSPAN_DNS_QUERY);
}

/* The first iovec of a user msghdr, and its destination address. */
static __always_inline void send_msghdr(long fd, const struct user_msghdr *umsg)
{
	struct user_msghdr msg = {};
	if (bpf_probe_read_user(&msg, sizeof(msg), umsg) || !msg.msg_iov || msg.msg_iovlen < 1)
		return;
	struct iovec iov = {};
	if (bpf_probe_read_user(&iov, sizeof(iov), msg.msg_iov))
		return;
	on_send(fd, iov.iov_base, iov.iov_len, msg.msg_name);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int kspan_dns_sendto(struct kspan_sys_enter_args *ctx)
{
	on_send(ctx->args[0], (const void *)ctx->args[1], ctx->args[2], (const void *)ctx->args[4]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int kspan_dns_sendmsg(struct kspan_sys_enter_args *ctx)
{
	send_msghdr(ctx->args[0], (const struct user_msghdr *)ctx->args[1]);
	return 0;
}

/* glibc sends the A and AAAA queries in one sendmmsg. */
SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int kspan_dns_sendmm(struct kspan_sys_enter_args *ctx)
{
	const struct mmsghdr *vec = (const struct mmsghdr *)ctx->args[1];
	unsigned long vlen = ctx->args[2];
	for (int i = 0; i < 2; i++) {
		if ((unsigned long)i >= vlen)
			break;
		send_msghdr(ctx->args[0], &vec[i].msg_hdr);
	}
	return 0;
}

static __always_inline void on_recv_enter(long fd, __u64 buf, __u64 addr, __u32 is_msg)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (!bpf_map_lookup_elem(&kspan_dns_pend, &tgid))
		return; /* no query in flight: the common case, one lookup */
	struct sock *sk = udp_sock(fd);
	if (!sk)
		return;
	struct recv_args a = {.sk = (__u64)sk, .buf = buf, .addr = addr, .is_msg = is_msg};
	__u32 tid = (__u32)pid_tgid;
	bpf_map_update_elem(&kspan_dns_recv, &tid, &a, BPF_ANY);
}

static __always_inline void on_recv_exit(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct recv_args *a = bpf_map_lookup_elem(&kspan_dns_recv, &tid);
	if (!a)
		return;
	struct recv_args args = *a;
	bpf_map_delete_elem(&kspan_dns_recv, &tid);
	if (ret < 12)
		return;
	const void *buf = (const void *)args.buf;
	const void *uaddr = (const void *)args.addr;
	if (args.is_msg) {
		struct user_msghdr msg = {};
		if (bpf_probe_read_user(&msg, sizeof(msg), (const void *)args.buf) || !msg.msg_iov)
			return;
		struct iovec iov = {};
		if (bpf_probe_read_user(&iov, sizeof(iov), msg.msg_iov))
			return;
		buf = iov.iov_base;
		uaddr = msg.msg_name;
	}
	struct sock *sk = (struct sock *)args.sk;
	struct endpoint ep;
	peer_of(sk, uaddr, &ep);
	/* Port 0: an unconnected socket read without asking for the source.
	 * Userspace keeps it only if it answers a query sent on this socket. */
	if (ep.port != DNS_PORT && ep.port != 0)
		return;
	emit(sk, &ep, buf, ret, KSPAN_DNS_RESPONSE);
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int kspan_dns_recvfrom(struct kspan_sys_enter_args *ctx)
{
	on_recv_enter(ctx->args[0], ctx->args[1], ctx->args[4], 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int kspan_dns_recvfrom_x(struct kspan_sys_exit_args *ctx)
{
	on_recv_exit(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int kspan_dns_recvmsg(struct kspan_sys_enter_args *ctx)
{
	on_recv_enter(ctx->args[0], ctx->args[1], 0, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int kspan_dns_recvmsg_x(struct kspan_sys_exit_args *ctx)
{
	on_recv_exit(ctx->ret);
	return 0;
}

/* ---- variant tp_btf: the socket layer's data tracepoints (6.3+) ---- */

#define MSG_PEEK_FLAG 2
#define TS_COMPAT 0x0002 /* x86 thread_info.status: an ia32 syscall is running */
#define NR_READ 0
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_SENDMMSG 307

/* The current thread's syscall registers when it is a 64-bit syscall on a
 * UDP socket, else NULL. */
static __always_inline struct pt_regs *udp_syscall_regs(struct sock *sk)
{
	if (!sk || sk->sk_protocol != IPPROTO_UDP)
		return NULL;
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->thread_info.status & TS_COMPAT)
		return NULL;
	return (struct pt_regs *)bpf_task_pt_regs(task);
}

/* The message of this sendmmsg call that the socket layer reports now:
 * the first for a new call, then the next ones. */
static __always_inline const struct user_msghdr *mmsg_next(__u64 vec, __u64 vlen)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct mmsg_pos *p = bpf_map_lookup_elem(&kspan_dns_mmsg, &tid);
	__u32 i = 0;
	if (p && p->vec == vec && p->next < vlen)
		i = p->next;
	struct mmsg_pos next = {.vec = vec, .next = i + 1};
	bpf_map_update_elem(&kspan_dns_mmsg, &tid, &next, BPF_ANY);
	if (i >= 2) /* as the tracepoint variant: A and AAAA */
		return NULL;
	return &((const struct mmsghdr *)vec)[i].msg_hdr;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(kspan_dns_sk_tx, struct sock *sk, int ret, int flags)
{
	if (ret < 12)
		return 0;
	struct pt_regs *regs = udp_syscall_regs(sk);
	if (!regs)
		return 0;
	const struct user_msghdr *umsg = NULL;
	switch (regs->orig_ax) {
	case NR_SENDTO: {
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		if (kspan_pid_denied(tgid))
			return 0;
		struct endpoint ep;
		peer_of(sk, (const void *)regs->r8, &ep);
		if (ep.port != DNS_PORT)
			return 0;
		__u64 now = bpf_ktime_get_ns();
		bpf_map_update_elem(&kspan_dns_pend, &tgid, &now, BPF_ANY);
		emit(sk, &ep, (const void *)regs->si, ret, KSPAN_DNS_QUERY);
		return 0;
	}
	case NR_SENDMSG:
		umsg = (const struct user_msghdr *)regs->si;
		break;
	case NR_SENDMMSG: {
		/* Busy UDP senders (QUIC, media) use sendmmsg: a socket
		 * connected to another port leaves before the bookkeeping. */
		__u16 dport = sk->__sk_common.skc_dport;
		if (dport && dport != bpf_htons(DNS_PORT))
			return 0;
		umsg = mmsg_next(regs->si, regs->dx);
		break;
	}
	default:
		return 0;
	}
	if (!umsg)
		return 0;
	struct user_msghdr msg = {};
	if (bpf_probe_read_user(&msg, sizeof(msg), umsg) || !msg.msg_iov || msg.msg_iovlen < 1)
		return 0;
	struct iovec iov = {};
	if (bpf_probe_read_user(&iov, sizeof(iov), msg.msg_iov))
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (kspan_pid_denied(tgid))
		return 0;
	struct endpoint ep;
	peer_of(sk, msg.msg_name, &ep);
	if (ep.port != DNS_PORT)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	bpf_map_update_elem(&kspan_dns_pend, &tgid, &now, BPF_ANY);
	/* The bytes the socket took: the first iovec, up to the message. */
	__u64 len = iov.iov_len < (__u64)ret ? iov.iov_len : (__u64)ret;
	emit(sk, &ep, iov.iov_base, len, KSPAN_DNS_QUERY);
	return 0;
}

/* The source address is copied to the user after this tracepoint: the peer
 * is the connected one, or port 0 (userspace keeps such a response only if
 * it answers a query sent on the same socket). */
SEC("tp_btf/sock_recv_length")
int BPF_PROG(kspan_dns_sk_rx, struct sock *sk, int ret, int flags)
{
	if (ret < 12 || (flags & MSG_PEEK_FLAG))
		return 0;
	if (!sk || sk->sk_protocol != IPPROTO_UDP)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&kspan_dns_pend, &tgid))
		return 0; /* no query in flight: the common case */
	struct pt_regs *regs = udp_syscall_regs(sk);
	if (!regs)
		return 0;
	const void *buf = NULL;
	switch (regs->orig_ax) {
	case NR_RECVFROM:
	case NR_READ:
		buf = (const void *)regs->si;
		break;
	case NR_RECVMSG: {
		struct user_msghdr msg = {};
		if (bpf_probe_read_user(&msg, sizeof(msg), (const void *)regs->si) || !msg.msg_iov)
			return 0;
		struct iovec iov = {};
		if (bpf_probe_read_user(&iov, sizeof(iov), msg.msg_iov))
			return 0;
		buf = iov.iov_base;
		break;
	}
	default:
		return 0;
	}
	struct endpoint ep;
	peer_of(sk, NULL, &ep);
	if (ep.port != DNS_PORT && ep.port != 0)
		return 0;
	emit(sk, &ep, buf, ret, KSPAN_DNS_RESPONSE);
	return 0;
}
