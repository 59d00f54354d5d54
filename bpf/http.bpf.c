// SPDX-License-Identifier: GPL-2.0
/* HTTP/1.x program family: the first bytes of the data that processes traced
 * in full read from and write to TCP sockets, recognised as HTTP request or
 * status lines, with the W3C `traceparent` and `tracestate` header values.
 *
 * Classic syscall tracepoints (syscalls:sys_enter_* / sys_exit_*) so it runs
 * from 5.10 on. On enter the arguments are kept per thread; on exit the data
 * (the first iovec for readv/writev/recvmsg/sendmsg) is copied into a per-CPU
 * scratch buffer, at most KSPAN_HTTP_WINDOW bytes, and scanned:
 *
 *   1. scan_newlines(): the offsets of '\n' (at most KSPAN_HTTP_MAX_LINES),
 *   2. scan_line(): each line in turn through a small state machine (request
 *      or status line, header line, blank line ending the headers); a message
 *      is recorded when its headers end, when the next pipelined message
 *      starts, or when the data ends (headers then continue in the next
 *      syscall on the socket: per-socket state in kspan_http_socks).
 *
 * Both are global functions: the verifier checks each once on its own, so
 * the byte loop costs the same whatever calls it, and every loop is bounded
 * (no bpf_loop, which 5.10 lacks). State lives in the per-CPU scratch map,
 * not in registers, so the verifier's paths through one iteration converge.
 *
 * A stream whose first bytes are not HTTP is marked in the socket state and
 * never looked at again (counted in KSPAN_HTTP_STAT_NOT_HTTP).
 */
#include "bpf/kspan_core.bpf.h"
#include "bpf/fd.bpf.h"
#include "bpf/filter.bpf.h"
#include "bpf/http.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u64 wakeup_bytes = 0; /* see kspan_wakeup_flag() */

#define WINDOW_MASK (KSPAN_HTTP_WINDOW - 1)
#define LINES_MASK (KSPAN_HTTP_MAX_LINES - 1)
/* Fixed-size reads at any offset inside the window stay inside the buffer. */
#define SLACK 512

/* An offset into the scratch window. The barrier keeps clang from dropping
 * the mask where it can prove it redundant: the verifier cannot. */
#define AT(x)                                    \
	({                                       \
		__u32 _at = (x);                 \
		asm volatile("" : "+r"(_at));    \
		_at & WINDOW_MASK;               \
	})

/* A copy length the verifier sees as at most `max` (a power of two). */
#define BOUND(x, max)                            \
	({                                       \
		__u64 _b = (x);                  \
		asm volatile("" : "+r"(_b));     \
		_b &= 2 * (max) - 1;             \
		if (_b > (max))                  \
			_b = (max);              \
		_b;                              \
	})

enum socket_flag {
	SOCK_SEEN = 1 << 0,      /* data seen: later non-HTTP data is a body, not a new stream */
	SOCK_HTTP = 1 << 1,      /* an HTTP message was seen on it */
	SOCK_NOT_HTTP = 1 << 2,  /* first bytes were not HTTP: ignored from now on */
	SOCK_CONT_READ = 1 << 3, /* headers of the last message read continue in the next read */
	SOCK_CONT_WRITE = 1 << 4,
};

struct sock_state {
	__u64 ino;  /* a reused struct sock with another inode starts afresh */
	__u32 flags;
	/* Body bytes (Content-Length) still to come, per direction: the next
	 * message starts after them. */
	__u32 body_left[2];
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_state);
} kspan_http_socks SEC(".maps");

struct inflight {
	__u64 sk;
	__u64 ino;
	__u64 buf;      /* user buffer: the first iovec's base for the vector calls */
	__u64 buf_len;  /* its length (the vector calls), or ~0 */
	__u64 start_ns;
	__u32 direction;
	__u32 pad;
};

