// SPDX-License-Identifier: GPL-2.0
/* Syscall program family: one record per configured syscall, sys_enter to
 * sys_exit, for the processes the shared filter (bpf/filter.bpf.h) selects.
 *
 * Three interchangeable attach variants of the same two hooks, chosen by the
 * loader (userspace/syscall_capture) with bpf_program__set_autoload():
 *   tp_btf      kspan_sys_e_btf / kspan_sys_x_btf   (BTF-typed raw tracepoint)
 *               or kspan_sys_e_btf / kspan_sys_x_ptr (the same, its exit walking
 *               kernel structures with direct BTF loads: kernels with
 *               bpf_rdonly_cast, 6.2+)
 *   raw_tp      kspan_sys_e_raw / kspan_sys_x_raw   (raw tracepoint, probe reads)
 *   tracepoint  kspan_sys_e_tp  / kspan_sys_x_tp    (classic raw_syscalls:sys_*)
 *
 * Cost order for a process that is not traced (every syscall on the host
 * runs these programs): on tp_btf the running thread and its process's trace
 * level come from a per-CPU entry that kspan_sys_switch (tp_btf/sched_switch)
 * writes at every context switch (kspan_sys_cur), checked against the filter
 * generation: two inlined array reads, no helper call (some 10 ns each
 * here; a host makes far more syscalls than context switches). Elsewhere, or
 * when that entry is stale, the level comes from a per-tgid array cache
 * tagged with the filter generation, so the hash lookups of
 * kspan_trace_level() run once per process and filter change. Then the
 * syscall number indexes an array and returns unless configured.
 *
 * A traced syscall waits for its exit in the same per-CPU entry on tp_btf
 * (struct sys_current), and goes to the thread's in-flight slot only when
 * the thread is switched out before its exit.
 *
 * No helper call on the hot path of tp_btf at all: records go
 * to per-CPU record rings (kspan_sys_rec, see bpf/kspan_common.h) with plain
 * stores, not to a BPF ring buffer, whose reserve and commit take a lock and
 * an atomic exchange on a cache line the consumer last touched (some 65 ns
 * per record here). Records with a path are variable-sized and rarer; they
 * still go to the ring buffer kspan_sys_ring.
 */
#include "bpf/kspan_core.bpf.h"
#include "bpf/filter.bpf.h"
#include "bpf/syscalls.h"

#include <bpf/bpf_endian.h>

/* Only kspan_sys_x_ptr calls it; the loader loads that program only where
 * kernel BTF has it, so older kernels never see the call. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader between open and load. */
const volatile __u64 wakeup_bytes = 0; /* 0: kernel default wakeups; see sys_wakeup_flag() */
const volatile __u32 wakeup_shift = 16; /* log2 of wakeup_bytes, rounded down */
const volatile __u32 wakeup_check_mask = 0; /* query the ring every (mask + 1) records per CPU */
const volatile __u32 infl_mask = 32767; /* kspan_sys_infl entries - 1 (a power of two) */
const volatile __u32 rec_slots_shift = 10; /* log2 of the slots per CPU in kspan_sys_rec */
const volatile __u32 bell_mask = 0; /* doorbell repeats: every (bell_mask + 1) records past bell_at */
/* 1: processes that are only watched for slow syscalls (KSPAN_TRACE_SLOW_ONLY)
 * are the sched_switch watch's (kspan_sys_slow), and the enter and exit
 * programs leave them alone; 0: the enter and exit programs time their
 * syscalls (variants and kernels without that watch). */
const volatile __u8 slow_by_switch = 0;

/* Macros have no BTF: the UAPI values, fixed across kernels. */
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define S_IFREG 0100000
#define S_IFDIR 0040000
#define S_IFIFO 0010000
#define TS_COMPAT 0x0002 /* x86 thread_info.status: an ia32 syscall is running */
#define FUTEX_CMD_MASK 0x7f
#define FUTEX_WAIT 0
#define FUTEX_LOCK_PI 6
#define FUTEX_WAIT_BITSET 9
#define FUTEX_WAIT_REQUEUE_PI 11
#define FUTEX_LOCK_PI2 13

/* Per-syscall configuration, indexed by x86_64 syscall number. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KSPAN_SYSCALL_NR_MAX);
	__type(key, __u32);
	__type(value, struct kspan_syscall_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_sys_cfg SEC(".maps");

/* Trace level per tgid: bits 0-1 the level, bit 2 valid, bits 3-31 the
 * filter generation it was computed for. Sized to pid_max by the loader;
 * reset when a process execs (comm changes) or a thread exits. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 32768); /* resized by the loader */
	__type(key, __u32);
	__type(value, __u32);
} kspan_sys_lvl SEC(".maps");

/* What sys_enter leaves for sys_exit; the fields every syscall uses first. */
struct in_flight {
	__u64 start_ns;
	__u64 file; /* struct file * resolved at enter (close) */
	__u32 tid;  /* owner of an array slot; 0: free */
	__u16 nr;
	__u8 level;
	__u8 pad;
	__u64 args[4]; /* raw_tp and tracepoint (and path records): tp_btf exits read pt_regs */
};

/* Syscalls between enter and exit (on tp_btf only those whose thread was
 * switched out in between: see struct sys_current). An array slot per
 * thread, tid & infl_mask (lock-free and inlined: a hash update plus a
 * lookup and delete cost several hundred ns per syscall); a thread whose slot
 * another thread holds spills into the hash map below. The loader sizes the
 * array to pid_max when it can, so slots are then never shared. Every traced
 * enter has an exit (sys_exit runs even when a signal interrupts the
 * syscall), and a thread's slot is freed when it exits, so nothing leaks. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 32768); /* resized by the loader */
	__type(key, __u32);
	__type(value, struct in_flight);
} kspan_sys_infl SEC(".maps");

/* Spill-over of kspan_sys_infl, by thread id; a full table is counted. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384); /* resized by the loader */
	__type(key, __u32);
	__type(value, struct in_flight);
} kspan_sys_spill SEC(".maps");

struct path_key {
	__u32 tgid;
	__u32 fd;
};

struct path_entry {
	__u64 file; /* the struct file * the path belongs to: a reused fd does not match */
	char path[KSPAN_SYSCALL_PATH_MAX];
};

/* Paths of files opened by fully traced processes, remembered at openat. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384); /* resized by the loader */
	__type(key, struct path_key);
	__type(value, struct path_entry);
} kspan_sys_paths SEC(".maps");

/* Scratch space for a path entry (too large for the 512-byte stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_entry);
} kspan_sys_scr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024); /* resized by the loader */
} kspan_sys_ring SEC(".maps");

/* Per-CPU record rings (bpf/kspan_common.h): the slots of CPU c are entries
 * c << rec_slots_shift onwards; kspan_sys_pos holds each CPU's head and
 * tail. Both are mmapped by the agent. Sized by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024); /* resized by the loader */
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct kspan_syscall_event);
} kspan_sys_rec SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* resized by the loader: possible CPUs */
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct kspan_percpu_pos);
} kspan_sys_pos SEC(".maps");

/* Doorbells of the record rings: 8-byte records with a forced wakeup, which
 * wake the agent's reader; their contents are not read. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096); /* resized by the loader: one page */
} kspan_sys_bell SEC(".maps");

/* The thread running on this CPU, written by kspan_sys_switch at every
 * context switch (and at exec, which may change the thread id); task or
 * pid_tgid zero: unknown (before the first switch since attach), then the
 * programs ask the kernel. Cleared by the loader when it attaches.
 *
 * `fl` is that thread's traced syscall between its enter and its exit
 * (tp_btf): most syscalls return without a context switch, so enter and
 * exit meet on this CPU's line, which both read anyway, and never touch the
 * thread's in-flight slot. A thread switched out in between (it blocked or
 * was preempted) has `fl` parked in its slot by kspan_sys_switch, and its
 * exit, wherever it runs, finds it there. fl.tid 0: none. */
struct sys_current {
	__u64 task;     /* struct task_struct * */
	__u64 pid_tgid; /* tgid << 32 | thread id */
	__u32 level;    /* its process's trace level, as a kspan_sys_lvl entry
			 * (level | 4 | filter generation << 3); 0: unknown */
	__u32 pad;
	struct in_flight fl;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sys_current);
} kspan_sys_cur SEC(".maps");

/* The ring position (>> wakeup_shift) of the last forced wakeup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} kspan_sys_wake SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KSPAN_SYS_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_sys_stats SEC(".maps");

/* The config of syscall `nr` when it is enabled, else NULL. */
static __always_inline struct kspan_syscall_config *sys_config(long nr)
{
	if ((unsigned long)nr >= KSPAN_SYSCALL_NR_MAX)
		return NULL;
	__u32 key = (__u32)nr;
	struct kspan_syscall_config *c = bpf_map_lookup_elem(&kspan_sys_cfg, &key);
	if (!c || !c->enabled)
		return NULL;
	return c;
}

/* The level the enter and exit programs act on: with the slow-syscall
 * watch on sched_switch, a process that is only watched for slow syscalls
 * is that watch's, not theirs. */
static __always_inline int hook_level(int level)
{
	return slow_by_switch && level == KSPAN_TRACE_SLOW_ONLY ? KSPAN_TRACE_NONE : level;
}

/* The trace level of process `tgid` for the enter and exit programs
 * (cached); `fc` receives the filter config. */
static __always_inline int sys_level(__u32 tgid, struct kspan_filter_config **fc)
{
	return hook_level(kspan_cached_trace_level(&kspan_sys_lvl, tgid, fc));
}

