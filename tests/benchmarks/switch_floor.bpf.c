// SPDX-License-Identifier: GPL-2.0
/* The floor of the host-wide slow-syscall watch: a program on the same
 * attach point as kspan_sys_slow (tp_btf/sched_switch) that does nothing.
 * What it costs a context switch is what any program there costs, before
 * kspan's own logic (docs/benchmarks.md, "What the agent costs every
 * process on the host"). */
#include "bpf/kspan_core.bpf.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sched_switch")
int BPF_PROG(floor_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return 0;
}