/* Socket syscalls in flight per thread, between enter and exit. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct inflight);
} kspan_http_infl SEC(".maps");

struct scan_state {
	__u32 n;           /* bytes copied into buf */
	__u32 ret;         /* the syscall's return value (may exceed n) */
	__u32 nlines;      /* '\n' offsets in nl[] */
	__u32 mode;        /* enum scan_mode */
	__u32 messages;    /* messages started in this syscall */
	__u32 msg_start;   /* offset of the current message */
	__u32 lines_cut;
	__u32 pending;     /* msg holds a message not sent yet */
	__u32 content_length; /* of the current message, 0 when absent */
	__u32 body_end;    /* MODE_READY: where the next message may start */
	__u32 body_left;   /* body bytes of the last message beyond this syscall */
};

enum scan_mode {
	MODE_START = 0,   /* the next line must be a request or status line */
	MODE_HEADERS = 1, /* inside a header block */
	MODE_READY = 2,   /* headers ended; the next message may start at body_end */
	MODE_DONE = 3,    /* nothing more to look at in this data */
};

struct scratch {
	__u8 buf[KSPAN_HTTP_WINDOW + SLACK];
	__u32 nl[KSPAN_HTTP_MAX_LINES];
	struct scan_state st;
	struct kspan_http_event tmpl; /* per syscall: ids, times, addresses */
	struct kspan_http_event msg;  /* the message being built */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} kspan_http_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} kspan_http_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KSPAN_HTTP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_http_stats SEC(".maps");

/* Layout of syscalls:sys_enter_* / sys_exit_* records (tracefs ABI). */
struct sys_enter_args {
	__u64 common;
	long nr;
	unsigned long args[6];
};

struct sys_exit_args {
	__u64 common;
	long nr;
	long ret;
};

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&kspan_http_scratch, &zero);
}

static __always_inline void emit(struct kspan_http_event *e)
{
	if (bpf_ringbuf_output(&kspan_http_ring, e, sizeof(*e),
			       kspan_wakeup_flag(&kspan_http_ring, wakeup_bytes)))
		kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_RING_FULL);
	else
		kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_EMITTED);
}

/* ---- pass 1: line ends -------------------------------------------------- */

#define NL_CHUNK 1024

static __always_inline __u64 load8(const __u8 *p)
{
	__u64 v;
	__builtin_memcpy(&v, p, 8);
	return v;
}

/* Records the offsets of '\n' in buf[from, from + NL_CHUNK). Returns 1 when
 * the line table is full. Eight bytes at a time: a word without a '\n' (the
 * common case) costs one test. */