/* Idle waits (futex, epoll_wait, poll, select, nanosleep: class WAIT) of
 * processes that are only watched for slow syscalls: every event loop on the
 * host would be a "slow" syscall each time it sleeps. Such processes still
 * report slow file and socket I/O (a stuck fsync, read or write). Checked at
 * sys_enter, so these waits take no slot, and again at sys_exit. */
static __always_inline bool skipped_wait(const struct kspan_syscall_config *c, int level)
{
	return level == KSPAN_TRACE_SLOW_ONLY && c->syscall_class == KSPAN_SYSCALL_CLASS_WAIT;
}

static __always_inline bool task_is_compat(void)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	return BPF_CORE_READ(task, thread_info.status) & TS_COMPAT;
}

/* task->files->fdt->fd[fd], bounds-checked against max_fds; NULL if none. */
static __always_inline struct file *fd_file_of(struct task_struct *task, __u32 fd)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return NULL;
	/* max_fds and the fd array in one read where they are adjacent. */
	__u32 off_max = bpf_core_field_offset(struct fdtable, max_fds);
	__u32 off_fd = bpf_core_field_offset(struct fdtable, fd);
	unsigned int max_fds;
	struct file **fds;
	__u8 head[16];
	if (off_max <= 12 && off_fd <= 8 && bpf_core_read(head, sizeof(head), fdt) == 0) {
		__builtin_memcpy(&max_fds, head + off_max, 4);
		__builtin_memcpy(&fds, head + off_fd, 8);
	} else {
		max_fds = BPF_CORE_READ(fdt, max_fds);
		fds = BPF_CORE_READ(fdt, fd);
	}
	if (fd >= max_fds)
		return NULL;
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* The same in the current task's fd table. */
static __always_inline struct file *fd_file(__u32 fd)
{
	return fd_file_of((void *)bpf_get_current_task(), fd);
}

/* What an inode mode says an fd refers to. */
static __always_inline __u8 mode_kind(__u16 mode)
{
	switch (mode & S_IFMT) {
	case S_IFSOCK:
		return KSPAN_FD_SOCKET;
	case S_IFREG:
	case S_IFDIR:
		return KSPAN_FD_FILE;
	case S_IFIFO:
		return KSPAN_FD_PIPE;
	default:
		return KSPAN_FD_OTHER;
	}
}

static __always_inline __u8 file_kind(struct file *f)
{
	if (!f)
		return KSPAN_FD_NONE;
	return mode_kind(BPF_CORE_READ(f, f_inode, i_mode));
}

/* Family, type, protocol, local and peer address of a socket file. */
static __always_inline void fill_socket(struct kspan_syscall_event *e, struct file *f)
{
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return;
	/* type and sk in one read where they lie within 32 bytes. */
	__u32 off_type = bpf_core_field_offset(struct socket, type);
	__u32 off_sk = bpf_core_field_offset(struct socket, sk);
	short type;
	struct sock *sk;
	__u8 shead[32];
	if (off_type <= 30 && off_sk <= 24 && bpf_core_read(shead, sizeof(shead), sock) == 0) {
		__builtin_memcpy(&type, shead + off_type, 2);
		__builtin_memcpy(&sk, shead + off_sk, 8);
	} else {
		type = BPF_CORE_READ(sock, type);
		sk = BPF_CORE_READ(sock, sk);
	}
	if (!sk)
		return;
	/* Each probe read costs tens of ns: the head of sock_common (address
	 * pair, port pair, family) in one read, at CO-RE-relocated offsets;
	 * field by field if a kernel ever moves them out of that block. */
	struct sock_common *skc = &sk->__sk_common;
	__u32 off_addr = bpf_core_field_offset(struct sock_common, skc_addrpair);
	__u32 off_port = bpf_core_field_offset(struct sock_common, skc_portpair);
	__u32 off_family = bpf_core_field_offset(struct sock_common, skc_family);
	__u64 pair;
	__u32 ports;
	__u16 family;
	__u8 head[24];
	if (off_addr <= 16 && off_port <= 20 && off_family <= 22 &&
	    bpf_core_read(head, sizeof(head), skc) == 0) {
		__builtin_memcpy(&pair, head + off_addr, 8);
		__builtin_memcpy(&ports, head + off_port, 4);
		__builtin_memcpy(&family, head + off_family, 2);
	} else {
		pair = BPF_CORE_READ(skc, skc_addrpair);
		ports = BPF_CORE_READ(skc, skc_portpair);
		family = BPF_CORE_READ(skc, skc_family);
	}
	e->family = (__u8)family;
	e->sock_type = (__u8)type;
	e->protocol = (__u8)BPF_CORE_READ(sk, sk_protocol);
	if (family == AF_INET) {
		/* skc_addrpair: skc_daddr, then skc_rcv_saddr. */
		__builtin_memcpy(e->daddr, &pair, 4);
		__builtin_memcpy(e->saddr, (__u8 *)&pair + 4, 4);
	} else if (family == AF_INET6) {
		bpf_core_read(e->saddr, 16, &skc->skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, 16, &skc->skc_v6_daddr);
	} else {
		return;
	}
	/* skc_portpair: skc_dport (network order), then skc_num. */
	e->sport = (__u16)(ports >> 16);
	e->dport = bpf_ntohs((__u16)ports);
}

/* ---- the same walks with direct BTF loads (kspan_sys_x_ptr only) ----
 *
 * A load through a BTF pointer is a plain load with an exception-table
 * fixup (a bad address reads as 0), about 1 ns; bpf_probe_read_kernel costs
 * some 20-60 ns. The walk starts at the trusted current task; what BTF
 * types as void * or as a pointer array (file->private_data, fdt->fd[]) is
 * a scalar to the verifier, and is given a BTF type with bpf_rdonly_cast
 * (read-only, untrusted: loads only, a bad address reads as 0). A socket
 * record takes no probe read at all; paths still do (strings). Each helper
 * call costs about 10 ns here (ktime 35), so the current task is fetched
 * once per exit and everything else about the thread is read from it. */

static __always_inline struct file *fd_file_direct(struct task_struct *task, __u32 fd)
{
	struct files_struct *files = task->files;
	if (!files)
		return NULL;
	struct fdtable *fdt = files->fdt;
	if (!fdt || fd >= fdt->max_fds)
		return NULL;
	/* fdt->fd is an array of pointers, which BTF cannot index by a
	 * variable: &fd[fd] is cast to a kernel struct whose first member is a
	 * struct file pointer (struct kiocb, ki_filp at offset 0 on every
	 * kernel), so reading the slot is one plain load, not a probe read. */
	struct file **fds = fdt->fd;
	struct kiocb *slot = bpf_rdonly_cast(&fds[fd], bpf_core_type_id_kernel(struct kiocb));
	return slot->ki_filp;
}

static __always_inline struct file *file_btf(struct file *f)
{
	return bpf_rdonly_cast(f, bpf_core_type_id_kernel(struct file));
}

/* `f` as fd_file_direct() or file_btf() gave it: a BTF pointer, read
 * without a cast (each cast is a call to the compiler, which then keeps
 * live values out of the registers a call clobbers). */
static __always_inline __u8 file_kind_direct(struct file *f)
{
	if (!f)
		return KSPAN_FD_NONE;
	struct inode *inode = f->f_inode;
	if (!inode)
		return KSPAN_FD_NONE;
	return mode_kind(inode->i_mode);
}

/* Socket fields of a record whose socket fields are still zero. */
static __always_inline void fill_socket_direct(struct kspan_syscall_event *e, struct file *f)
{
	/* NULL never comes with a socket kind, but the verifier cannot know
	 * that of a record it reads back from the stack (path records). */
	if (!f)
		return;
	void *priv = f->private_data;
	if (!priv)
		return;
	struct socket *sock = bpf_rdonly_cast(priv, bpf_core_type_id_kernel(struct socket));
	struct sock *sk = sock->sk;
	if (!sk)
		return;
	const struct sock_common *skc = &sk->__sk_common;
	__u16 family = skc->skc_family;
	e->family = (__u8)family;
	e->sock_type = (__u8)sock->type;
	e->protocol = (__u8)sk->sk_protocol;
	if (family == AF_INET) {
		/* skc_addrpair: skc_daddr, then skc_rcv_saddr, in one load. */
		__u64 pair = skc->skc_addrpair;
		__builtin_memcpy(e->daddr, &pair, 4);
		__builtin_memcpy(e->saddr, (__u8 *)&pair + 4, 4);
	} else if (family == AF_INET6) {
		__u32 a[8];
#pragma unroll
		for (int i = 0; i < 4; i++) {
			a[i] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			a[4 + i] = skc->skc_v6_daddr.in6_u.u6_addr32[i];
		}
		__builtin_memcpy(e->saddr, &a[0], 16);
		__builtin_memcpy(e->daddr, &a[4], 16);
	} else {
		return;
	}
	/* skc_portpair: skc_dport (network order), then skc_num. */
	__u32 ports = skc->skc_portpair;
	e->sport = (__u16)(ports >> 16);
	e->dport = bpf_ntohs((__u16)ports);
}

/* comm in two 8-byte loads: BTF allows only byte loads into a char array,
 * so its address is cast to a kernel struct of two 8-byte scalars
 * (struct timespec64) instead of 16 byte loads. */
static __always_inline void comm_direct(char *dst, struct task_struct *task)
{
	struct timespec64 *w = bpf_rdonly_cast(&task->comm, bpf_core_type_id_kernel(struct timespec64));
	__u64 lo = w->tv_sec;
	__u64 hi = w->tv_nsec;
	__builtin_memcpy(dst, &lo, 8);
	__builtin_memcpy(dst + 8, &hi, 8);
}

