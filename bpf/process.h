/* Process program family: exec and exit of every process on the host, so
 * userspace can refresh what it knows of a pid when the pid execs and forget
 * it when the process is gone (pids are reused). Shared with userspace
 * (userspace/process_capture, userspace/event_decoder).
 */
#ifndef KSPAN_BPF_PROCESS_H
#define KSPAN_BPF_PROCESS_H

#include "bpf/kspan_common.h"

#define KSPAN_PROC_FILENAME_LEN 256

enum kspan_proc_kind {
	KSPAN_PROC_EXEC = 1,
	KSPAN_PROC_EXIT = 2,
};

struct kspan_proc_event {
	__u32 type;      /* KSPAN_EVENT_PROCESS */
	__u32 kind;      /* enum kspan_proc_kind */
	__u32 pid;       /* tgid, host pid namespace */
	__u32 ppid;      /* the real parent's tgid */
	__u64 ts_ns;     /* CLOCK_MONOTONIC */
	__u64 cgroup_id; /* cgroup v2 id (bpf_get_current_cgroup_id) */
	char comm[KSPAN_COMM_LEN]; /* exec: the new image's */
	/* exec: the path given to execve (relative paths stay relative),
	 * NUL-terminated, cut at KSPAN_PROC_FILENAME_LEN - 1 bytes; bytes after
	 * the NUL are undefined. exit: all zero. */
	char filename[KSPAN_PROC_FILENAME_LEN];
};

/* Per-CPU counters of the process family (map kspan_proc_stats). */
enum kspan_proc_stat {
	KSPAN_PROC_STAT_EXEC_EMITTED = 0, /* exec records submitted */
	KSPAN_PROC_STAT_EXIT_EMITTED,     /* exit records submitted */
	KSPAN_PROC_STAT_RING_FULL,        /* bpf_ringbuf_reserve failed: record lost */
	KSPAN_PROC_STAT_MAX,
};

#endif /* KSPAN_BPF_PROCESS_H */