__noinline int scan_newlines(__u32 from)
{
	struct scratch *s = get_scratch();
	if (!s)
		return 1;
	__u32 n = s->st.n;
	for (__u32 i = 0; i < NL_CHUNK / 8; i++) {
		__u32 pos = from + i * 8;
		if (pos >= n)
			break;
		__u64 w = load8(&s->buf[AT(pos)]);
		__u64 x = w ^ 0x0a0a0a0a0a0a0a0aULL;
		/* Non-zero iff some byte of x is zero, i.e. some byte of w is '\n'. */
		if (!((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL))
			continue;
		for (__u32 b = 0; b < 8; b++) {
			if (pos + b >= n)
				break;
			if (((w >> (8 * b)) & 0xff) != '\n')
				continue;
			__u32 k = s->st.nlines;
			if (k >= KSPAN_HTTP_MAX_LINES) {
				s->st.lines_cut = 1;
				return 1;
			}
			s->nl[k & LINES_MASK] = pos + b;
			s->st.nlines = k + 1;
		}
	}
	return 0;
}

/* ---- pass 2: lines ------------------------------------------------------ */

#define LOWER8 0x2020202020202020ULL

/* Little-endian constants of up to 8 characters. */
#define C8(a, b, c, d, e, f, g, h)                                                        \
	((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16 | (__u64)(d) << 24 |             \
	 (__u64)(e) << 32 | (__u64)(f) << 40 | (__u64)(g) << 48 | (__u64)(h) << 56)

/* Length of the method that starts w (with its trailing space), or 0. */
static __always_inline __u32 method_len(__u64 w)
{
	__u64 w4 = w & 0xffffffffULL, w5 = w & 0xffffffffffULL, w6 = w & 0xffffffffffffULL;
	__u64 w7 = w & 0xffffffffffffffULL;
	if (w4 == C8('G', 'E', 'T', ' ', 0, 0, 0, 0) || w4 == C8('P', 'U', 'T', ' ', 0, 0, 0, 0))
		return 3;
	if (w5 == C8('P', 'O', 'S', 'T', ' ', 0, 0, 0) || w5 == C8('H', 'E', 'A', 'D', ' ', 0, 0, 0))
		return 4;
	if (w6 == C8('P', 'A', 'T', 'C', 'H', ' ', 0, 0) || w6 == C8('T', 'R', 'A', 'C', 'E', ' ', 0, 0))
		return 5;
	if (w7 == C8('D', 'E', 'L', 'E', 'T', 'E', ' ', 0))
		return 6;
	if (w == C8('O', 'P', 'T', 'I', 'O', 'N', 'S', ' ') || w == C8('C', 'O', 'N', 'N', 'E', 'C', 'T', ' '))
		return 7;
	return 0;
}

/* "HTTP/1.0" or "HTTP/1.1": the minor version, or -1. */
static __always_inline int http_version(__u64 w)
{
	if ((w & 0x00ffffffffffffffULL) != C8('H', 'T', 'T', 'P', '/', '1', '.', 0))
		return -1;
	__u8 minor = w >> 56;
	if (minor != '0' && minor != '1')
		return -1;
	return minor - '0';
}

/* Starts a message on line [start, end) (complete: it ends with '\n').
 * Returns 0 when the line is not a request or status line. */
static __always_inline int start_message(struct scratch *s, __u32 start, __u32 end, int complete)
{
	__u32 len = end - start;
	if (len < 12)
		return 0;
	const __u8 *p = &s->buf[AT(start)];
	__u64 w = load8(p);
	struct kspan_http_event *m = &s->msg;
	int minor = http_version(w);
	if (minor >= 0) {
		__u8 sp = p[8], d0 = p[9], d1 = p[10], d2 = p[11];
		if (sp != ' ' || d0 < '1' || d0 > '5' || d1 < '0' || d1 > '9' || d2 < '0' || d2 > '9')
			return 0;
		__builtin_memcpy(m, &s->tmpl, sizeof(*m));
		m->kind = KSPAN_HTTP_RESPONSE;
		m->version_minor = minor;
		m->status = (d0 - '0') * 100 + (d1 - '0') * 10 + (d2 - '0');
		return 1;
	}
	__u32 ml = method_len(w);
	if (!ml)
		return 0;
	__u32 target = start + ml + 1;
	__u32 target_end = end;
	__u8 vminor = 1;
	if (complete) {
		/* request-line = method SP request-target SP HTTP-version CRLF */
		__u32 e = end;
		if (s->buf[AT(e - 1)] == '\r')
			e--;
		if (e < target + 1 + 9)
			return 0;
		const __u8 *v = &s->buf[AT(e - 9)];
		if (v[0] != ' ')
			return 0;
		int mv = http_version(load8(v + 1));
		if (mv < 0)
			return 0;
		vminor = mv;
		target_end = e - 9;
	}
	__builtin_memcpy(m, &s->tmpl, sizeof(*m));
	m->kind = KSPAN_HTTP_REQUEST;
	m->version_minor = vminor;
	m->method_len = ml;
	__builtin_memcpy(m->method, p, 8);
	__u32 plen = target_end - target;
	if (plen > KSPAN_HTTP_PATH_MAX) {
		plen = KSPAN_HTTP_PATH_MAX;
		m->flags |= KSPAN_HTTP_F_PATH_CUT;
	}
	if (!complete)
		m->flags |= KSPAN_HTTP_F_PATH_CUT; /* the line did not end in the window */
	m->path_len = plen;
	bpf_probe_read_kernel(m->path, BOUND(plen, KSPAN_HTTP_PATH_MAX),
			      &s->buf[AT(target)]);
	/* The method field must carry nothing but the method. */
	for (int i = 0; i < KSPAN_HTTP_METHOD_MAX; i++)
		if (i >= ml)
			m->method[i] = 0;
	return 1;
}

/* Finishes the current message: `next` is where the data after it starts. */
static __always_inline void send_message(struct scratch *s, __u32 next)
{
	struct kspan_http_event *m = &s->msg;
	m->offset = s->st.msg_start;
	m->bytes = next - s->st.msg_start;
	if (s->st.lines_cut)
		m->flags |= KSPAN_HTTP_F_LINES_CUT;
	s->st.pending = 0;
	emit(m);
}

/* Content-Length: only to find where a pipelined message after this one
 * starts; the value itself is not recorded. */
static __always_inline void content_length(struct scratch *s, __u32 start, __u32 end)
{
	if (end - start < 16)
		return;
	const __u8 *p = &s->buf[AT(start + 8)];
	__u64 w = load8(p) | C8(0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0, 0);
	if ((w & 0xffffffffffffffULL) != C8('l', 'e', 'n', 'g', 't', 'h', ':', 0))
		return;
	__u32 v = 0;
	__u32 at = start + 15;
	for (int i = 0; i < 20; i++) {
		if (at >= end)
			break;
		__u8 c = s->buf[AT(at)];
		at++;
		if (c == ' ' || c == '\t')
			continue;
		if (c < '0' || c > '9')
			break;
		if (v > 100000000)
			return; /* larger than kspan follows */
		v = v * 10 + (c - '0');
	}
	s->st.content_length = v;
}

/* A header line: keeps the traceparent or tracestate value. */
static __always_inline void header_line(struct scratch *s, __u32 start, __u32 end)
{
	__u32 len = end - start;
	if (len < 12)
		return;
	const __u8 *p = &s->buf[AT(start)];
	__u64 w = load8(p) | LOWER8;
	if (w == C8('c', 'o', 'n', 't', 'e', 'n', 't', '-')) {
		content_length(s, start, end);
		return;
	}
	if (w != C8('t', 'r', 'a', 'c', 'e', 'p', 'a', 'r') && w != C8('t', 'r', 'a', 'c', 'e', 's', 't', 'a'))
		return;
	__u32 w2 = (__u32)p[8] | (__u32)p[9] << 8 | (__u32)p[10] << 16 | (__u32)p[11] << 24;
	int parent;
	__u32 vstart;
	if (w == C8('t', 'r', 'a', 'c', 'e', 'p', 'a', 'r') &&
	    (w2 | 0x00202020) == ('e' | 'n' << 8 | 't' << 16 | ':' << 24)) {
		parent = 1;
		vstart = start + 12;
	} else if (w == C8('t', 'r', 'a', 'c', 'e', 's', 't', 'a') &&
		   ((w2 & 0xffffff) | 0x2020) == ('t' | 'e' << 8 | ':' << 16)) {
		parent = 0;
		vstart = start + 11;
	} else {
		return;
	}
	/* OWS before the value, and CR and OWS after it. */
	for (int i = 0; i < 8; i++) {
		if (vstart >= end)
			break;
		__u8 c = s->buf[AT(vstart)];
		if (c != ' ' && c != '\t')
			break;
		vstart++;
	}
	__u32 vend = end;
	for (int i = 0; i < 8; i++) {
		if (vend <= vstart)
			break;
		__u8 c = s->buf[AT(vend - 1)];
		if (c != '\r' && c != ' ' && c != '\t')
			break;
		vend--;
	}
	__u32 vlen = vend - vstart;
	struct kspan_http_event *m = &s->msg;
	if (parent) {
		if (vlen > KSPAN_HTTP_TRACEPARENT_MAX) {
			vlen = KSPAN_HTTP_TRACEPARENT_MAX;
			m->flags |= KSPAN_HTTP_F_TRACEPARENT_CUT;
		}
		m->traceparent_len = vlen;
		bpf_probe_read_kernel(m->traceparent, BOUND(vlen, KSPAN_HTTP_TRACEPARENT_MAX),
				      &s->buf[AT(vstart)]);
	} else {
		if (vlen > KSPAN_HTTP_TRACESTATE_MAX) {
			vlen = KSPAN_HTTP_TRACESTATE_MAX;
			m->flags |= KSPAN_HTTP_F_TRACESTATE_CUT;
		}
		m->tracestate_len = vlen;
		bpf_probe_read_kernel(m->tracestate, BOUND(vlen, KSPAN_HTTP_TRACESTATE_MAX),
				      &s->buf[AT(vstart)]);
	}
}

/* Global wrappers: each is verified once on its own, so the paths through
 * one do not multiply with the paths through the others in scan_line(). */
__noinline int start_message_at(__u32 start, __u32 end, __u32 complete)
{
	struct scratch *s = get_scratch();
	return s ? start_message(s, start, end, complete) : 0;
}

__noinline int header_line_at(__u32 start, __u32 end)
{
	struct scratch *s = get_scratch();
	if (s)
		header_line(s, start, end);
	return 0;
}

__noinline int send_message_to(__u32 next)
{
	struct scratch *s = get_scratch();
	if (s)
		send_message(s, next);
	return 0;
}

/* Line j: from after the previous '\n' (or 0) to its own '\n' (or the end
 * of the data, then incomplete). */
__noinline int scan_line(__u32 j)
{
	struct scratch *s = get_scratch();
	if (!s)
		return 0;
	__u32 mode = s->st.mode;
	if (mode == MODE_DONE)
		return 0;
	__u32 nlines = s->st.nlines;
	__u32 n = s->st.n;
	if (j > nlines || j > KSPAN_HTTP_MAX_LINES)
		return 0;
	__u32 start = j == 0 ? 0 : s->nl[(j - 1) & LINES_MASK] + 1;
	int complete = j < nlines;
	__u32 end = complete ? s->nl[j & LINES_MASK] : n;
	if (start >= n || end > n || end < start)
		return 0;
	if (start >= KSPAN_HTTP_WINDOW)
		return 0;

	if (mode == MODE_START || mode == MODE_READY) {
		if (s->st.messages >= KSPAN_HTTP_MAX_MESSAGES) {
			kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_MESSAGES_CUT);
			s->st.mode = MODE_DONE;
			return 0;
		}
		if (mode == MODE_READY) {
			/* Lines of the body (Content-Length) are skipped; a
			 * pipelined message may start in the middle of a line. */
			__u32 body_end = s->st.body_end;
			if (end < body_end)
				return 0;
			if (start < body_end)
				start = body_end;
			if (start >= n || start >= KSPAN_HTTP_WINDOW)
				return 0;
			__u8 next[8];
			__builtin_memcpy(next, &s->buf[AT(start)], 8);
			int looks = http_version(load8(next)) >= 0 || method_len(load8(next)) != 0;
			if (!looks) {
				s->st.mode = MODE_DONE; /* a body follows: sent by finish */
				return 0;
			}
			if (s->st.pending)
				send_message_to(start);
		}
		if (!start_message_at(start, end, complete)) {
			s->st.mode = MODE_DONE;
			return 0;
		}
		s->st.messages++;
		s->st.pending = 1;
		s->st.msg_start = start;
		s->st.content_length = 0;
		s->st.mode = MODE_HEADERS;
		return 0;
	}
	/* MODE_HEADERS */
	if (!complete)
		return 0; /* a header line cut by the end of the data */
	__u32 len = end - start;
	if (len == 0 || (len == 1 && s->buf[AT(start)] == '\r')) {
		s->msg.header_len = end + 1 - s->st.msg_start;
		s->msg.flags |= KSPAN_HTTP_F_HEADERS_END;
		__u64 body_end = (__u64)end + 1 + s->st.content_length;
		__u32 ret = s->st.ret;
		if (body_end >= n) {
			s->st.body_left = body_end > ret ? body_end - ret : 0;
			send_message_to(ret);
			s->st.mode = MODE_DONE;
		} else {
			s->st.body_end = body_end;
			s->st.mode = MODE_READY;
		}
		return 0;
	}
	header_line_at(start, end);
	return 0;
}

/* ---- syscall hooks ------------------------------------------------------ */

static __always_inline struct sock *tcp_sock_of(long fd, __u64 *ino)
{
	struct file *file = kspan_fd_file(fd);
	struct sock *sk = kspan_file_sock(file);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	*ino = BPF_CORE_READ(file, f_inode, i_ino);
	return sk;
}

static __always_inline void on_enter(long fd, __u64 buf, __u64 buf_len, __u32 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (kspan_trace_level(pid_tgid >> 32) != KSPAN_TRACE_FULL)
		return;
	__u64 ino = 0;
	struct sock *sk = tcp_sock_of(fd, &ino);
	if (!sk)
		return;
	__u64 key = (__u64)sk;
	struct sock_state *ss = bpf_map_lookup_elem(&kspan_http_socks, &key);
	if (ss && ss->ino == ino && (ss->flags & SOCK_NOT_HTTP))
		return;
	struct inflight a = {
		.sk = key,
		.ino = ino,
		.buf = buf,
		.buf_len = buf_len,
		.start_ns = bpf_ktime_get_ns(),
		.direction = direction,
	};
	if (bpf_map_update_elem(&kspan_http_infl, &pid_tgid, &a, BPF_ANY))
		kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_INFLIGHT_FULL);
}

