/* The process filter every program family evaluates first, cheapest check
 * first, before any timestamp, map update or ring record. Kernel side only.
 *
 * The maps are pinned by name: every BPF object of the agent is opened with
 * pin_root_path=/sys/fs/bpf/kspan, so all families share one set of filter
 * maps and bpftool sees them at /sys/fs/bpf/kspan/<map name>.
 */
#ifndef KSPAN_FILTER_BPF_H
#define KSPAN_FILTER_BPF_H

#include "bpf/filter.h"

/* kspan's own tgid, set by the loader: never traced. */
const volatile __u32 kspan_self_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kspan_filter_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KSPAN_FILTER_MAX_PIDS);
	__type(key, __u32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_pid_deny SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KSPAN_FILTER_MAX_PIDS);
	__type(key, __u32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_pid_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KSPAN_FILTER_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_cg_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, KSPAN_FILTER_MAX_COMMS);
	__type(key, struct kspan_comm_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_comm_pfx SEC(".maps");

/* Deny-listed or kspan itself: record nothing at all, not even TCP. */
static __always_inline bool kspan_pid_denied(__u32 tgid)
{
	if (tgid == kspan_self_tgid)
		return true;
	return bpf_map_lookup_elem(&kspan_pid_deny, &tgid) != NULL;
}

/* The trace level of `task`, or of the current task when it is NULL (a
 * constant at every call: the other branch is compiled out), allow-lists in
 * cost order: tgid hash, cgroup id hash, comm LPM trie; empty lists are
 * skipped. A task other than the current one is the slow-syscall scan's,
 * which looks at every thread of the host from the agent's own context. */
static __always_inline enum kspan_trace_level kspan_trace_level_of(__u32 tgid,
								     struct task_struct *task)
{
	if (kspan_pid_denied(tgid))
		return KSPAN_TRACE_NONE;
	__u32 zero = 0;
	struct kspan_filter_config *cfg = bpf_map_lookup_elem(&kspan_cfg, &zero);
	if (!cfg)
		return KSPAN_TRACE_NONE;
	if ((cfg->pid_allow_count || cfg->env_enroll) && bpf_map_lookup_elem(&kspan_pid_allow, &tgid))
		return KSPAN_TRACE_FULL;
	if (cfg->cgroup_allow_count) {
		/* bpf_get_current_cgroup_id(): the default hierarchy's cgroup. */
		__u64 cgid = task ? BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id)
				  : bpf_get_current_cgroup_id();
		if (bpf_map_lookup_elem(&kspan_cg_allow, &cgid))
			return KSPAN_TRACE_FULL;
	}
	if (cfg->comm_prefix_count) {
		struct kspan_comm_key key = {.prefixlen = 8 * KSPAN_COMM_LEN};
		if (task)
			BPF_CORE_READ_STR_INTO(&key.comm, task, comm);
		else
			bpf_get_current_comm(key.comm, sizeof(key.comm));
		if (bpf_map_lookup_elem(&kspan_comm_pfx, &key))
			return KSPAN_TRACE_FULL;
	}
	return cfg->slow_threshold_ns ? KSPAN_TRACE_SLOW_ONLY : KSPAN_TRACE_NONE;
}

static __always_inline enum kspan_trace_level kspan_trace_level(__u32 tgid)
{
	return kspan_trace_level_of(tgid, NULL);
}

/* kspan_trace_level() cached per process in `cache`, a per-tgid __u32 array
 * (bits 0-1 the level, bit 2 valid, bits 3-31 the filter generation it was
 * computed for): the allow-list lookups run once per process and filter
 * change. `fc` receives the filter config. Each program family keeps its own
 * cache and resets a tgid's entry on exec and exit
 * (kspan_forget_cached_level). */
static __always_inline int kspan_cached_trace_level_of(void *cache, __u32 tgid,
						       struct task_struct *task,
						       struct kspan_filter_config **fc)
{
	__u32 zero = 0;
	struct kspan_filter_config *cfg = bpf_map_lookup_elem(&kspan_cfg, &zero);
	if (!cfg)
		return KSPAN_TRACE_NONE;
	*fc = cfg;
	__u32 tag = (cfg->generation << 3) | 4;
	__u32 *slot = bpf_map_lookup_elem(cache, &tgid);
	if (slot) {
		__u32 v = *slot;
		if ((v & ~3u) == tag)
			return v & 3;
	}
	int level = kspan_trace_level_of(tgid, task);
	if (slot)
		*slot = tag | (__u32)level;
	return level;
}

static __always_inline int kspan_cached_trace_level(void *cache, __u32 tgid,
						    struct kspan_filter_config **fc)
{
	return kspan_cached_trace_level_of(cache, tgid, NULL, fc);
}

/* exec changes comm (and cgroup); an exited tgid may be reused. */
static __always_inline void kspan_forget_cached_level(void *cache)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 *slot = bpf_map_lookup_elem(cache, &tgid);
	if (slot)
		*slot = 0;
}

#endif /* KSPAN_FILTER_BPF_H */
