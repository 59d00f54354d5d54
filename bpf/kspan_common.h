/* Definitions shared by every kspan BPF program family and by userspace.
 *
 * Included from both sides: fixed-width __u8/__u16/__u32/__u64 fields only, no
 * pointers, explicit padding, so the layout is the same for clang -target bpf
 * and for the C++ compiler (userspace static_asserts sizes and offsets).
 */
#ifndef KSPAN_BPF_COMMON_H
#define KSPAN_BPF_COMMON_H

#ifndef __KSPAN_BPF__
#include <linux/types.h>
#endif

#define KSPAN_COMM_LEN 16

/* The first field of every ring-buffer record: which struct follows. */
enum kspan_event_type {
	KSPAN_EVENT_TCP_CONNECT = 1,
};

#endif /* KSPAN_BPF_COMMON_H */