/* The first iovec of a vector. */
static __always_inline void on_enter_iov(long fd, const struct iovec *vec, unsigned long vlen,
					 __u32 direction)
{
	struct iovec iov = {};
	if (!vec || vlen < 1 || bpf_probe_read_user(&iov, sizeof(iov), vec))
		return;
	on_enter(fd, (__u64)iov.iov_base, iov.iov_len, direction);
}

static __always_inline void on_enter_msg(long fd, const struct user_msghdr *umsg, __u32 direction)
{
	struct user_msghdr msg = {};
	if (!umsg || bpf_probe_read_user(&msg, sizeof(msg), umsg))
		return;
	on_enter_iov(fd, msg.msg_iov, msg.msg_iovlen, direction);
}

static __always_inline void fill_template(struct kspan_http_event *t, struct inflight *a,
					  __u64 pid_tgid, long ret)
{
	__builtin_memset(t, 0, sizeof(*t));
	struct sock *sk = (struct sock *)a->sk;
	t->type = KSPAN_EVENT_HTTP;
	t->pid = pid_tgid >> 32;
	t->tid = (__u32)pid_tgid;
	t->direction = a->direction;
	t->start_ns = a->start_ns;
	t->end_ns = bpf_ktime_get_ns();
	t->sock_id = a->sk;
	t->sock_ino = a->ino;
	t->syscall_bytes = ret;
	t->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	t->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->peer_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (t->family == AF_INET6) {
		BPF_CORE_READ_INTO(&t->local_addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&t->peer_addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)t->local_addr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)t->peer_addr, sk, __sk_common.skc_daddr);
	}
	bpf_get_current_comm(&t->comm, sizeof(t->comm));
}

