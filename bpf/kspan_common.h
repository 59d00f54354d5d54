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
	KSPAN_EVENT_TCP_CONNECT = 1,    /* bpf/tcp.h */
	KSPAN_EVENT_TCP_ACCEPT = 2,     /* bpf/tcp.h */
	KSPAN_EVENT_TCP_CONN = 3,       /* bpf/tcp.h: connection lifetime */
	KSPAN_EVENT_TCP_CONN_EVENT = 4, /* bpf/tcp.h: retransmit, reset */
	KSPAN_EVENT_SYSCALL = 10,       /* bpf/syscalls.h */
	KSPAN_EVENT_DNS = 20,           /* bpf/dns.h */
	KSPAN_EVENT_HTTP = 30,          /* bpf/http.h */
	KSPAN_EVENT_PROCESS = 40,       /* bpf/process.h: exec, exit */
};

/* Per-CPU record rings: fixed-size records written by one BPF program per
 * CPU, drained by userspace (userspace/percpu_ring) through mmap.
 *
 * Two BPF_MAP_TYPE_ARRAY maps with BPF_F_MMAPABLE:
 *   records    value_size: the record slot (a multiple of 8);
 *              max_entries: cpus * slots (slots a power of two); the slots of
 *              CPU c are entries c * slots .. c * slots + slots - 1.
 *   positions  one struct kspan_percpu_pos per CPU.
 *
 * The producer (a BPF program; the kernel runs a program at most once at a
 * time per CPU) reads head and tail; if head - tail == slots the record is
 * dropped and counted; else it fills slot head % slots, and then stores
 * head + 1. Only the producer writes head, only the consumer writes tail.
 * Both count records, never wrap (64 bits).
 * The consumer loads head (acquire), hands over the records from tail up to
 * head, then stores tail = head (release). x86-64 keeps stores in program
 * order, so the producer needs only a compiler barrier between the record
 * and head; kspan's programs are x86-64 only (the syscall table). A record
 * is visible to the consumer only once it is whole.
 *
 * Doorbells: the consumer sleeps in epoll on a small BPF ring buffer, and
 * the producer rings it (an 8-byte record with a forced wakeup, contents
 * ignored) when the consumer asked to be woken: once head reaches bell_at,
 * and again every bell_every records (a power of two, the loader's) until
 * the consumer moves bell_at. The consumer sets bell_at after each drain:
 * bell_every records ahead while records trickle in, half a ring ahead while
 * a CPU writes fast enough that the consumer polls it on a timer anyway; a
 * forced wakeup is an IPI, microseconds of the writing CPU on a VM. The
 * repeats make up for a bell_at the producer had already passed when it was
 * stored (its head store and bell_at load are not ordered); the consumer's
 * poll timeout bounds the wait in any case. bell_at 0: every bell_every
 * records from the start. */
struct kspan_percpu_pos {
	__u64 head;      /* records written on this CPU (producer) */
	__u64 pad0[7];   /* head and tail on separate cache lines */
	__u64 tail;      /* records consumed (consumer) */
	__u64 bell_at;   /* ring the doorbell once head reaches this (consumer) */
	__u64 pad1[6];
};

#endif /* KSPAN_BPF_COMMON_H */
