// SPDX-License-Identifier: GPL-2.0
/* Process program family: one record when a process execs and one when it
 * exits, for every process on the host (identity is needed for all of them,
 * so there is no process filter; kspan itself is skipped). Userspace keys
 * what it knows of a process (executable, cgroup, container) by pid: exec
 * replaces it, exit ends it before the pid can be reused.
 *
 * With enrollment from the environment switched on (kspan_filter_config.
 * env_enroll), the exec hook also reads the new image's environment: a
 * process that exports OpenTelemetry data goes on the shared allow-list
 * (kspan_pid_allow) before its first instruction runs, so the other families
 * trace it fully from its first syscall; the exit of its last thread takes
 * it off again.
 *
 * Classic tracepoints sched:sched_process_exec and sched_process_exit: they
 * exist on every supported kernel and fire once per exec and per thread
 * exit, rarely compared with the other families' hooks.
 */
#include "bpf/kspan_core.bpf.h"
#include "bpf/filter.bpf.h" /* kspan_self_tgid, the pinned filter maps */
#include "bpf/process.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader between open and load (and kspan_self_tgid). */
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

/* One read of the environment: a whole variable, or the next part of a
 * longer one. Only the first 40 bytes of a variable are looked at; the rest
 * of the read finds where it ends. */
#define ENV_READ_BYTES 512
/* Reads that cover KSPAN_PROC_ENV_MAX_VARS variables within
 * KSPAN_PROC_ENV_MAX_BYTES: one per variable, plus one per further
 * ENV_READ_BYTES - 1 bytes of long ones. */
#define ENV_MAX_READS \
	(KSPAN_PROC_ENV_MAX_VARS + KSPAN_PROC_ENV_MAX_BYTES / (ENV_READ_BYTES - 1) + 1)

/* The scan's state lives in a map value, not in registers: the verifier
 * then sees the same state at the top of every iteration and checks the
 * loop body once per iteration, not once per combination of values. */
struct env_scan {
	char var[ENV_READ_BYTES];
	__u64 pos;  /* user address of the next read */
	__u64 end;  /* scan stops here: env_end, or the byte bound */
	__u32 vars; /* variables begun */
	__u32 bits; /* KSPAN_OTEL_ENV_* */
	__u32 in_var; /* the last read stopped inside a variable */
	__u32 failed; /* a read faulted */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct env_scan);
} kspan_proc_env SEC(".maps");

/* Name comparisons, eight bytes at a time against constants the compiler
 * builds from the string literals (kspan's BPF targets are little-endian).
 * A literal of at most 40 characters; bytes past the string's NUL are left
 * from earlier reads, but the NUL itself differs from every character of a
 * literal, so a shorter string never matches. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "name comparisons assume a little-endian target"
#endif
#define LIT_LEN(l) (sizeof(l) - 1)
#define LIT_BYTE(l, i) \
	((i) < LIT_LEN(l) ? (__u64)(__u8)(l)[(i) < LIT_LEN(l) ? (i) : 0] << (8 * ((i) % 8)) : 0)
#define LIT_WORD(l, o)                                                          \
	(LIT_BYTE(l, (o)) | LIT_BYTE(l, (o) + 1) | LIT_BYTE(l, (o) + 2) |           \
	 LIT_BYTE(l, (o) + 3) | LIT_BYTE(l, (o) + 4) | LIT_BYTE(l, (o) + 5) |       \
	 LIT_BYTE(l, (o) + 6) | LIT_BYTE(l, (o) + 7))
#define LIT_MASK(l, o)                            \
	(LIT_LEN(l) >= (o) + 8 ? ~0ULL             \
	 : LIT_LEN(l) <= (o)   ? 0ULL              \
			       : (1ULL << (8 * (LIT_LEN(l) - (o)))) - 1)

static __always_inline bool word_matches(const char *s, __u32 off, __u64 lit, __u64 mask)
{
	if (!mask)
		return true;
	__u64 w;
	__builtin_memcpy(&w, s + off, sizeof(w));
	return ((w ^ lit) & mask) == 0;
}

#define WORD_MATCHES(s, l, o) word_matches((s), (o), LIT_WORD(l, o), LIT_MASK(l, o))
/* `s` (at least 40 readable bytes) begins with literal `l`. */
#define STARTS_WITH(s, l)                                                          \
	(WORD_MATCHES(s, l, 0) && WORD_MATCHES(s, l, 8) && WORD_MATCHES(s, l, 16) && \
	 WORD_MATCHES(s, l, 24) && WORD_MATCHES(s, l, 32))