static __always_inline void on_exit(long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct inflight *ap = bpf_map_lookup_elem(&kspan_http_infl, &pid_tgid);
	if (!ap)
		return;
	struct inflight a = *ap;
	bpf_map_delete_elem(&kspan_http_infl, &pid_tgid);
	if (ret <= 0)
		return;
	struct scratch *s = get_scratch();
	if (!s)
		return;

	__u64 key = a.sk;
	struct sock_state fresh = {.ino = a.ino};
	struct sock_state *ss = bpf_map_lookup_elem(&kspan_http_socks, &key);
	if (!ss || ss->ino != a.ino) {
		if (bpf_map_update_elem(&kspan_http_socks, &key, &fresh, BPF_ANY)) {
			kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_STATE_FULL);
			return;
		}
		ss = bpf_map_lookup_elem(&kspan_http_socks, &key);
		if (!ss)
			return;
	}
	__u32 flags = ss->flags;
	if (flags & SOCK_NOT_HTTP)
		return;

	__u64 n = ret;
	if (n > a.buf_len)
		n = a.buf_len;
	if (n > KSPAN_HTTP_WINDOW)
		n = KSPAN_HTTP_WINDOW;
	if (bpf_probe_read_user(s->buf, BOUND(n, KSPAN_HTTP_WINDOW), (const void *)a.buf))
		return;
	/* The bytes after the data must not look like a line of it. */
	if (n < KSPAN_HTTP_WINDOW)
		s->buf[n] = 0;

	fill_template(&s->tmpl, &a, pid_tgid, ret);
	__u32 cont = a.direction == KSPAN_HTTP_READ ? SOCK_CONT_READ : SOCK_CONT_WRITE;
	s->st.n = n;
	s->st.ret = ret;
	s->st.nlines = 0;
	s->st.messages = 0;
	s->st.msg_start = 0;
	s->st.lines_cut = 0;
	s->st.pending = 0;
	s->st.content_length = 0;
	s->st.body_left = 0;
	__u32 di = a.direction == KSPAN_HTTP_READ ? 0 : 1;
	__u32 left = ss->body_left[di];
	if (left && !(flags & cont)) {
		/* The rest of a body first: its bytes and times as data. */
		s->tmpl.kind = KSPAN_HTTP_DATA;
		s->tmpl.bytes = left < ret ? left : ret;
		emit(&s->tmpl);
		s->tmpl.kind = 0;
		s->tmpl.bytes = 0;
		if (left >= ret) {
			ss->body_left[di] = left - ret;
			ss->flags = flags | SOCK_SEEN;
			return;
		}
		ss->body_left[di] = 0;
		s->st.body_end = left;
		s->st.mode = MODE_READY;
	} else if (flags & cont) {
		/* Header lines of the previous message continue here. */
		__builtin_memcpy(&s->msg, &s->tmpl, sizeof(s->msg));
		s->msg.kind = KSPAN_HTTP_HEADERS;
		s->st.mode = MODE_HEADERS;
		s->st.messages = 1;
		s->st.pending = 1;
	} else {
		s->st.mode = MODE_START;
	}

	for (__u32 from = 0; from < KSPAN_HTTP_WINDOW; from += NL_CHUNK) {
		if (from >= n)
			break;
		if (scan_newlines(from)) {
			kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_LINES_CUT);
			break;
		}
	}
	for (__u32 j = 0; j <= KSPAN_HTTP_MAX_LINES; j++) {
		if (s->st.mode == MODE_DONE || j > s->st.nlines)
			break;
		scan_line(j);
	}

	/* What is left: a message whose headers end here with a body after
	 * them, or one whose headers continue in the next syscall. */
	__u32 messages = s->st.messages;
	int continues = s->st.mode == MODE_HEADERS;
	if (s->st.pending)
		send_message(s, ret);

	__u32 nflags = flags | SOCK_SEEN;
	if (continues)
		nflags |= cont;
	else
		nflags &= ~cont;
	if (messages > 0) {
		nflags |= SOCK_HTTP;
	} else if (!(flags & SOCK_SEEN)) {
		nflags |= SOCK_NOT_HTTP;
		kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_NOT_HTTP);
	} else if (flags & SOCK_HTTP) {
		/* A body, or other data of an HTTP stream: times and bytes. */
		s->tmpl.kind = KSPAN_HTTP_DATA;
		s->tmpl.bytes = ret - (left < ret ? left : 0);
		emit(&s->tmpl);
	}
	if (messages > 0)
		ss->body_left[di] = s->st.body_left;
	ss->flags = nflags;
}

