/* CO-RE helpers and constants every kspan BPF program uses. Kernel side only. */
#ifndef KSPAN_CORE_BPF_H
#define KSPAN_CORE_BPF_H

#define __KSPAN_BPF__ 1
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/* UAPI constants that vmlinux.h (BTF) does not carry: macros have no BTF. */
#define AF_INET 2
#define AF_INET6 10

/* Layout of the classic syscalls:sys_enter_<name> / sys_exit_<name>
 * tracepoint records (tracefs ABI, fixed since 2.6). */
struct kspan_sys_enter_args {
	__u64 common;
	long nr;
	unsigned long args[6];
};

struct kspan_sys_exit_args {
	__u64 common;
	long nr;
	long ret;
};

/* Increment one slot of a per-CPU array of __u64 counters. */
static __always_inline void kspan_count(void *stats_map, __u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(stats_map, &slot);
	if (v)
		*v += 1;
}

/* Ask for a consumer wakeup only once enough bytes are waiting: userspace
 * polls with a timeout, so a quiet ring is still drained promptly, and a busy
 * one costs one wakeup per wakeup_bytes instead of one per record. */
static __always_inline __u64 kspan_wakeup_flag(void *ring, __u64 wakeup_bytes)
{
	if (wakeup_bytes == 0)
		return 0; /* kernel default: wake when the consumer has caught up */
	return bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
									  : BPF_RB_NO_WAKEUP;
}

#endif /* KSPAN_CORE_BPF_H */
