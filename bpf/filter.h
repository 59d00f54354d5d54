/* In-kernel process filter: which processes each program family records.
 * Shared with userspace (userspace/capture_filter), which fills the maps
 * declared in bpf/filter.bpf.h; they are pinned under /sys/fs/bpf/kspan/ so
 * bpftool can read and change them while kspan runs.
 */
#ifndef KSPAN_BPF_FILTER_H
#define KSPAN_BPF_FILTER_H

#include "bpf/kspan_common.h"

/* How much of a process's activity is recorded. */
enum kspan_trace_level {
	KSPAN_TRACE_NONE = 0,      /* nothing (deny-listed, or kspan itself) */
	KSPAN_TRACE_SLOW_ONLY = 1, /* only syscalls slower than the host-wide threshold */
	KSPAN_TRACE_FULL = 2,      /* selected: every configured syscall */
};

/* Value of the single-entry array kspan_cfg. Userspace keeps the counts in
 * step with the maps so programs skip lookups in empty ones. */
struct kspan_filter_config {
	__u64 slow_threshold_ns;  /* 0: processes not selected record nothing */
	__u32 pid_allow_count;    /* entries in kspan_pid_allow */
	__u32 cgroup_allow_count; /* entries in kspan_cg_allow */
	__u32 comm_prefix_count;  /* entries in kspan_comm_pfx */
	__u32 generation;         /* bumped on every change */
	/* KSPAN_OTEL_ENV_* bits (bpf/process.h): an exec whose environment has
	 * any of them is put on kspan_pid_allow by the kernel (value
	 * KSPAN_ALLOW_ENVIRONMENT); 0 = off. While non-zero, kspan_pid_allow is
	 * looked up even when pid_allow_count is 0. */
	__u32 env_enroll;
};

/* Key of the comm-prefix LPM trie: prefixlen in bits of comm. */
struct kspan_comm_key {
	__u32 prefixlen;
	char comm[KSPAN_COMM_LEN];
};

/* Values of kspan_pid_allow: who put the pid there. */
enum kspan_allow_source {
	KSPAN_ALLOW_USERSPACE = 1,   /* configured, or enrolled by the agent */
	KSPAN_ALLOW_ENVIRONMENT = 2, /* the exec hook (or the start-up scan) */
};

#define KSPAN_FILTER_MAX_PIDS 16384
#define KSPAN_FILTER_MAX_CGROUPS 4096
#define KSPAN_FILTER_MAX_COMMS 256

#endif /* KSPAN_BPF_FILTER_H */