/* ---- the exit, shared by every variant ---- */

/* The thread at sys_exit. `task` is the trusted current task of the direct
 * walk (kspan_sys_x_ptr), NULL elsewhere. */
struct sys_thread {
	struct task_struct *task;
	__u32 tgid;
	__u32 tid;
};

static __always_inline bool thread_is_compat(const struct sys_thread *t, bool direct)
{
	if (direct)
		return t->task->thread_info.status & TS_COMPAT;
	return task_is_compat();
}

/* The socket fields of a record, each written once: none for an fd that
 * is not a socket (or a socket without its struct sock). */
static __always_inline void sock_fields_none(struct kspan_syscall_event *e)
{
	__u64 *a = (__u64 *)e->saddr;
	e->family = 0;
	e->sock_type = 0;
	e->protocol = 0;
	e->sport = 0;
	e->dport = 0;
	a[0] = 0;
	a[1] = 0;
	a[2] = 0;
	a[3] = 0;
}

/* A record's fields up to the arguments, and its fd; no path. */
static __always_inline void fill_head(struct kspan_syscall_event *e, __u32 tgid, __u32 tid,
				      const struct in_flight *fl, __u8 syscall_class, __u64 now,
				      long ret, __u32 fd, __u8 kind)
{
	e->type = KSPAN_EVENT_SYSCALL;
	e->pid = tgid;
	e->tid = tid;
	e->nr = fl->nr;
	e->syscall_class = kind == KSPAN_FD_SOCKET ? KSPAN_SYSCALL_CLASS_SOCKET_IO : syscall_class;
	e->trace_level = fl->level;
	e->start_ns = fl->start_ns;
	e->end_ns = now;
	e->ret = (__u64)ret;
	e->fd = fd;
	e->fd_kind = kind;
	e->path_len = 0;
	e->path_source = KSPAN_PATH_NONE;
	e->flags = 0;
}

/* A record's comm and socket fields. `task`: the direct walk's task. */
static __always_inline void fill_tail(struct kspan_syscall_event *e, struct task_struct *task,
				      struct file *f, __u8 kind, bool direct)
{
	if (direct)
		comm_direct(e->comm, task);
	else
		bpf_get_current_comm(e->comm, sizeof(e->comm));
	/* Zeroed first: a socket without its struct sock, or of a family
	 * without addresses, leaves them so. */
	sock_fields_none(e);
	if (kind != KSPAN_FD_SOCKET)
		return;
	if (direct)
		fill_socket_direct(e, f);
	else
		fill_socket(e, f);
}

/* Every field but the path tail, each written once. The syscall's first
 * four arguments come straight from the tp_btf exits' `regs`
 * (`args_in_regs`): on x86_64 pt_regs still holds them at sys_exit (only ax
 * has become the return value; ptrace and seccomp changes come before
 * sys_enter), so their enter stores none. Else they come from the slot's
 * args, where the other variants' enters store them (see record_args()). */
static __always_inline void fill_event(struct kspan_syscall_event *e, const struct in_flight *fl,
				       const struct sys_thread *t, __u64 now, long ret,
				       struct pt_regs *regs, bool args_in_regs, __u8 syscall_class,
				       __u32 fd, struct file *f, __u8 kind, bool direct)
{
	fill_head(e, t->tgid, t->tid, fl, syscall_class, now, ret, fd, kind);
	if (args_in_regs) {
		e->args[0] = regs->di;
		e->args[1] = regs->si;
		e->args[2] = regs->dx;
		e->args[3] = regs->r10;
	} else {
		e->args[0] = fl->args[0];
		e->args[1] = fl->args[1];
		e->args[2] = fl->args[2];
		e->args[3] = fl->args[3];
	}
	fill_tail(e, t->task, f, kind, direct);
}

/* Wake the consumer once per 2^wakeup_shift bytes written (the power of two
 * at or below wakeup_bytes): when the producer position has entered another
 * multiple of it since the last forced wakeup (kspan_sys_wake). Waking
 * whenever wakeup_bytes are waiting would wake on every record while the
 * consumer is being scheduled in, several hundred ns each. The position is
 * queried only every (wakeup_check_mask + 1)-th record of a CPU (the loader
 * keeps that under an eighth of the wakeup size), which saves a helper call
 * per record. Concurrent CPUs may both wake for one crossing, or notice it
 * up to that many records late; the consumer's poll timeout bounds the
 * delay then, nothing is lost. `count` is this CPU's record count. */
static __always_inline __u64 sys_wakeup_flag(__u64 count)
{
	if (wakeup_bytes == 0)
		return 0; /* kernel default: wake when the consumer has caught up */
	if (count & wakeup_check_mask)
		return BPF_RB_NO_WAKEUP;
	__u64 epoch = bpf_ringbuf_query(&kspan_sys_ring, BPF_RB_PROD_POS) >> (wakeup_shift & 63);
	__u32 zero = 0;
	__u64 *woken = bpf_map_lookup_elem(&kspan_sys_wake, &zero);
	if (!woken || *woken == epoch)
		return BPF_RB_NO_WAKEUP;
	*woken = epoch;
	return BPF_RB_FORCE_WAKEUP;
}

/* Counts the record (KSPAN_SYS_STAT_EMITTED) and submits it. */
static __always_inline void submit(void *e)
{
	__u32 key = KSPAN_SYS_STAT_EMITTED;
	__u64 *n = bpf_map_lookup_elem(&kspan_sys_stats, &key);
	__u64 count = 0;
	if (n)
		count = ++*n;
	bpf_ringbuf_submit(e, sys_wakeup_flag(count));
}

/* A slot of this CPU's record ring for the next record, and the ring's
 * positions in *posp; NULL when the ring is full (counted). */
static __always_inline struct kspan_syscall_event *rec_reserve(struct kspan_percpu_pos **posp)
{
	__u32 cpu = bpf_get_smp_processor_id(); /* inlined by the verifier */
	struct kspan_percpu_pos *pos = bpf_map_lookup_elem(&kspan_sys_pos, &cpu);
	if (!pos)
		return NULL;
	__u64 mask = (1ull << (rec_slots_shift & 31)) - 1;
	__u64 head = pos->head;
	__u64 tail = *(volatile __u64 *)&pos->tail;
	struct kspan_syscall_event *e = NULL;
	if (head - tail <= mask) {
		__u32 idx = (cpu << (rec_slots_shift & 31)) | (__u32)(head & mask);
		e = bpf_map_lookup_elem(&kspan_sys_rec, &idx);
	}
	if (!e) {
		kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_RING_FULL);
		return NULL;
	}
	*posp = pos;
	return e;
}

/* Publishes the record rec_reserve() gave: head moves past it once it is
 * whole (a compiler barrier suffices on x86-64, see bpf/kspan_common.h),
 * then the doorbell if the reader asked for it at this position (bell_at,
 * on the tail's cache line, which rec_reserve() has just read). */
static __always_inline void rec_commit(struct kspan_percpu_pos *pos)
{
	__u64 head = pos->head + 1;
	asm volatile("" ::: "memory");
	*(volatile __u64 *)&pos->head = head;
	kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_EMITTED);
	__s64 past = (__s64)(head - *(volatile __u64 *)&pos->bell_at);
	if (past >= 0 && !(past & bell_mask))
		bpf_ringbuf_output(&kspan_sys_bell, &head, sizeof(head), BPF_RB_FORCE_WAKEUP);
}

/* The thread running on this CPU and its process's trace level: on tp_btf
 * (`cached`) from kspan_sys_cur, where the switch program left them, so a
 * process that is not traced costs two array reads and no helper call; else,
 * and until the CPU's first switch, from the kernel and the per-tgid cache.
 * `task` (may be NULL) receives the task for the direct walk (`direct`),
 * `curp` (may be NULL) the kspan_sys_cur entry when it describes the thread. */
static __always_inline int thread_level(__u64 *pid_tgid, struct task_struct **task,
					struct kspan_filter_config **fc, bool cached,
					bool direct, struct sys_current **curp)
{
	__u32 zero = 0;
	if (cached) {
		struct sys_current *cur = bpf_map_lookup_elem(&kspan_sys_cur, &zero);
		struct kspan_filter_config *cfg = bpf_map_lookup_elem(&kspan_cfg, &zero);
		if (cur && cfg && cur->task && cur->pid_tgid) {
			if (curp)
				*curp = cur;
			*fc = cfg;
			*pid_tgid = cur->pid_tgid;
			if (direct)
				*task = bpf_rdonly_cast((void *)cur->task,
							bpf_core_type_id_kernel(struct task_struct));
			__u32 tag = (cfg->generation << 3) | 4;
			__u32 v = cur->level;
			if ((v & ~3u) == tag)
				return hook_level(v & 3);
			int level = sys_level(cur->pid_tgid >> 32, fc);
			cur->level = tag | (__u32)level;
			return level;
		}
	}
	if (direct) {
		/* One helper call for the ids, comm, compat status and fd table. */
		struct task_struct *t = bpf_get_current_task_btf();
		*task = bpf_rdonly_cast(t, bpf_core_type_id_kernel(struct task_struct));
		*pid_tgid = ((__u64)t->tgid << 32) | (__u32)t->pid;
	} else {
		*pid_tgid = bpf_get_current_pid_tgid();
	}
	return sys_level(*pid_tgid >> 32, fc);
}

