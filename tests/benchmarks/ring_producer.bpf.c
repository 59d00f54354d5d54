// SPDX-License-Identifier: GPL-2.0
/* Benchmark-only producer for the ring consumer benchmark: each getppid()
 * of the benchmark process writes `batch` TCP connect records into a ring,
 * so the consumer side can be measured alone on a full ring. */
#include "bpf/kspan_core.bpf.h"
#include "bpf/tcp.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 target_tgid = 0;
const volatile __u32 batch = 512;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* resized by the benchmark */
} bench_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bench_lost SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int kspan_bench_fill(void *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	for (__u32 i = 0; i < 4096 && i < batch; i++) {
		struct kspan_tcp_connect_event *e =
			bpf_ringbuf_reserve(&bench_ring, sizeof(*e), 0);
		if (!e) {
			__u32 zero = 0;
			__u64 *lost = bpf_map_lookup_elem(&bench_lost, &zero);
			if (lost)
				*lost += 1;
			return 0;
		}
		__builtin_memset(e, 0, sizeof(*e));
		e->type = KSPAN_EVENT_TCP_CONNECT;
		e->pid = target_tgid;
		e->start_ns = i;
		e->end_ns = i + 1000;
		e->family = AF_INET;
		e->dport = 443;
		e->established = 1;
		bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	}
	return 0;
}
