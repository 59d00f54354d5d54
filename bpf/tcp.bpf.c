// SPDX-License-Identifier: GPL-2.0
/* TCP program family.
 *
 * kspan_tcp_state, on the stable sock:inet_sock_set_state tracepoint, turns
 * each outgoing TCP connection attempt into one record: SYN_SENT (in the
 * connecting thread, so pid/tid are right) until ESTABLISHED or CLOSE (often
 * in softirq, so the owner is remembered at SYN_SENT).
 */
#include "bpf/kspan_core.bpf.h"
#include "bpf/filter.bpf.h"
#include "bpf/tcp.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader between open and load. */
const volatile __u64 wakeup_bytes = 0;  /* see kspan_wakeup_flag() */

struct connect_start {
	__u64 start_ns;
	__u32 pid;
	__u32 tid;
	char comm[KSPAN_COMM_LEN];
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

SEC("tracepoint/sock/inet_sock_set_state")
int kspan_tcp_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;

	/* Read scalar fields once, up front: the verifier refuses loads through
	 * a ctx pointer the compiler has offset, which CO-RE-relocated
	 * accesses later in the function can produce. */
	int oldstate = ctx->oldstate;
	int newstate = ctx->newstate;
	__u64 sk = (__u64)ctx->skaddr;
	__u16 family = ctx->family;
	__u16 sport = ctx->sport;
	__u16 dport = ctx->dport;

	if (newstate == TCP_SYN_SENT) {
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		__u32 tgid = pid_tgid >> 32;
		if (kspan_pid_denied(tgid))
			return 0;
		struct connect_start start = {
			.start_ns = bpf_ktime_get_ns(),
			.pid = tgid,
			.tid = (__u32)pid_tgid,
		};
		bpf_get_current_comm(&start.comm, sizeof(start.comm));
		if (bpf_map_update_elem(&kspan_connects, &sk, &start, BPF_ANY))
			kspan_count(&kspan_tcp_stats, KSPAN_TCP_STAT_START_TABLE_FULL);
		return 0;
	}
	if (oldstate != TCP_SYN_SENT)
		return 0;

	struct connect_start *start = bpf_map_lookup_elem(&kspan_connects, &sk);
	if (!start)
		return 0; /* began before kspan attached, or not traced */

	struct kspan_tcp_connect_event *e =
		bpf_ringbuf_reserve(&kspan_tcp_ring, sizeof(*e), 0);
	if (!e) {
		kspan_count(&kspan_tcp_stats, KSPAN_TCP_STAT_RING_FULL);
		bpf_map_delete_elem(&kspan_connects, &sk);
		return 0;
	}
	e->type = KSPAN_EVENT_TCP_CONNECT;
	e->pid = start->pid;
	e->tid = start->tid;
	e->start_ns = start->start_ns;
	e->end_ns = bpf_ktime_get_ns();
	__builtin_memcpy(e->comm, start->comm, sizeof(e->comm));
	e->family = family;
	e->sport = sport;
	e->dport = dport;
	e->established = newstate == TCP_ESTABLISHED;
	e->pad0 = 0;
	e->error = 0;
	if (!e->established) {
		/* tcp_reset()/tcp_write_err() set sk_err before moving to CLOSE:
		 * ECONNREFUSED for a RST, ETIMEDOUT after the SYN retries; 0 when
		 * the application closed the socket first. */
		e->error = BPF_CORE_READ((struct sock *)ctx->skaddr, sk_err);
	}
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (family == AF_INET6) {
		bpf_probe_read_kernel(e->saddr, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(e->daddr, 16, ctx->daddr_v6);
	} else {
		bpf_probe_read_kernel(e->saddr, 4, ctx->saddr);
		bpf_probe_read_kernel(e->daddr, 4, ctx->daddr);
	}
	bpf_ringbuf_submit(e, kspan_wakeup_flag(&kspan_tcp_ring, wakeup_bytes));
	kspan_count(&kspan_tcp_stats, KSPAN_TCP_STAT_CONNECT_EMITTED);
	bpf_map_delete_elem(&kspan_connects, &sk);
	return 0;
}