static __always_inline bool futex_waits(__u64 op)
{
	switch (op & FUTEX_CMD_MASK) {
	case FUTEX_WAIT:
	case FUTEX_WAIT_BITSET:
	case FUTEX_WAIT_REQUEUE_PI:
	case FUTEX_LOCK_PI:
	case FUTEX_LOCK_PI2:
		return true;
	default:
		return false;
	}
}

/* Thread `tid`'s array slot when it is free or already the thread's, else
 * NULL: a thread whose slot another thread holds spills. */
static __always_inline struct in_flight *claim_slot(__u32 tid)
{
	__u32 idx = tid & infl_mask;
	struct in_flight *slot = bpf_map_lookup_elem(&kspan_sys_infl, &idx);
	if (slot && (slot->tid == 0 || slot->tid == tid))
		return slot;
	return NULL;
}

/* Keeps `fl` in the spill-over under its thread id; a full table is
 * counted (the syscall is lost). */
static __always_inline void spill_in_flight(struct in_flight *fl)
{
	__u32 tid = fl->tid;
	if (bpf_map_update_elem(&kspan_sys_spill, &tid, fl, BPF_ANY))
		kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_ENTER_NO_SLOT);
}

/* Where the exit finds a syscall that is not in kspan_sys_cur: thread
 * `*tid`'s array slot when the thread holds it, else the spill-over
 * (*spilled); NULL if neither has it. */
static __always_inline struct in_flight *parked_in_flight(const __u32 *tid, bool *spilled)
{
	__u32 idx = *tid & infl_mask;
	struct in_flight *slot = bpf_map_lookup_elem(&kspan_sys_infl, &idx);
	*spilled = !slot || slot->tid != *tid;
	if (*spilled)
		slot = bpf_map_lookup_elem(&kspan_sys_spill, tid);
	return slot;
}

/* Frees what parked_in_flight() found, once the exit is done with it. */
static __always_inline void free_in_flight(struct in_flight *fl, const __u32 *tid, bool spilled)
{
	if (spilled)
		bpf_map_delete_elem(&kspan_sys_spill, tid);
	else
		fl->tid = 0;
}

/* Everything after the cheap checks of sys_enter: the process is traced.
 * `keep_args`: store the arguments for an exit that cannot read them from
 * pt_regs (raw_tp, tracepoint). `cur`: the tp_btf enter's kspan_sys_cur
 * entry when it describes this thread, where the syscall is kept instead of
 * the thread's slot (see struct sys_current). */
static __always_inline int enter_traced(const struct kspan_syscall_config *c, long nr,
					__u64 pid_tgid, int level, __u64 a0, __u64 a1,
					__u64 a2, __u64 a3, bool keep_args,
					struct sys_current *cur)
{
	if (skipped_wait(c, level))
		return 0;
	__u8 flags = c->flags;
	if ((flags & KSPAN_SYSCALL_F_FUTEX_WAIT) && !futex_waits(a1))
		return 0;
	__u64 file = 0;
	if (flags & KSPAN_SYSCALL_F_FD_AT_ENTER)
		file = (__u64)fd_file((__u32)a0);
	__u32 tid = (__u32)pid_tgid;
	if (cur) {
		cur->fl.file = file;
		cur->fl.nr = (__u16)nr;
		cur->fl.level = (__u8)level;
		cur->fl.tid = tid;
		cur->fl.start_ns = bpf_ktime_get_ns();
		return 0;
	}
	struct in_flight *slot = claim_slot(tid);
	if (slot) {
		/* Claimed before it is filled: a thread sharing the slot
		 * spills from now on. Two threads claiming the same free slot
		 * at the same instant is the one race left; the loser's exit
		 * then finds no enter and is counted. */
		slot->tid = tid;
		if (keep_args) {
			slot->args[0] = a0;
			slot->args[1] = a1;
			slot->args[2] = a2;
			slot->args[3] = a3;
		}
		slot->file = file;
		slot->nr = (__u16)nr;
		slot->level = (__u8)level;
		slot->start_ns = bpf_ktime_get_ns();
		return 0;
	}
	struct in_flight fl = {
		.args = {a0, a1, a2, a3},
		.file = file,
		.tid = tid,
		.nr = (__u16)nr,
		.level = (__u8)level,
	};
	fl.start_ns = bpf_ktime_get_ns();
	spill_in_flight(&fl);
	return 0;
}

/* The path of file `f` (fd `fd`) into `path`: remembered at openat when the
 * entry belongs to this very file, else the dentry name. */
static __always_inline void fill_path(struct kspan_syscall_path_event *e, __u32 tgid, __u32 fd,
				      struct file *f)
{
	struct path_key key = {.tgid = tgid, .fd = fd};
	struct path_entry *pe = bpf_map_lookup_elem(&kspan_sys_paths, &key);
	long n;
	if (pe && pe->file == (__u64)f) {
		n = bpf_probe_read_kernel_str(e->path, sizeof(e->path), pe->path);
		e->ev.path_source = KSPAN_PATH_OPENAT;
	} else {
		const unsigned char *name = BPF_CORE_READ(f, f_path.dentry, d_name.name);
		n = bpf_probe_read_kernel_str(e->path, sizeof(e->path), name);
		e->ev.path_source = KSPAN_PATH_DENTRY;
	}
	if (n > 0) {
		e->ev.path_len = (__u16)(n - 1);
	} else {
		e->path[0] = 0;
		e->ev.path_source = KSPAN_PATH_NONE;
	}
}

/* openat: the name the process passed, remembered for the new fd when the
 * process is fully traced and the call succeeded. */
static __always_inline void fill_openat_path(struct kspan_syscall_path_event *e,
					     const struct in_flight *fl, __u64 name_arg,
					     __u32 tgid, long ret, struct file *f)
{
	long n = bpf_probe_read_user_str(e->path, sizeof(e->path), (const void *)name_arg);
	if (n <= 0) {
		e->path[0] = 0;
		return;
	}
	e->ev.path_len = (__u16)(n - 1);
	e->ev.path_source = KSPAN_PATH_OPENAT;
	if (ret < 0 || fl->level != KSPAN_TRACE_FULL || !f)
		return;
	__u32 zero = 0;
	struct path_entry *scratch = bpf_map_lookup_elem(&kspan_sys_scr, &zero);
	if (!scratch)
		return;
	scratch->file = (__u64)f;
	bpf_probe_read_kernel(scratch->path, sizeof(scratch->path), e->path);
	struct path_key key = {.tgid = tgid, .fd = (__u32)ret};
	if (bpf_map_update_elem(&kspan_sys_paths, &key, scratch, BPF_ANY))
		kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_PATH_TABLE_FULL);
}

/* A paired, resolved syscall on its way to the ring. */
struct sys_record {
	const struct in_flight *fl; /* its args hold the arguments (record_args()) */
	const struct sys_thread *t;
	struct file *f;
	__u64 now;
	long ret;
	__u32 fd;
	__u8 kind;
	__u8 syscall_class; /* the config's */
	__u8 flags;         /* the config's */
};

/* A record with its path tail (files, openat). */
static __always_inline int emit_path_record(const struct sys_record *r, bool direct)
{
	struct kspan_syscall_path_event *e = bpf_ringbuf_reserve(&kspan_sys_ring, sizeof(*e), 0);
	if (!e) {
		kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_RING_FULL);
		return 0;
	}
	fill_event(&e->ev, r->fl, r->t, r->now, r->ret, NULL, false, r->syscall_class, r->fd, r->f,
		   r->kind, direct);
	if (r->flags & KSPAN_SYSCALL_F_PATH_ARG1)
		fill_openat_path(e, r->fl, r->fl->args[1], r->t->tgid, r->ret, r->f);
	else
		fill_path(e, r->t->tgid, r->fd, r->f);
	submit(e);
	return 0;
}

/* Out of line, one copy per exit program placed after its hot path: path
 * records are rarer than socket records (file I/O has a minimum duration),
 * and inlined they put some 2 KB of code between the hot instructions. */
static __noinline int emit_path_record_direct(const struct sys_record *r)
{
	return emit_path_record(r, true);
}

static __noinline int emit_path_record_probe(const struct sys_record *r)
{
	return emit_path_record(r, false);
}

/* A record with a path, by the subprogram out of line. */
static __always_inline void emit_path(const struct kspan_syscall_config *c,
				      const struct in_flight *fl, const struct sys_thread *t,
				      struct file *f, __u64 now, long ret, __u32 fd, __u8 kind,
				      bool direct)
{
	struct sys_record r = {
		.fl = fl, .t = t, .f = f, .now = now, .ret = ret, .fd = fd, .kind = kind,
		.syscall_class = c->syscall_class, .flags = c->flags,
	};
	if (direct)
		emit_path_record_direct(&r);
	else
		emit_path_record_probe(&r);
}

/* The arguments in the slot's args, where a path record reads them: the
 * raw_tp and tracepoint enters stored them there; the tp_btf exits copy
 * them from pt_regs once a path record is certain. In the slot rather than
 * on the stack: the program's frame and the path record subprogram's must
 * fit in 512 bytes together on kernels without private stacks. */
static __always_inline void record_args(struct in_flight *fl, struct pt_regs *regs,
					bool args_in_regs)
{
	if (args_in_regs) {
		fl->args[0] = regs->di;
		fl->args[1] = regs->si;
		fl->args[2] = regs->dx;
		fl->args[3] = regs->r10;
	}
}

/* Whether a paired syscall that took `duration` is below its minimum:
 * KEEP it, SKIP it (counted), or keep it only IF_SOCKET (a lower minimum
 * for sockets). A process that is watched for slow syscalls only has the
 * host-wide threshold as its minimum too. */