_Static_assert(LIT_LEN("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=") <= 40, "STARTS_WITH covers 40 bytes");

/* The bit of variable `v` (`n` bytes read, the NUL included) when it
 * begins with `name` (its '=' included): `bit` with a value after the '=',
 * 0 with an empty one (an empty value means unset to the SDKs). */
#define ENV_NAMED(v, n, name, bit)                                   \
	if (STARTS_WITH((v), name))                                  \
		return (n) > (long)sizeof(name) ? (bit) : 0;

/* The KSPAN_OTEL_ENV_* bit of one variable, or 0. */
static __always_inline __u32 otel_var_bit(const char *v, long n)
{
	if (n <= 5 || !STARTS_WITH(v, "OTEL_"))
		return 0;
	ENV_NAMED(v, n, "OTEL_EXPORTER_OTLP_ENDPOINT=", KSPAN_OTEL_ENV_ENDPOINT)
	ENV_NAMED(v, n, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=", KSPAN_OTEL_ENV_TRACES_ENDPOINT)
	ENV_NAMED(v, n, "OTEL_SERVICE_NAME=", KSPAN_OTEL_ENV_SERVICE_NAME)
	ENV_NAMED(v, n, "OTEL_TRACES_EXPORTER=", KSPAN_OTEL_ENV_TRACES_EXPORTER)
	return KSPAN_OTEL_ENV_OTHER;
}

/* The bit of the variable in this CPU's scan buffer (`n` bytes read). A
 * global function: the verifier checks it once, on its own, instead of once
 * per read of the scan loop (a pointer argument would need 5.12, so it looks
 * the buffer up itself). */
__noinline int kspan_env_var_bit(long n)
{
	__u32 zero = 0;
	struct env_scan *s = bpf_map_lookup_elem(&kspan_proc_env, &zero);
	if (!s)
		return 0;
	return otel_var_bit(s->var, n);
}

/* KSPAN_OTEL_ENV_* bits of the current task's environment (the strings
 * execve copied to the top of the new stack, env_start .. env_end), read
 * variable by variable within the bounds in bpf/process.h. */
static __always_inline __u32 scan_environment(void)
{
	__u32 zero = 0;
	struct env_scan *s = bpf_map_lookup_elem(&kspan_proc_env, &zero);
	if (!s)
		return KSPAN_OTEL_ENV_TRUNCATED;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 start = BPF_CORE_READ(task, mm, env_start);
	__u64 env_end = BPF_CORE_READ(task, mm, env_end);
	if (!start || env_end < start) {
		kspan_count(&kspan_proc_stats, KSPAN_PROC_STAT_ENV_UNREADABLE);
		return KSPAN_OTEL_ENV_TRUNCATED;
	}
	s->pos = start;
	s->end = env_end - start > KSPAN_PROC_ENV_MAX_BYTES ? start + KSPAN_PROC_ENV_MAX_BYTES
							   : env_end;
	s->vars = 0;
	s->bits = 0;
	s->in_var = 0;
	s->failed = 0;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < ENV_MAX_READS; i++) {
		/* Reload the state from the map value: values the compiler
		 * carried over in registers would be tracked exactly. */
		asm volatile("" ::: "memory");
		if (s->pos >= s->end)
			break;
		if (!s->in_var && s->vars >= KSPAN_PROC_ENV_MAX_VARS)
			break;
		long n = bpf_probe_read_user_str(s->var, sizeof(s->var), (const void *)s->pos);
		if (n < 0) {
			s->failed = 1;
			break;
		}
		/* The count includes the NUL, but for an empty string some
		 * kernels (5.10, 6.1 and 6.12 of the test matrix, not 6.18)
		 * return 0 instead of 1. */
		if (n == 0)
			n = 1;
		if (!s->in_var) {
			s->vars++;
			s->bits |= kspan_env_var_bit(n);
		}
		/* A full read may have cut the variable: the next read starts
		 * at the byte the helper replaced with its NUL. */
		if (n >= ENV_READ_BYTES) {
			s->in_var = 1;
			s->pos += ENV_READ_BYTES - 1;
		} else {
			s->in_var = 0;
			s->pos += n;
		}
	}
	__u32 bits = s->bits;
	if (s->failed)
		kspan_count(&kspan_proc_stats, KSPAN_PROC_STAT_ENV_UNREADABLE);
	/* env_end is just past the last variable's NUL: a whole scan ends
	 * there, one that a bound or a fault stopped before it. */
	if (s->failed || s->pos < env_end)
		bits |= KSPAN_OTEL_ENV_TRUNCATED;
	return bits;
}

