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
	/* exec: KSPAN_OTEL_ENV_* bits of the OpenTelemetry variables found in
	 * the new image's environment (0 when the scan is off). exit: 0. */
	__u32 otel_env;
	/* exec: KSPAN_PROC_F_* */
	__u32 flags;
	/* exec: the path given to execve (relative paths stay relative),
	 * NUL-terminated, cut at KSPAN_PROC_FILENAME_LEN - 1 bytes; bytes after
	 * the NUL are undefined. exit: all zero. */
	char filename[KSPAN_PROC_FILENAME_LEN];
};

/* OpenTelemetry SDK variables the exec hook looks for (name followed by
 * '=' and a non-empty value: the SDKs treat an empty value as unset), as
 * bits of kspan_proc_event.otel_env and of kspan_filter_config.env_enroll. */
enum kspan_otel_env {
	KSPAN_OTEL_ENV_ENDPOINT = 1 << 0,        /* OTEL_EXPORTER_OTLP_ENDPOINT */
	KSPAN_OTEL_ENV_TRACES_ENDPOINT = 1 << 1, /* OTEL_EXPORTER_OTLP_TRACES_ENDPOINT */
	KSPAN_OTEL_ENV_SERVICE_NAME = 1 << 2,    /* OTEL_SERVICE_NAME */
	KSPAN_OTEL_ENV_TRACES_EXPORTER = 1 << 3, /* OTEL_TRACES_EXPORTER */
	KSPAN_OTEL_ENV_OTHER = 1 << 4,           /* any other OTEL_* variable */
	/* The scan did not see the whole environment: it stopped at the bounds
	 * below, or at memory it could not read (also counted as
	 * KSPAN_PROC_STAT_ENV_UNREADABLE). A mask with this bit enrolls such
	 * processes too. */
	KSPAN_OTEL_ENV_TRUNCATED = 1 << 30,
};

/* Bounds of the environment scan at exec: the first
 * KSPAN_PROC_ENV_MAX_VARS variables, within the first
 * KSPAN_PROC_ENV_MAX_BYTES bytes of the environment block. */
#define KSPAN_PROC_ENV_MAX_VARS 256
#define KSPAN_PROC_ENV_MAX_BYTES (64 * 1024)

enum kspan_proc_flags {
	/* The environment matched kspan_filter_config.env_enroll and the pid
	 * is on kspan_pid_allow with value KSPAN_ALLOW_ENVIRONMENT (put there
	 * by this exec, or by an earlier one of the same process): its capture
	 * is on from its first instruction, and the exit of its last thread
	 * takes it off again. Not set when the agent's own entry (value
	 * KSPAN_ALLOW_USERSPACE) was there already. */
	KSPAN_PROC_F_ENROLLED = 1 << 0,
};

/* Per-CPU counters of the process family (map kspan_proc_stats). */
enum kspan_proc_stat {
	KSPAN_PROC_STAT_EXEC_EMITTED = 0, /* exec records submitted */
	KSPAN_PROC_STAT_EXIT_EMITTED,     /* exit records submitted */
	KSPAN_PROC_STAT_RING_FULL,        /* bpf_ringbuf_reserve failed: record lost */
	KSPAN_PROC_STAT_ENV_ENROLLED,     /* execs enrolled from their environment (KSPAN_PROC_F_ENROLLED) */
	KSPAN_PROC_STAT_ENV_UNREADABLE,   /* environment scans that could not read it */
	KSPAN_PROC_STAT_MAX,
};

#endif /* KSPAN_BPF_PROCESS_H */