enum sys_keep { SYS_SKIP, SYS_KEEP, SYS_KEEP_IF_SOCKET };

static __always_inline enum sys_keep keep_record(const struct kspan_syscall_config *c, __u8 level,
						 __u64 duration)
{
	__u64 min_ns = c->min_duration_ns;
	__u64 sock_min_ns = c->socket_min_ns;
	if (level != KSPAN_TRACE_FULL) {
		__u32 zero = 0;
		struct kspan_filter_config *fc = bpf_map_lookup_elem(&kspan_cfg, &zero);
		if (!fc)
			return SYS_SKIP;
		if (fc->slow_threshold_ns > min_ns)
			min_ns = fc->slow_threshold_ns;
		if (fc->slow_threshold_ns > sock_min_ns)
			sock_min_ns = fc->slow_threshold_ns;
	}
	if (duration >= min_ns)
		return SYS_KEEP;
	if (duration >= sock_min_ns &&
	    (c->flags & (KSPAN_SYSCALL_F_FD_ARG0 | KSPAN_SYSCALL_F_FD_RET | KSPAN_SYSCALL_F_FD_AT_ENTER)))
		return SYS_KEEP_IF_SOCKET;
	kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_BELOW_THRESHOLD);
	return SYS_SKIP;
}

/* The fd a record describes (*fd, KSPAN_SYSCALL_NO_FD if none) and its
 * struct file: the return value (accept, openat), the file remembered at
 * enter (close), or the first argument `a0`. */
static __always_inline struct file *record_file(const struct kspan_syscall_config *c,
						const struct in_flight *fl, long ret, __u64 a0,
						struct task_struct *task, __u32 *fd, bool direct)
{
	__u8 flags = c->flags;
	*fd = KSPAN_SYSCALL_NO_FD;
	if (flags & KSPAN_SYSCALL_F_FD_AT_ENTER) {
		struct file *f = (struct file *)fl->file;
		*fd = (__u32)a0;
		if (direct && f)
			f = file_btf(f);
		return f;
	}
	__u32 n;
	if (flags & KSPAN_SYSCALL_F_FD_RET) {
		if (ret < 0)
			return NULL;
		n = (__u32)ret;
	} else if (flags & KSPAN_SYSCALL_F_FD_ARG0) {
		n = (__u32)a0;
	} else {
		return NULL;
	}
	*fd = n;
	return direct ? fd_file_direct(task, n) : fd_file(n);
}

static __always_inline void exit_traced(const struct kspan_syscall_config *c,
					struct in_flight *flp, const struct sys_thread *t,
					__u64 now, long ret, struct pt_regs *regs,
					bool args_in_regs, bool direct)
{
	enum sys_keep keep = keep_record(c, flp->level, now - flp->start_ns);
	if (keep == SYS_SKIP)
		return;
	/* An ia32 syscall: its numbers differ, the config does not apply.
	 * Checked here, not at enter, so fast syscalls never pay for it. */
	if (thread_is_compat(t, direct))
		return;
	__u32 fd;
	struct file *f = record_file(c, flp, ret, args_in_regs ? regs->di : flp->args[0], t->task,
				     &fd, direct);
	__u8 kind = direct ? file_kind_direct(f) : file_kind(f);
	if (keep == SYS_KEEP_IF_SOCKET && kind != KSPAN_FD_SOCKET) {
		kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_BELOW_THRESHOLD);
		return;
	}
	if (kind == KSPAN_FD_FILE || (c->flags & KSPAN_SYSCALL_F_PATH_ARG1)) {
		record_args(flp, regs, args_in_regs);
		emit_path(c, flp, t, f, now, ret, fd, kind, direct);
		return;
	}
	struct kspan_percpu_pos *pos = NULL;
	struct kspan_syscall_event *e = rec_reserve(&pos);
	if (!e || !pos)
		return;
	fill_event(e, flp, t, now, ret, regs, args_in_regs, c->syscall_class, fd, f, kind, direct);
	rec_commit(pos);
}

/* The exit of a paired syscall: its record if it is one, then the close
 * bookkeeping. */
static __always_inline void exit_paired(const struct kspan_syscall_config *c,
					struct in_flight *slot, const struct sys_thread *t,
					long nr, long ret, struct pt_regs *regs, bool args_in_regs,
					bool direct)
{
	__u64 now = bpf_ktime_get_ns();
	if (slot->nr != (__u16)nr) {
		/* The exit of another syscall than the one entered: its own
		 * exit was lost. */
		kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_EXIT_NO_ENTER);
		return;
	}
	exit_traced(c, slot, t, now, ret, regs, args_in_regs, direct);
	/* close: the remembered path dies with the fd, recorded or not. */
	if ((c->flags & KSPAN_SYSCALL_F_FD_AT_ENTER) && ret == 0) {
		__u64 fd;
		if (args_in_regs)
			fd = regs->di;
		else
			fd = slot->args[0];
		struct path_key key = {.tgid = t->tgid, .fd = (__u32)fd};
		bpf_map_delete_elem(&kspan_sys_paths, &key);
	}
}

/* sys_exit once the process is known to be traced.
 * `args_in_regs` (a constant: the verifier refuses one load instruction
 * serving both a BTF pointer and a map value): the arguments are read from
 * the tp_btf exits' `regs`, else from the slot. */
static __always_inline int sys_exit_traced(struct kspan_syscall_config *c,
					   const struct sys_thread *t, long nr, long ret,
					   struct pt_regs *regs, bool args_in_regs, bool direct)
{
	__u32 tid = t->tid;
	bool spilled;
	struct in_flight *slot = parked_in_flight(&tid, &spilled);
	if (!slot) {
		/* Began before capture started, was not recorded for lack of a
		 * slot (counted at enter), or the process became traced
		 * meanwhile; ia32 syscalls are never recorded. A futex call
		 * without a slot is most likely one that is not a wait (no
		 * slot taken at its enter); the tp_btf exits tell them apart. */
		if (!(c->flags & KSPAN_SYSCALL_F_FUTEX_WAIT) && !thread_is_compat(t, direct))
			kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_EXIT_NO_ENTER);
		return 0;
	}
	exit_paired(c, slot, t, nr, ret, regs, args_in_regs, direct);
	free_in_flight(slot, &tid, spilled);
	return 0;
}

/* The tracepoint variant's exit: the syscall number first, then the
 * thread from the kernel. */
static __always_inline int sys_exit_common(long nr, long ret)
{
	struct sys_thread t = {};
	struct kspan_filter_config *fc = NULL;
	__u64 pid_tgid = 0;
	int level = thread_level(&pid_tgid, &t.task, &fc, false, false, NULL);
	if (level == KSPAN_TRACE_NONE || !fc)
		return 0;
	struct kspan_syscall_config *c = sys_config(nr);
	if (!c || skipped_wait(c, level))
		return 0;
	t.tgid = pid_tgid >> 32;
	t.tid = (__u32)pid_tgid;
	return sys_exit_traced(c, &t, nr, ret, NULL, false, false);
}

/* The tp_btf exits. Where the syscall's enter is, most likely first:
 *   - in kspan_sys_cur's entry: entered on this CPU and not switched out
 *     since (filtered at its enter, see struct sys_current);
 *   - parked in the thread's array slot, or in the spill-over, with the
 *     thread and its trace level from kspan_sys_cur (or from the kernel
 *     until the CPU's first switch, or the per-tgid cache for an older
 *     filter).
 * One inlined copy of the exit for all three, so the program stays small
 * and its hot path short for the instruction cache: send() and the like
 * run microseconds of kernel code between enter and exit.
 * (Not a subprogram: with the path record's, three frames would exceed the
 * 512 bytes of stack that kernels before private stacks (6.13) allow a
 * call chain.) */
static __always_inline int sys_exit_btf(struct pt_regs *regs, long ret, bool direct)
{
	__u32 zero = 0;
	struct sys_current *cur = bpf_map_lookup_elem(&kspan_sys_cur, &zero);
	if (!cur)
		return 0;
	long nr = regs->orig_ax;
	struct sys_thread t = {};
	struct kspan_syscall_config *c;
	struct in_flight *fl;
	bool spilled = false;
	if (__builtin_expect(cur->fl.tid != 0, 1)) {
		c = sys_config(nr);
		__u64 id = cur->pid_tgid;
		if (!c || !id) {
			cur->fl.tid = 0;
			return 0;
		}
		t.tgid = id >> 32;
		t.tid = (__u32)id;
		if (direct)
			t.task = bpf_rdonly_cast((void *)cur->task,
						 bpf_core_type_id_kernel(struct task_struct));
		fl = &cur->fl;
	} else {
		struct kspan_filter_config *fc = NULL;
		__u64 pid_tgid = 0;
		int level = thread_level(&pid_tgid, &t.task, &fc, true, direct, NULL);
		if (level == KSPAN_TRACE_NONE || !fc)
			return 0;
		c = sys_config(nr);
		if (!c || skipped_wait(c, level))
			return 0;
		/* A futex call other than a wait took no slot at its enter. */
		if ((c->flags & KSPAN_SYSCALL_F_FUTEX_WAIT) && !futex_waits(regs->si))
			return 0;
		t.tgid = pid_tgid >> 32;
		t.tid = (__u32)pid_tgid;
		fl = parked_in_flight(&t.tid, &spilled);
		if (!fl) {
			/* Began before capture started, lost at enter (counted
			 * there), or the process became traced meanwhile; ia32
			 * syscalls are never recorded. */
			if (!thread_is_compat(&t, direct))
				kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_EXIT_NO_ENTER);
			return 0;
		}
	}
	exit_paired(c, fl, &t, nr, ret, regs, true, direct);
	free_in_flight(fl, &t.tid, spilled);
	return 0;
}