/* Puts the current process on the allow-list when its environment matches
 * `mask`; returns its KSPAN_PROC_F_* flags. An entry of the agent's stays
 * the agent's. An entry an earlier image's environment made goes when this
 * image's does not match. */
static __always_inline __u32 enroll(__u32 tgid, __u32 otel_env, __u32 mask)
{
	__u8 *have = bpf_map_lookup_elem(&kspan_pid_allow, &tgid);
	if (!(otel_env & mask)) {
		if (have && *have == KSPAN_ALLOW_ENVIRONMENT)
			bpf_map_delete_elem(&kspan_pid_allow, &tgid);
		return 0;
	}
	if (!have) {
		__u8 env = KSPAN_ALLOW_ENVIRONMENT;
		/* BPF_NOEXIST: the agent may add the pid at the same time,
		 * and its entry wins. */
		if (bpf_map_update_elem(&kspan_pid_allow, &tgid, &env, BPF_NOEXIST) != 0)
			return 0;
	} else if (*have != KSPAN_ALLOW_ENVIRONMENT) {
		return 0;
	}
	kspan_count(&kspan_proc_stats, KSPAN_PROC_STAT_ENV_ENROLLED);
	return KSPAN_PROC_F_ENROLLED;
}

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
	/* Before the record: the allow-list entry must not wait for ring
	 * space. The other families forget their cached trace level of this
	 * tgid in their own exec hooks; no syscall of the new image runs
	 * before every hook of this tracepoint has. */
	__u32 otel_env = 0, flags = 0;
	__u32 zero = 0;
	struct kspan_filter_config *cfg = bpf_map_lookup_elem(&kspan_cfg, &zero);
	__u32 mask = cfg ? cfg->env_enroll : 0;
	if (mask) {
		otel_env = scan_environment();
		flags = enroll(tgid, otel_env, mask);
	}
	struct kspan_proc_event *e = reserve(KSPAN_PROC_EXEC, tgid);
	if (!e)
		return 0;
	e->otel_env = otel_env;
	e->flags = flags;
	/* __data_loc: offset of the string in the record in the low 16 bits.
	 * On a fault the helper zeroes the buffer. */
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), (void *)ctx + (loc & 0xffff));
	/* Userspace reads /proc/<pid> on this record, best while the process
	 * is young: wake it now rather than after wakeup_bytes. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	kspan_count(&kspan_proc_stats, KSPAN_PROC_STAT_EXEC_EMITTED);
	return 0;
}

/* The environment's allow-list entry of `tgid` goes with its last thread
 * (signal->live is decremented before this tracepoint fires), not with the
 * leader, which may exit first (pthread_exit() in main) while the other
 * threads still work. Regardless of env_enroll: entries made while it was
 * on still go. An entry of the agent's is the agent's to remove. */
static __always_inline void unenroll_if_last(__u32 tgid)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return;
	__u8 *have = bpf_map_lookup_elem(&kspan_pid_allow, &tgid);
	if (have && *have == KSPAN_ALLOW_ENVIRONMENT)
		bpf_map_delete_elem(&kspan_pid_allow, &tgid);
}

/* Fires for every exiting thread; only the leader's exit is the process's,
 * so another thread costs little. A leader that exits before its other
 * threads (pthread_exit() in main) is reported then: its tgid stays taken
 * until the last thread is gone, so the record still precedes any reuse of
 * the pid. */
SEC("tracepoint/sched/sched_process_exit")
int kspan_proc_exit(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (tgid == kspan_self_tgid)
		return 0;
	unenroll_if_last(tgid);
	if ((__u32)pid_tgid != tgid)
		return 0;
	struct kspan_proc_event *e = reserve(KSPAN_PROC_EXIT, tgid);
	if (!e)
		return 0;
	e->otel_env = 0;
	e->flags = 0;
	__builtin_memset(e->filename, 0, sizeof(e->filename));
	bpf_ringbuf_submit(e, kspan_wakeup_flag(&kspan_proc_ring, wakeup_bytes));
	kspan_count(&kspan_proc_stats, KSPAN_PROC_STAT_EXIT_EMITTED);
	return 0;
}
