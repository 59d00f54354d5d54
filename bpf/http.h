/* HTTP/1.x program family: request and status lines, and the W3C trace
 * context headers, read from the data of TCP socket syscalls of the
 * processes traced in full. Shared with userspace (http_capture, http_spans).
 *
 * Sampling, in the kernel, before a record is written: a request whose
 * traceparent is sampled is always recorded, one whose traceparent is not
 * sampled never is, and requests without trace context (roots) are recorded
 * up to a rate per process (the loader's root_per_second; 0: all). A request
 * not recorded takes its response, header continuations and body data with
 * it, so userspace pairs what it gets as it would pair everything.
 *
 * Only these leave the kernel: the method, the request target (cut at
 * KSPAN_HTTP_PATH_MAX), the status code, the values of `traceparent` and
 * `tracestate`, and where the header block ends. No other header or body
 * byte is copied into a record.
 */
#ifndef KSPAN_BPF_HTTP_H
#define KSPAN_BPF_HTTP_H

#include "bpf/kspan_common.h"

#define KSPAN_HTTP_WINDOW 4096       /* bytes of one syscall's data scanned (a power of two) */
#define KSPAN_HTTP_MAX_LINES 64      /* header lines looked at per syscall (a power of two) */
#define KSPAN_HTTP_MAX_MESSAGES 4    /* pipelined messages recorded per syscall */
#define KSPAN_HTTP_METHOD_MAX 8
#define KSPAN_HTTP_PATH_MAX 128
#define KSPAN_HTTP_TRACEPARENT_MAX 64  /* version 00 is 55 characters */
#define KSPAN_HTTP_TRACESTATE_MAX 256  /* W3C allows 512: longer values are cut and flagged */

enum kspan_http_kind {
	KSPAN_HTTP_REQUEST = 1,  /* a request line starts in this syscall's data */
	KSPAN_HTTP_RESPONSE = 2, /* a status line starts in this syscall's data */
	KSPAN_HTTP_HEADERS = 3,  /* more header lines of the previous message in this direction */
	KSPAN_HTTP_DATA = 4,     /* other data on an HTTP stream (bodies): times and bytes only */
	KSPAN_HTTP_CLOSE = 5,    /* the process closed an HTTP socket */
};

enum kspan_http_direction {
	KSPAN_HTTP_READ = 1,  /* read, readv, recvfrom, recvmsg */
	KSPAN_HTTP_WRITE = 2, /* write, writev, sendto, sendmsg */
};

enum kspan_http_flag {
	KSPAN_HTTP_F_HEADERS_END = 1 << 0,         /* header_len is valid: the blank line was seen */
	KSPAN_HTTP_F_PATH_CUT = 1 << 1,            /* the request target was longer than PATH_MAX */
	KSPAN_HTTP_F_TRACEPARENT_CUT = 1 << 2,
	KSPAN_HTTP_F_TRACESTATE_CUT = 1 << 3,
	KSPAN_HTTP_F_LINES_CUT = 1 << 4,           /* more header lines than were looked at */
};

struct kspan_http_event {
	__u32 type;           /* KSPAN_EVENT_HTTP */
	__u32 pid;
	__u32 tid;
	__u8 kind;            /* enum kspan_http_kind */
	__u8 direction;       /* enum kspan_http_direction */
	__u16 flags;          /* enum kspan_http_flag */
	__u64 start_ns;       /* CLOCK_MONOTONIC: syscall enter */
	__u64 end_ns;         /* CLOCK_MONOTONIC: syscall exit */
	__u64 sock_id;        /* struct sock address: the connection, with sock_ino */
	__u64 sock_ino;       /* inode of the socket file: tells a reused sock address apart */
	__u32 syscall_bytes;  /* the syscall's return value */
	__u32 offset;         /* where this message starts in the syscall's data */
	__u32 bytes;          /* bytes of this message carried by this syscall */
	__u32 header_len;     /* with F_HEADERS_END: header bytes of this message in this syscall */
	__u16 family;         /* AF_INET or AF_INET6 */
	__u16 local_port;
	__u16 peer_port;
	__u16 status;         /* RESPONSE: the status code */
	__u8 local_addr[16];
	__u8 peer_addr[16];
	__u8 method_len;
	__u8 path_len;
	__u8 traceparent_len;
	__u8 version_minor;   /* HTTP/1.<minor> of the request or status line */
	__u16 tracestate_len;
	__u16 pad0;
	char method[KSPAN_HTTP_METHOD_MAX];
	char comm[KSPAN_COMM_LEN];
	char path[KSPAN_HTTP_PATH_MAX];
	char traceparent[KSPAN_HTTP_TRACEPARENT_MAX];
	char tracestate[KSPAN_HTTP_TRACESTATE_MAX];
};

enum kspan_http_stat {
	KSPAN_HTTP_STAT_EMITTED = 0,      /* records submitted */
	KSPAN_HTTP_STAT_RING_FULL,        /* records lost: ring buffer full */
	KSPAN_HTTP_STAT_NOT_HTTP,         /* streams whose first bytes were not HTTP (not looked at again) */
	KSPAN_HTTP_STAT_STATE_FULL,       /* socket state could not be stored */
	KSPAN_HTTP_STAT_INFLIGHT_FULL,    /* syscall arguments could not be stored between enter and exit */
	KSPAN_HTTP_STAT_MESSAGES_CUT,     /* pipelined messages beyond KSPAN_HTTP_MAX_MESSAGES in one syscall */
	KSPAN_HTTP_STAT_LINES_CUT,        /* syscalls with more header lines than KSPAN_HTTP_MAX_LINES */
	KSPAN_HTTP_STAT_ROOT_LIMITED,     /* requests without trace context over the root rate: not recorded */
	KSPAN_HTTP_STAT_PARENT_UNSAMPLED, /* requests whose traceparent says not sampled: not recorded */
	KSPAN_HTTP_STAT_MAX,
};

#endif /* KSPAN_BPF_HTTP_H */