/* ---- variant tp_btf: raw_syscalls with BTF-typed arguments ---- */

SEC("tp_btf/sys_enter")
int BPF_PROG(kspan_sys_e_btf, struct pt_regs *regs, long id)
{
	struct kspan_filter_config *fc = NULL;
	struct sys_current *cur = NULL;
	__u64 pid_tgid = 0;
	int level = thread_level(&pid_tgid, NULL, &fc, true, false, &cur);
	if (level == KSPAN_TRACE_NONE)
		return 0;
	struct kspan_syscall_config *c = sys_config(id);
	if (!c)
		return 0;
	/* Both tp_btf exits read the arguments from pt_regs: none stored,
	 * but futex's op and close's fd are needed here. */
	return enter_traced(c, id, pid_tgid, level, regs->di, regs->si, 0, 0, false, cur);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(kspan_sys_x_btf, struct pt_regs *regs, long ret)
{
	return sys_exit_btf(regs, ret, false);
}

/* The loader's choice over kspan_sys_x_btf where the kernel has bpf_rdonly_cast. */
SEC("tp_btf/sys_exit")
int BPF_PROG(kspan_sys_x_ptr, struct pt_regs *regs, long ret)
{
	return sys_exit_btf(regs, ret, true);
}

/* ---- variant raw_tp: raw_syscalls, arguments through probe reads ---- */

SEC("raw_tp/sys_enter")
int kspan_sys_e_raw(struct bpf_raw_tracepoint_args *ctx)
{
	long id = (long)ctx->args[1];
	struct kspan_syscall_config *c = sys_config(id);
	if (!c)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct kspan_filter_config *fc = NULL;
	int level = sys_level(pid_tgid >> 32, &fc);
	if (level == KSPAN_TRACE_NONE)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	return enter_traced(c, id, pid_tgid, level, BPF_CORE_READ(regs, di),
			    BPF_CORE_READ(regs, si), BPF_CORE_READ(regs, dx),
			    BPF_CORE_READ(regs, r10), true, NULL);
}

SEC("raw_tp/sys_exit")
int kspan_sys_x_raw(struct bpf_raw_tracepoint_args *ctx)
{
	/* The syscall number costs a probe read here: the process first. */
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct kspan_filter_config *fc = NULL;
	struct sys_thread t = {.tgid = pid_tgid >> 32, .tid = (__u32)pid_tgid};
	int level = sys_level(t.tgid, &fc);
	if (level == KSPAN_TRACE_NONE || !fc)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	long nr = BPF_CORE_READ(regs, orig_ax);
	struct kspan_syscall_config *c = sys_config(nr);
	if (!c || skipped_wait(c, level))
		return 0;
	return sys_exit_traced(c, &t, nr, (long)ctx->args[1], NULL, false, false);
}

/* ---- variant tracepoint: the classic raw_syscalls:sys_enter/sys_exit ---- */

SEC("tracepoint/raw_syscalls/sys_enter")
int kspan_sys_e_tp(struct trace_event_raw_sys_enter *ctx)
{
	long id = ctx->id;
	struct kspan_syscall_config *c = sys_config(id);
	if (!c)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct kspan_filter_config *fc = NULL;
	int level = sys_level(pid_tgid >> 32, &fc);
	if (level == KSPAN_TRACE_NONE)
		return 0;
	__u64 a0 = ctx->args[0], a1 = ctx->args[1], a2 = ctx->args[2], a3 = ctx->args[3];
	return enter_traced(c, id, pid_tgid, level, a0, a1, a2, a3, true, NULL);
}

SEC("tracepoint/raw_syscalls/sys_exit")
int kspan_sys_x_tp(struct trace_event_raw_sys_exit *ctx)
{
	long id = ctx->id;
	long ret = ctx->ret;
	return sys_exit_common(id, ret);
}

/* ---- the host-wide slow-syscall watch on sched_switch (tp_btf, 6.x) ----
 *
 * A process that is not selected (KSPAN_TRACE_SLOW_ONLY) has its slow
 * syscalls recorded without a program on the syscall path: a syscall that
 * is slow because it waits leaves the CPU. At every context switch the
 * thread leaving the CPU (prev) is looked at: if it is inside a configured
 * syscall (its user pt_regs' orig_ax; interrupts and exceptions from user
 * mode store -1 there), that syscall and the time go into the thread's slot
 * of kspan_sys_wait. When the thread comes back (next), a wait at least as
 * long as the slow threshold (and the syscall's own minimum) becomes a
 * record with KSPAN_SYSCALL_EV_OFF_CPU: start = switched out, end = back on
 * a CPU; the syscall has not returned, so there is no return value.
 *
 * What it cannot see: a syscall slow on the CPU without leaving it, and a
 * syscall whose waits are each shorter than the threshold however long
 * they add up to. Selecting the process records every syscall from enter
 * to exit (docs/syscalls.md). Waits of class WAIT (futex, epoll_wait, poll,
 * nanosleep, ...) are not recorded for these processes, as before.
 *
 * Needs bpf_task_pt_regs (5.15+); the loader loads it only where kernel BTF
 * has that helper, and otherwise leaves the watch to the enter and exit
 * programs (slow_by_switch 0). */

#define PF_IO_WORKER 0x00000010 /* io_uring workers: user threads without a syscall of their own */
#define PF_KTHREAD 0x00200000

/* A thread switched out inside a configured syscall. */
struct off_cpu {
	/* When it left the CPU: the sched_switch watch's monotonic clock (the
	 * thread may come back on another CPU, whose run queue clock need not
	 * agree: it does not where the TSC is unstable, as in emulated
	 * guests); the scan's run queue clock of the pass (switch_clock). */
	__u64 out;
	__u32 tid; /* owner of the slot; 0: free */
	__u16 nr;
	__u8 kind; /* the scan's: what the fd was while it waited (0: not known) */
	__u8 pad;
	__u64 args[4];
	__u64 file; /* the scan's: the struct file of the fd then */
	/* The scan's (kspan_sys_scan) view of the thread when it first saw the
	 * wait: how often it had come onto a CPU, how long it had run and waited
	 * to run; and the run queue clock of the last scan that saw it
	 * still waiting. */
	__u64 sum0;
	__u64 delay0;
	__u64 seen;
	__u32 pcount0;
	__u32 pad2;
};

/* One slot per thread, tid & infl_mask, as kspan_sys_infl. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 32768); /* resized by the loader */
	__type(key, __u32);
	__type(value, struct off_cpu);
} kspan_sys_wait SEC(".maps");

/* The scan's clock: the clock of this CPU's run queue, which __schedule()
 * has just updated (sched_clock, the same on every CPU only where the TSC
 * is stable; the sched_switch watch, whose waits end on another CPU than
 * they began, takes the monotonic clock instead), reached through `t`, the
 * task leaving or entering this CPU (its CFS run queue's rq: three loads, no helper; the per-CPU
 * `runqueues` symbol would need kallsyms of data, which kernels without
 * CONFIG_KALLSYMS_ALL refuse); else the monotonic clock (a helper call,
 * some 45 ns here). Only differences are taken. */
static __always_inline __u64 switch_clock(struct task_struct *t)
{
	if (bpf_core_field_exists(t->se.cfs_rq) && bpf_core_field_exists(struct cfs_rq, rq)) {
		struct cfs_rq *cfs = t->se.cfs_rq;
		struct rq *rq = cfs ? cfs->rq : NULL;
		if (rq)
			return rq->clock;
	}
	return bpf_ktime_get_ns();
}

/* Every field of an OFF_CPU record but a path, each written once. */
static __always_inline void fill_off_cpu(struct kspan_syscall_event *e, struct task_struct *task,
					 __u32 tgid, const struct off_cpu *w,
					 const struct kspan_syscall_config *c, __u32 fd, struct file *f,
					 __u8 kind, __u64 end, __u64 waited)
{
	e->type = KSPAN_EVENT_SYSCALL;
	e->pid = tgid;
	e->tid = w->tid;
	e->nr = w->nr;
	e->syscall_class = kind == KSPAN_FD_SOCKET ? KSPAN_SYSCALL_CLASS_SOCKET_IO : c->syscall_class;
	e->trace_level = KSPAN_TRACE_SLOW_ONLY;
	e->start_ns = end - waited;
	e->end_ns = end;
	e->ret = 0;
	e->args[0] = w->args[0];
	e->args[1] = w->args[1];
	e->args[2] = w->args[2];
	e->args[3] = w->args[3];
	e->fd = fd;
	e->fd_kind = kind;
	e->path_len = 0;
	e->path_source = KSPAN_PATH_NONE;
	e->flags = KSPAN_SYSCALL_EV_OFF_CPU;
	BPF_CORE_READ_INTO(&e->comm, task, comm);
	sock_fields_none(e);
	if (kind == KSPAN_FD_SOCKET && f)
		fill_socket(e, f);
}

/* The record of a wait `waited` ns long that ended at `end` (monotonic
 * clock), of thread `task` (not the current task: next at a switch, whose
 * fd table is not prev's; any thread in the scan). Out of line: it runs once
 * per slow syscall, not per switch or per thread scanned. `preemptible`:
 * the caller may be preempted (the scan's iterator runs with migration,
 * not preemption, disabled), so the record goes to the ring buffer, whose
 * reserve takes a lock, never to this CPU's record ring, whose single
 * writer per CPU another program could interleave with. */
