// SPDX-License-Identifier: GPL-2.0
/* Process program family: one record when a process execs and one when it
 * exits, for every process on the host (identity is needed for all of them,
 * so there is no process filter; kspan itself is skipped). Userspace keys
 * what it knows of a process (executable, cgroup, container) by pid: exec
 * replaces it, exit ends it before the pid can be reused.
 *
 * Classic tracepoints sched:sched_process_exec and sched_process_exit: they
 * exist on every supported kernel and fire once per exec and per thread
 * exit, rarely compared with the other families' hooks.
 */
#include "bpf/kspan_core.bpf.h"
#include "bpf/process.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader between open and load. */
const volatile __u32 kspan_self_tgid = 0;
const volatile __u64 wakeup_bytes = 0; /* see kspan_wakeup_flag() */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024); /* resized by the loader */
} kspan_proc_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KSPAN_PROC_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_proc_stats SEC(".maps");

/* A record with the fields both kinds carry, or NULL (counted). */
static __always_inline struct kspan_proc_event *reserve(__u32 kind, __u32 tgid)
{
	struct kspan_proc_event *e = bpf_ringbuf_reserve(&kspan_proc_ring, sizeof(*e), 0);
	if (!e) {
		kspan_count(&kspan_proc_stats, KSPAN_PROC_STAT_RING_FULL);
		return NULL;
	}
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	e->type = KSPAN_EVENT_PROCESS;
	e->kind = kind;
	e->pid = tgid;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->ts_ns = bpf_ktime_get_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

/* Runs in the new image, after begin_new_exec(): comm is the new one, and a
 * thread other than the leader that exec'd already carries the tgid. */
SEC("tracepoint/sched/sched_process_exec")
int kspan_proc_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == kspan_self_tgid)
		return 0;
	/* Read the field once: the verifier refuses loads through a ctx
	 * pointer the compiler has offset. */
	__u32 loc = ctx->__data_loc_filename;
	struct kspan_proc_event *e = reserve(KSPAN_PROC_EXEC, tgid);
	if (!e)
		return 0;
	/* __data_loc: offset of the string in the record in the low 16 bits.
	 * On a fault the helper zeroes the buffer. */
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), (void *)ctx + (loc & 0xffff));
	/* Userspace reads /proc/<pid> on this record, best while the process
	 * is young: wake it now rather than after wakeup_bytes. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	kspan_count(&kspan_proc_stats, KSPAN_PROC_STAT_EXEC_EMITTED);
	return 0;
}

/* Fires for every exiting thread; only the leader's exit is the process's,
 * so another thread costs one comparison. A leader that exits before its
 * other threads (pthread_exit() in main) is reported then: its tgid stays
 * taken until the last thread is gone, so the record still precedes any
 * reuse of the pid. */
SEC("tracepoint/sched/sched_process_exit")
int kspan_proc_exit(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if ((__u32)pid_tgid != tgid || tgid == kspan_self_tgid)
		return 0;
	struct kspan_proc_event *e = reserve(KSPAN_PROC_EXIT, tgid);
	if (!e)
		return 0;
	__builtin_memset(e->filename, 0, sizeof(e->filename));
	bpf_ringbuf_submit(e, kspan_wakeup_flag(&kspan_proc_ring, wakeup_bytes));
	kspan_count(&kspan_proc_stats, KSPAN_PROC_STAT_EXIT_EMITTED);
	return 0;
}