#define HOOK_ENTER(name, call)                                   \
	SEC("tracepoint/syscalls/sys_enter_" #name)              \
	int kspan_http_##name(struct sys_enter_args *ctx)        \
	{                                                        \
		call;                                            \
		return 0;                                        \
	}
#define HOOK_EXIT(name)                                          \
	SEC("tracepoint/syscalls/sys_exit_" #name)               \
	int kspan_http_##name##_x(struct sys_exit_args *ctx)     \
	{                                                        \
		on_exit(ctx->ret);                               \
		return 0;                                        \
	}

HOOK_ENTER(read, on_enter(ctx->args[0], ctx->args[1], ~0ULL, KSPAN_HTTP_READ))
HOOK_EXIT(read)
HOOK_ENTER(write, on_enter(ctx->args[0], ctx->args[1], ~0ULL, KSPAN_HTTP_WRITE))
HOOK_EXIT(write)
HOOK_ENTER(recvfrom, on_enter(ctx->args[0], ctx->args[1], ~0ULL, KSPAN_HTTP_READ))
HOOK_EXIT(recvfrom)
HOOK_ENTER(sendto, on_enter(ctx->args[0], ctx->args[1], ~0ULL, KSPAN_HTTP_WRITE))
HOOK_EXIT(sendto)
HOOK_ENTER(readv, on_enter_iov(ctx->args[0], (const struct iovec *)ctx->args[1], ctx->args[2],
			       KSPAN_HTTP_READ))
HOOK_EXIT(readv)
HOOK_ENTER(writev, on_enter_iov(ctx->args[0], (const struct iovec *)ctx->args[1], ctx->args[2],
				KSPAN_HTTP_WRITE))
HOOK_EXIT(writev)
HOOK_ENTER(recvmsg, on_enter_msg(ctx->args[0], (const struct user_msghdr *)ctx->args[1],
				 KSPAN_HTTP_READ))
HOOK_EXIT(recvmsg)
HOOK_ENTER(sendmsg, on_enter_msg(ctx->args[0], (const struct user_msghdr *)ctx->args[1],
				 KSPAN_HTTP_WRITE))
HOOK_EXIT(sendmsg)

/* The end of an HTTP stream: userspace ends what is still open on it. */
SEC("tracepoint/syscalls/sys_enter_close")
int kspan_http_close(struct sys_enter_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (kspan_trace_level(pid_tgid >> 32) != KSPAN_TRACE_FULL)
		return 0;
	__u64 ino = 0;
	struct sock *sk = tcp_sock_of(ctx->args[0], &ino);
	if (!sk)
		return 0;
	__u64 key = (__u64)sk;
	struct sock_state *ss = bpf_map_lookup_elem(&kspan_http_socks, &key);
	if (!ss)
		return 0;
	int http = ss->ino == ino && (ss->flags & SOCK_HTTP);
	bpf_map_delete_elem(&kspan_http_socks, &key);
	if (!http)
		return 0;
	struct scratch *s = get_scratch();
	if (!s)
		return 0;
	struct inflight a = {.sk = key, .ino = ino, .start_ns = bpf_ktime_get_ns()};
	fill_template(&s->tmpl, &a, pid_tgid, 0);
	s->tmpl.kind = KSPAN_HTTP_CLOSE;
	emit(&s->tmpl);
	return 0;
}