static __noinline int off_cpu_record(struct task_struct *task, const struct off_cpu *w,
				     __u64 end, __u64 waited, bool preemptible)
{
	struct kspan_syscall_config *c = sys_config(w->nr);
	if (!c)
		return 0;
	enum sys_keep keep = keep_record(c, KSPAN_TRACE_SLOW_ONLY, waited);
	if (keep == SYS_SKIP)
		return 0;
	/* The fd of a syscall that returns one (accept, openat) is not known
	 * yet. */
	__u32 fd = KSPAN_SYSCALL_NO_FD;
	struct file *f = NULL;
	if (c->flags & (KSPAN_SYSCALL_F_FD_ARG0 | KSPAN_SYSCALL_F_FD_AT_ENTER)) {
		fd = (__u32)w->args[0];
		f = fd_file_of(task, fd);
	}
	__u8 kind = file_kind(f);
	if (w->kind && (__u64)f != w->file) {
		/* A wait the scan found over after the syscall returned: the fd
		 * may be closed or another file now. What it was during the
		 * wait, without the details. */
		f = NULL;
		kind = w->kind;
	}
	if (keep == SYS_KEEP_IF_SOCKET && kind != KSPAN_FD_SOCKET) {
		kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_BELOW_THRESHOLD);
		return 0;
	}
	__u32 tgid = BPF_CORE_READ(task, tgid);
	/* Two paths to the end, not one joined on `pe`: 6.1's verifier cannot
	 * tell that a reserved record is not NULL at a later check, and would
	 * follow the per-CPU ring's commit with no ring. */
	if (kind == KSPAN_FD_FILE && f) {
		struct kspan_syscall_path_event *pe =
			bpf_ringbuf_reserve(&kspan_sys_ring, sizeof(*pe), 0);
		if (!pe) {
			kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_RING_FULL);
			return 0;
		}
		fill_off_cpu(&pe->ev, task, tgid, w, c, fd, f, kind, end, waited);
		fill_path(pe, tgid, fd, f);
		submit(pe);
		return 0;
	}
	if (preemptible) {
		struct kspan_syscall_event *re = bpf_ringbuf_reserve(&kspan_sys_ring, sizeof(*re), 0);
		if (!re) {
			kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_RING_FULL);
			return 0;
		}
		fill_off_cpu(re, task, tgid, w, c, fd, f, kind, end, waited);
		submit(re);
		return 0;
	}
	struct kspan_percpu_pos *pos = NULL;
	struct kspan_syscall_event *e = rec_reserve(&pos);
	if (!e || !pos)
		return 0;
	fill_off_cpu(e, task, tgid, w, c, fd, f, kind, end, waited);
	rec_commit(pos);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(kspan_sys_slow, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 now = 0;
	/* next: back from a wait inside a syscall? */
	__u32 ntid = next->pid;
	if (ntid) {
		__u32 idx = ntid & infl_mask;
		struct off_cpu *w = bpf_map_lookup_elem(&kspan_sys_wait, &idx);
		if (w && w->tid == ntid) {
			now = bpf_ktime_get_ns();
			__u64 waited = now - w->out;
			__u32 zero = 0;
			struct kspan_filter_config *fc = bpf_map_lookup_elem(&kspan_cfg, &zero);
			if (fc && fc->slow_threshold_ns && waited >= fc->slow_threshold_ns) {
				/* Copied before the slot is freed (a thread sharing
				 * it may take it on another CPU). */
				struct off_cpu copy = *w;
				w->tid = 0;
				off_cpu_record(next, &copy, bpf_ktime_get_ns(), waited, false);
			} else {
				w->tid = 0;
			}
		}
	}
	/* prev: leaving the CPU inside a syscall of a process watched for
	 * slow syscalls only? (pid 0: the idle task.) */
	__u32 ptid = prev->pid;
	if (!ptid || (prev->flags & (PF_KTHREAD | PF_IO_WORKER)))
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(prev);
	if (!regs)
		return 0;
	long nr = regs->orig_ax;
	struct kspan_syscall_config *c = sys_config(nr);
	if (!c || c->syscall_class == KSPAN_SYSCALL_CLASS_WAIT)
		return 0;
	/* The level of prev's process; prev is still the current task, whose
	 * cgroup and comm the filter reads on a cache miss. Selected processes
	 * are the enter and exit programs'. */
	struct kspan_filter_config *fc = NULL;
	if (kspan_cached_trace_level(&kspan_sys_lvl, prev->tgid, &fc) != KSPAN_TRACE_SLOW_ONLY)
		return 0;
	if (prev->thread_info.status & TS_COMPAT)
		return 0;
	__u32 idx = ptid & infl_mask;
	struct off_cpu *w = bpf_map_lookup_elem(&kspan_sys_wait, &idx);
	if (!w)
		return 0;
	if (w->tid && w->tid != ptid) {
		/* Another thread's slot (pid_max above the slots): not watched. */
		kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_ENTER_NO_SLOT);
		return 0;
	}
	w->out = now ? now : bpf_ktime_get_ns();
	w->nr = (__u16)nr;
	w->args[0] = regs->di;
	w->args[1] = regs->si;
	w->args[2] = regs->dx;
	w->args[3] = regs->r10;
	w->tid = ptid;
	return 0;
}

/* ---- the host-wide slow-syscall watch by scan (iter/task, 5.15+) ----
 *
 * The same promise as kspan_sys_slow with no program on any per-event path:
 * the agent runs this task iterator every scan interval (at most the slow
 * threshold, so no wait that long falls between two scans), and it looks at
 * every user thread of the host once. A thread asleep (off its run queue)
 * inside a configured syscall of a process watched for slow syscalls only
 * takes its slot of kspan_sys_wait, with the scheduler's own counters of it
 * at that moment (struct off_cpu). As long as later scans find it has not
 * come onto a CPU since (sched_info.pcount unchanged), the wait goes on; when
 * one finds it has, the wait is over, and its length comes from the
 * scheduler's clocks, not from when the scans happened to look:
 *
 *   left the CPU  = last_arrival + (sum_exec_runtime - prev_sum_exec_runtime)
 *                   at the first scan: the start of its last run plus how
 *                   long that run was;
 *   woken         = last_arrival - (run_delay - delay0)
 *                                - (prev_sum_exec_runtime - sum0)
 *                   at the scan that finds it over: its latest arrival on a
 *                   CPU less the time it has since waited on a run queue and
 *                   run before that arrival; exact when it has not slept
 *                   again in between (a sleep it is in now comes after that
 *                   arrival), else late by those sleeps (typically short:
 *                   the thread woke, slept briefly, and ran on), and never
 *                   earlier than the last scan that saw it asleep.
 *
 * Both are run queue clock (sched_clock) times, converted to the monotonic
 * clock by the offset between the two that each scan measures as it starts
 * (this CPU's run queue clock, which the agent's own wake-up just updated).
 * The record is the sched_switch watch's (KSPAN_SYSCALL_EV_OFF_CPU, no
 * return value), emitted up to one scan interval after the wait ended, or
 * when the thread exits before that scan (kspan_sys_gone, from the exiting
 * thread's own counters). Needs CONFIG_SCHED_INFO (Debian's kernels have
 * it; elsewhere the CO-RE relocations fail the load and the loader takes
 * the sched_switch watch) and bpf_task_pt_regs (5.15+).
 *
 * What it cannot see, beyond the sched_switch watch's limits: a wait that
 * began and ended between two scans (shorter than the interval, which is at
 * most the threshold). What it costs is the agent's: an array read and a
 * few loads per thread of the host per scan; no other process pays
 * anything. */

#define TASK_INTERRUPTIBLE 0x0001
#define TASK_UNINTERRUPTIBLE 0x0002

/* The fields older kernels named otherwise (task_struct::state before 5.14). */
struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline unsigned int task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return BPF_CORE_READ(t, __state);
	return (unsigned int)BPF_CORE_READ((struct task_struct___pre514 *)t, state);
}

/* Asleep inside the kernel: off its run queue, in an interruptible or
 * uninterruptible sleep (a stopped or traced thread is neither). */
static __always_inline bool task_asleep(struct task_struct *t)
{
	return !BPF_CORE_READ(t, on_rq) &&
	       (task_state(t) & (TASK_INTERRUPTIBLE | TASK_UNINTERRUPTIBLE));
}

/* 1: the slow-syscall watch is the scan (the loader sets it). */
const volatile __u8 slow_by_scan = 0;

/* The monotonic clock less the run queue clock, measured as the latest scan
 * started; 0 before the first. */
__u64 scan_mono_off = 0;

/* The wait in slot `w` of `task` is over (`now`: the run queue clock):
 * record it when long enough. Probe reads only: `task` is also the exiting
 * thread of kspan_sys_gone, an untyped pointer there. */
static __noinline int scan_wait_over(struct task_struct *task, struct off_cpu *w, __u64 now)
{
	__u64 off = scan_mono_off;
	if (!off)
		return 0;
	__u64 arrival = BPF_CORE_READ(task, sched_info.last_arrival);
	__u64 delay = BPF_CORE_READ(task, sched_info.run_delay);
	__u64 prev_sum = BPF_CORE_READ(task, se.prev_sum_exec_runtime);
	__u64 ran = prev_sum > w->sum0 ? prev_sum - w->sum0 : 0;
	__u64 queued = delay > w->delay0 ? delay - w->delay0 : 0;
	__u64 woken = arrival > ran + queued ? arrival - ran - queued : 0;
	if (woken < w->seen)
		woken = w->seen; /* asleep then; prev_sum not kept (RT class)? */
	if (woken > now)
		woken = now;
	if (woken <= w->out)
		return 0;
	__u64 waited = woken - w->out;
	__u32 zero = 0;
	struct kspan_filter_config *fc = bpf_map_lookup_elem(&kspan_cfg, &zero);
	if (!fc || !fc->slow_threshold_ns || waited < fc->slow_threshold_ns)
		return 0;
	struct off_cpu copy = *w;
	return off_cpu_record(task, &copy, woken + off, waited, true);
}

