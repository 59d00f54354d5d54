// SPDX-License-Identifier: GPL-2.0
/* The floor for the syscall overhead benchmark: programs that do nothing, on
 * the same attach points as bpf/syscalls.bpf.c, one pair per variant. What
 * they cost is what any BPF program on raw_syscalls costs (the tracepoint
 * slow path of syscall entry/exit and two program invocations). */
#include "bpf/kspan_core.bpf.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sys_enter")
int BPF_PROG(floor_e_btf, struct pt_regs *regs, long id)
{
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(floor_x_btf, struct pt_regs *regs, long ret)
{
	return 0;
}

SEC("raw_tp/sys_enter")
int floor_e_raw(void *ctx)
{
	return 0;
}

SEC("raw_tp/sys_exit")
int floor_x_raw(void *ctx)
{
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int floor_e_tp(void *ctx)
{
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int floor_x_tp(void *ctx)
{
	return 0;
}

/* ---- the least a recording design costs (tp_btf only) ----
 * What any program pair that records a syscall must do at the least: a
 * clock read at enter kept for the exit, and at exit a second clock read and
 * a record of kspan's size written to a per-CPU ring. No filter, no fd
 * walk, no pairing check, no consumer: `traced` minus this phase is the cost
 * of kspan's own logic. */
#include "bpf/syscalls.h"

#define MIN_RING_SLOTS 1024 /* 136 KiB per CPU: a ring the consumer would drain */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} floor_start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} floor_head SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MIN_RING_SLOTS);
	__type(key, __u32);
	__type(value, struct kspan_syscall_event);
} floor_rec SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(min_e_btf, struct pt_regs *regs, long id)
{
	__u32 zero = 0;
	__u64 *start = bpf_map_lookup_elem(&floor_start, &zero);
	if (start)
		*start = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(min_x_btf, struct pt_regs *regs, long ret)
{
	__u32 zero = 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 *start = bpf_map_lookup_elem(&floor_start, &zero);
	__u64 *head = bpf_map_lookup_elem(&floor_head, &zero);
	if (!start || !head)
		return 0;
	__u32 idx = (__u32)(*head & (MIN_RING_SLOTS - 1));
	struct kspan_syscall_event *e = bpf_map_lookup_elem(&floor_rec, &idx);
	if (!e)
		return 0;
	/* Every byte of the record written (zeroed, then the fields a
	 * recording design cannot do without), as kspan's exit writes all of
	 * it. */
	__u64 *w = (__u64 *)e;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*e) / 8); i++)
		w[i] = 0;
	e->type = KSPAN_EVENT_SYSCALL;
	e->nr = (__u16)regs->orig_ax;
	e->start_ns = *start;
	e->end_ns = now;
	e->ret = (__u64)ret;
	e->args[0] = regs->di;
	e->args[1] = regs->si;
	e->args[2] = regs->dx;
	e->args[3] = regs->r10;
	*head += 1;
	return 0;
}
