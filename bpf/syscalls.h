/* Syscall program family: per-syscall configuration, the records
 * bpf/syscalls.bpf.c writes to its ring buffer and the indices of its stats
 * map. Shared with userspace (userspace/syscall_capture, event_decoder,
 * syscall_spans): fixed-width fields only, explicit padding.
 */
#ifndef KSPAN_BPF_SYSCALLS_H
#define KSPAN_BPF_SYSCALLS_H

#include "bpf/kspan_common.h"

/* x86_64 syscall numbers below this index the config array kspan_sys_cfg. */
#define KSPAN_SYSCALL_NR_MAX 512

/* Longest path carried in a record (including the terminating NUL). */
#define KSPAN_SYSCALL_PATH_MAX 256

/* Why a syscall is interesting; each class has its own minimum duration for
 * traced processes (userspace folds it into the per-syscall min_duration_ns). */
enum kspan_syscall_class {
	KSPAN_SYSCALL_CLASS_OTHER = 0,
	KSPAN_SYSCALL_CLASS_FILE_IO = 1,
	KSPAN_SYSCALL_CLASS_SOCKET_IO = 2,
	KSPAN_SYSCALL_CLASS_WAIT = 3,
	KSPAN_SYSCALL_CLASS_MAX,
};

/* kspan_syscall_config.flags: how to read the syscall's arguments. */
enum kspan_syscall_flag {
	KSPAN_SYSCALL_F_FD_ARG0 = 1 << 0,      /* args[0] is an fd, resolved at exit */
	KSPAN_SYSCALL_F_FD_RET = 1 << 1,       /* the return value is a new fd (accept, openat) */
	KSPAN_SYSCALL_F_FD_AT_ENTER = 1 << 2,  /* resolve args[0] at enter: gone at exit (close) */
	KSPAN_SYSCALL_F_PATH_ARG1 = 1 << 3,    /* args[1] is a user path (openat): remembered per fd */
	KSPAN_SYSCALL_F_FUTEX_WAIT = 1 << 4,   /* futex: only the wait operations */
};

/* Value of the array kspan_sys_cfg, indexed by syscall number. Changed at run
 * time by userspace (SyscallCapture) or with bpftool. */
struct kspan_syscall_config {
	__u8 enabled;          /* 0: the programs return at once */
	__u8 syscall_class;    /* enum kspan_syscall_class */
	__u8 flags;            /* enum kspan_syscall_flag */
	__u8 pad0[5];
	__u64 min_duration_ns; /* fully traced processes: record only when at least this slow */
	__u64 socket_min_ns;   /* the same when the fd is a socket (read/write on sockets are
				* socket I/O; a traced process's socket I/O is always wanted) */
};

/* What an fd refers to, from the inode mode of task->files->fdt->fd[fd]. */
enum kspan_fd_kind {
	KSPAN_FD_NONE = 0,   /* the syscall has no fd, or it could not be resolved */
	KSPAN_FD_FILE = 1,   /* regular file or directory */
	KSPAN_FD_SOCKET = 2,
	KSPAN_FD_PIPE = 3,   /* pipe or FIFO */
	KSPAN_FD_OTHER = 4,  /* character device, eventfd, epoll, timerfd, ... */
};

/* Where the path of a file record comes from. */
enum kspan_path_source {
	KSPAN_PATH_NONE = 0,
	KSPAN_PATH_OPENAT = 1, /* the name passed to openat (as given: may be relative) */
	KSPAN_PATH_DENTRY = 2, /* the file's dentry name only (its last component) */
};

#define KSPAN_SYSCALL_NO_FD 0xffffffffu

/* kspan_syscall_event.flags. */
enum kspan_syscall_event_flag {
	/* From the host-wide slow-syscall watch on sched_switch: the thread
	 * waited off the CPU inside the syscall from start_ns (switched out)
	 * to end_ns (switched back in). The syscall had not returned yet: ret
	 * is 0 and means nothing. */
	KSPAN_SYSCALL_EV_OFF_CPU = 1 << 0,
};

/* One syscall, enter to exit. Followed by KSPAN_SYSCALL_PATH_MAX bytes of
 * path when the record is a struct kspan_syscall_path_event (path_len > 0 or
 * fd kind file); the ring record's size says which. */
struct kspan_syscall_event {
	__u32 type;          /* KSPAN_EVENT_SYSCALL */
	__u32 pid;           /* tgid */
	__u32 tid;
	__u16 nr;            /* x86_64 syscall number */
	__u8 syscall_class;  /* enum kspan_syscall_class */
	__u8 trace_level;    /* enum kspan_trace_level at enter (FULL or SLOW_ONLY) */
	__u64 start_ns;      /* CLOCK_MONOTONIC at sys_enter (KSPAN_SYSCALL_EV_OFF_CPU: switched out) */
	__u64 end_ns;        /* CLOCK_MONOTONIC at sys_exit (KSPAN_SYSCALL_EV_OFF_CPU: back on a CPU) */
	__u64 ret;           /* the raw return value, as a signed long: -errno on failure */
	__u64 args[4];       /* the first four raw arguments */
	__u32 fd;            /* the fd described below, or KSPAN_SYSCALL_NO_FD */
	__u8 fd_kind;        /* enum kspan_fd_kind */
	__u8 family;         /* sockets: AF_INET, AF_INET6, AF_UNIX, ... */
	__u8 sock_type;      /* sockets: SOCK_STREAM, SOCK_DGRAM, ... */
	__u8 protocol;       /* sockets: IPPROTO_TCP, IPPROTO_UDP, ... */
	__u16 sport;         /* local port, host byte order */
	__u16 dport;         /* peer port, host byte order */
	__u16 path_len;      /* bytes of path before its NUL; 0: none */
	__u8 path_source;    /* enum kspan_path_source */
	__u8 flags;          /* enum kspan_syscall_event_flag */
	__u8 saddr[16];      /* local address; IPv4 in the first 4 bytes */
	__u8 daddr[16];      /* peer address */
	char comm[KSPAN_COMM_LEN];
};

struct kspan_syscall_path_event {
	struct kspan_syscall_event ev;
	char path[KSPAN_SYSCALL_PATH_MAX];
};

/* Per-CPU counters of the syscall family (map kspan_sys_stats, pinned). */
enum kspan_sys_stat {
	KSPAN_SYS_STAT_EMITTED = 0,      /* records submitted to the ring */
	KSPAN_SYS_STAT_RING_FULL,        /* bpf_ringbuf_reserve failed: record lost */
	KSPAN_SYS_STAT_ENTER_NO_SLOT,    /* in-flight map full at enter: syscall lost */
	KSPAN_SYS_STAT_EXIT_NO_ENTER,    /* exit of a traced process without its enter */
	KSPAN_SYS_STAT_BELOW_THRESHOLD,  /* paired, but faster than its minimum: not recorded */
	KSPAN_SYS_STAT_PATH_TABLE_FULL,  /* openat path not remembered */
	KSPAN_SYS_STAT_MAX,
};

#endif /* KSPAN_BPF_SYSCALLS_H */
