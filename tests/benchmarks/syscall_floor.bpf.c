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