/* One thread of a pass (`now`: the run queue clock). */
static __always_inline void scan_task(struct task_struct *task, __u64 now)
{
	__u32 tid = task->pid;
	if (!tid || (task->flags & (PF_KTHREAD | PF_IO_WORKER)))
		return;
	__u32 idx = tid & infl_mask;
	struct off_cpu *w = bpf_map_lookup_elem(&kspan_sys_wait, &idx);
	if (!w)
		return;
	__u32 pcount = (__u32)BPF_CORE_READ(task, sched_info.pcount);
	if (w->tid == tid) {
		if (w->pcount0 == pcount) {
			/* Not on a CPU since: the same wait goes on (still
			 * asleep now, or woken and waiting for a CPU). */
			if (task_asleep(task))
				w->seen = now;
			return;
		}
		scan_wait_over(task, w, now);
		w->tid = 0;
	}
	/* A new wait? Asleep inside a configured syscall that is not an idle
	 * wait, of a process watched for slow syscalls only. */
	if (!task_asleep(task))
		return;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	if (!regs)
		return;
	long nr = BPF_CORE_READ(regs, orig_ax);
	struct kspan_syscall_config *c = sys_config(nr);
	if (!c || c->syscall_class == KSPAN_SYSCALL_CLASS_WAIT)
		return;
	struct kspan_filter_config *fc = NULL;
	if (kspan_cached_trace_level_of(&kspan_sys_lvl, task->tgid, task, &fc) !=
	    KSPAN_TRACE_SLOW_ONLY)
		return;
	if (task->thread_info.status & TS_COMPAT)
		return;
	if (w->tid && w->tid != tid) {
		kspan_count(&kspan_sys_stats, KSPAN_SYS_STAT_ENTER_NO_SLOT);
		return;
	}
	__u64 arrival = BPF_CORE_READ(task, sched_info.last_arrival);
	__u64 sum = BPF_CORE_READ(task, se.sum_exec_runtime);
	__u64 prev_sum = BPF_CORE_READ(task, se.prev_sum_exec_runtime);
	__u64 out = arrival + (sum > prev_sum ? sum - prev_sum : 0);
	w->out = out < now ? out : now;
	w->seen = now;
	w->sum0 = sum;
	w->delay0 = BPF_CORE_READ(task, sched_info.run_delay);
	w->pcount0 = pcount;
	w->nr = (__u16)nr;
	w->kind = 0;
	w->file = 0;
	if (c->flags & (KSPAN_SYSCALL_F_FD_ARG0 | KSPAN_SYSCALL_F_FD_AT_ENTER)) {
		struct file *f = fd_file_of(task, (__u32)BPF_CORE_READ(regs, di));
		w->file = (__u64)f;
		w->kind = file_kind(f);
	}
	w->args[0] = BPF_CORE_READ(regs, di);
	w->args[1] = BPF_CORE_READ(regs, si);
	w->args[2] = BPF_CORE_READ(regs, dx);
	w->args[3] = BPF_CORE_READ(regs, r10);
	w->tid = tid;
}

/* The run queue clock at the start of a pass, and the offset of the
 * monotonic clock from it: the agent has just come onto this CPU for the
 * pass, so the run queue clock is fresh. */
static __always_inline __u64 scan_start(void)
{
	__u64 mono = bpf_ktime_get_ns();
	__u64 rq = switch_clock(bpf_get_current_task_btf());
	scan_mono_off = mono - rq;
	return rq;
}

/* The whole pass in one run (6.7+): the loader attaches it to iterate the
 * agent's main thread only, and it walks every thread of the host with the
 * open-coded task iterator, under RCU, without the seq_file iterator's cost
 * per task (a pid lookup and a reference taken and dropped: some 500 ns a
 * thread here, against some 100 ns for the walk and the checks). */
extern int bpf_iter_task_new(struct bpf_iter_task *it, struct task_struct *task,
			     unsigned int flags) __weak __ksym;
extern struct task_struct *bpf_iter_task_next(struct bpf_iter_task *it) __weak __ksym;
extern void bpf_iter_task_destroy(struct bpf_iter_task *it) __weak __ksym;

SEC("iter/task")
int kspan_sys_scan(struct bpf_iter__task *ctx)
{
	if (!ctx->task)
		return 0;
	__u64 now = scan_start();
	struct bpf_iter_task it;
	struct task_struct *t;
	bpf_iter_task_new(&it, NULL, BPF_TASK_ITER_ALL_THREADS);
	while ((t = bpf_iter_task_next(&it)))
		scan_task(t, now);
	bpf_iter_task_destroy(&it);
	return 0;
}

/* The same pass, one run per thread of the seq_file task iterator
 * (5.15-6.6: no open-coded iterator). */
SEC("iter/task")
int kspan_sys_scant(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	if (!task)
		return 0;
	__u64 now = ctx->meta->seq_num == 0 ? scan_start()
					    : switch_clock(bpf_get_current_task_btf());
	scan_task(task, now);
	return 0;
}

/* ---- level cache invalidation, on every variant ---- */

static __always_inline int forget_level(void)
{
	kspan_forget_cached_level(&kspan_sys_lvl);
	return 0;
}

/* A thread that exits frees its in-flight slot (it never returns from a
 * syscall it was in, such as a futex wait cut short by exit_group). */
static __always_inline void forget_thread(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 idx = tid & infl_mask;
	struct in_flight *slot = bpf_map_lookup_elem(&kspan_sys_infl, &idx);
	if (slot && slot->tid == tid)
		slot->tid = 0;
	bpf_map_delete_elem(&kspan_sys_spill, &tid);
	/* A wait the slow watch saw begin and will not see end: the scan's
	 * ended before the exit (a process that blocked, then exited before the
	 * next scan); the sched_switch watch's was detached in between. */
	struct off_cpu *w = bpf_map_lookup_elem(&kspan_sys_wait, &idx);
	if (w && w->tid == tid) {
		if (slow_by_scan) {
			__u64 off = scan_mono_off;
			if (off)
				scan_wait_over((struct task_struct *)bpf_get_current_task(), w,
					       bpf_ktime_get_ns() - off);
		}
		w->tid = 0;
	}
}

/* A syscall of `prev` between its enter and exit, kept in `cur` (see
 * struct sys_current), moves to prev's in-flight slot (or the spill-over)
 * as prev leaves the CPU: its exit may run on another. */
static __always_inline void park_syscall(struct sys_current *cur, struct task_struct *prev)
{
	__u32 tid = cur->fl.tid;
	cur->fl.tid = 0;
	/* Not prev's: the entry was stale (cannot happen while the switch
	 * program runs at every switch); its exit counts it as unpaired. */
	if (cur->task != (__u64)prev || tid != (__u32)prev->pid)
		return;
	struct in_flight *slot = claim_slot(tid);
	if (slot) {
		/* Claimed before it is filled, as at enter (enter_traced). */
		slot->tid = tid;
		slot->start_ns = cur->fl.start_ns;
		slot->file = cur->fl.file;
		slot->nr = cur->fl.nr;
		slot->level = cur->fl.level;
		return;
	}
	struct in_flight fl = cur->fl;
	fl.tid = tid;
	spill_in_flight(&fl);
}

/* The thread that runs on this CPU from now on (tp_btf variant only). */
SEC("tp_btf/sched_switch")
int BPF_PROG(kspan_sys_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u32 zero = 0;
	struct sys_current *cur = bpf_map_lookup_elem(&kspan_sys_cur, &zero);
	if (cur) {
		if (cur->fl.tid)
			park_syscall(cur, prev);
		__u32 tgid = next->tgid;
		__u32 *level = bpf_map_lookup_elem(&kspan_sys_lvl, &tgid);
		cur->task = (__u64)next;
		cur->pid_tgid = ((__u64)tgid << 32) | (__u32)next->pid;
		cur->level = level ? *level : 0;
	}
	return 0;
}

/* exec changes comm (and is where containers' processes enter their cgroup);
 * a thread other than the leader that execs takes the leader's thread id. */
SEC("tracepoint/sched/sched_process_exec")
int kspan_sys_exec(void *ctx)
{
	__u32 zero = 0;
	struct sys_current *cur = bpf_map_lookup_elem(&kspan_sys_cur, &zero);
	if (cur && cur->task) {
		cur->task = bpf_get_current_task();
		cur->pid_tgid = bpf_get_current_pid_tgid();
		cur->level = 0; /* comm, cgroup, maybe the tgid have changed */
	}
	return forget_level();
}

/* A tgid freed now may be reused by another process. */
SEC("tracepoint/sched/sched_process_exit")
int kspan_sys_gone(void *ctx)
{
	forget_thread();
	/* Nothing of the exiting thread stays on this CPU either (it exits
	 * from exit_group or a signal, outside any traced syscall, so this
	 * only guards against a lost exit). */
	__u32 zero = 0;
	struct sys_current *cur = bpf_map_lookup_elem(&kspan_sys_cur, &zero);
	if (cur)
		cur->fl.tid = 0;
	return forget_level();
}
