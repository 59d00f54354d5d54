// SPDX-License-Identifier: GPL-2.0
/* HTTP/1.x program family: the first bytes of the data that processes traced
 * in full read from and write to TCP sockets, recognised as HTTP request or
 * status lines, with the W3C `traceparent` and `tracestate` header values.
 *
 * Two interchangeable attach variants, chosen by the loader
 * (userspace/http_capture) with bpf_program__set_autoload():
 *
 *   tp_btf      kspan_http_sk_recv / kspan_http_sk_send on the socket layer's
 *               sock:sock_recv_length / sock:sock_send_length (6.3+), and
 *               kspan_http_sk_state on sock:inet_sock_set_state for the end of
 *               a connection. They run only for socket data, after it has
 *               moved; the syscall and its arguments come from the task's
 *               saved registers and the socket is the tracepoint's own, so
 *               there is no enter hook, no per-thread state and no fd walk,
 *               and no syscall on the host takes the tracepoint slow path.
 *   tracepoint  the classic syscall tracepoints (syscalls:sys_enter_* /
 *               sys_exit_*, 5.10 on): the arguments are kept per thread at
 *               enter, the socket found from the fd at exit. Attaching them
 *               sends every syscall of every process through the syscall
 *               tracing slow path.
 *
 * Either way the data (the first iovec for readv/writev/recvmsg/sendmsg) is
 * copied into a per-CPU scratch buffer, at most KSPAN_HTTP_WINDOW bytes, and
 * scanned:
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
	/* The connection's addresses, read from the socket once, when its
	 * first data is seen (a socket carrying data is connected). */
	__u16 family;
	__u16 local_port;
	__u16 peer_port;
	__u16 pad;
	__u8 local_addr[16];
	__u8 peer_addr[16];
	/* The process whose data was first seen on it: the owner named in
	 * the close record, which the tp_btf variant writes from softirq. */
	__u32 tgid;
	/* Sampling decisions of the requests still waiting for their
	 * response, oldest in bit 0 (1: recorded), and how many. */
	__u32 fifo;
	__u8 fifo_n;
	/* Per direction (bit 0 read, bit 1 write): the message being carried
	 * is not recorded, nor its header continuations and body. */
	__u8 skip;
	__u8 req_dirs; /* directions requests were seen in (the other one answers) */
	__u8 pad3[5];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_state);
} kspan_http_socks SEC(".maps");

/* The same state for the tp_btf variant, in the socket's own local storage:
 * found without hashing, freed with the socket. (Classic tracepoint
 * programs cannot use socket storage.) */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_state);
} kspan_http_sk SEC(".maps");

/* Set by the loader: kspan_http_infl entries - 1 (a power of two). */
const volatile __u32 infl_mask = 16383;

/* Trace level per tgid, as in bpf/syscalls.bpf.c: bits 0-1 the level, bit 2
 * valid, bits 3-31 the filter generation it was computed for, so the filter's
 * hash and comm LPM lookups run once per process and filter change. Sized to
 * pid_max by the loader; reset on exec (comm changes) and exit. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 32768); /* resized by the loader */
	__type(key, __u32);
	__type(value, __u32);
} kspan_http_lvl SEC(".maps");

enum arg_kind {
	ARG_BUF = 0, /* read, write, recvfrom, sendto: the buffer */
	ARG_IOV = 1, /* readv, writev: the iovec array */
	ARG_MSG = 2, /* recvmsg, sendmsg: the user msghdr */
};

/* What the exit needs, kept at enter: nothing is resolved before the
 * syscall has returned data. */
struct inflight {
	__u64 arg;      /* enum arg_kind: buffer, iovec array or msghdr */
	__u64 start_ns;
	__u32 tid;      /* owner of an array slot; 0: free */
	__u32 fd;
	__u8 direction;
	__u8 kind;      /* enum arg_kind */
	__u8 pad[6];
};

/* Socket syscalls in flight, one array slot per thread (tid & infl_mask):
 * lock-free and inlined, where a hash update, lookup and delete cost several
 * hundred ns per syscall. A thread whose slot another thread holds spills
 * into kspan_http_spill. A thread's slot is freed by its exit. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16384); /* resized by the loader */
	__type(key, __u32);
	__type(value, struct inflight);
} kspan_http_infl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct inflight);
} kspan_http_spill SEC(".maps");

/* A syscall with data, once its socket is known. */
struct call {
	__u64 sk;
	__u64 ino;
	__u64 start_ns;
	__u32 direction;
	__u32 pad;
};

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
	__u32 fifo;        /* the socket's sampling FIFO and skip bits, */
	__u32 fifo_n;      /* copied in for the syscall and back out */
	__u32 skip;
	__u32 dir_bit;     /* this syscall's direction as a skip bit */
	__u32 path_at;     /* REQUEST: where its target starts in buf */
	__u32 req_dirs;
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

/* Requests without trace context recorded per process and second; 0: all.
 * Set by the loader. */
const volatile __u32 root_per_second = 0;

struct root_rate {
	__u64 window_ns; /* start of the current one-second window */
	__u32 count;     /* roots recorded in it */
	__u32 tgid;      /* the process the slot counts for */
};

#define ROOT_SLOTS 4096

/* Root-request budget per tgid, direct-mapped (slot tgid % ROOT_SLOTS, an
 * inlined array lookup where a hash costs tens of ns per request): a
 * process taking over a slot starts a fresh window, so two busy processes
 * whose tgids share a slot each get somewhat more than their budget. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ROOT_SLOTS);
	__type(key, __u32);
	__type(value, struct root_rate);
} kspan_http_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KSPAN_HTTP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kspan_http_stats SEC(".maps");

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&kspan_http_scratch, &zero);
}

/* Fixed part of a record: everything before the path, traceparent and
 * tracestate bytes, of which only their lengths are meaningful. */
#define HEAD_BYTES offsetof(struct kspan_http_event, path)

/* Copies the record into the ring: the fixed part and the used bytes of the
 * three strings (often none), not the whole 584 bytes. The rest of the
 * record is left as the ring had it; readers go by the lengths. */
static __always_inline void emit_from(struct kspan_http_event *e, int with_comm,
				      const __u8 *path)
{
	struct kspan_http_event *r = bpf_ringbuf_reserve(&kspan_http_ring, sizeof(*r), 0);
	if (!r) {
		kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_RING_FULL);
		return;
	}
	__builtin_memcpy(r, e, HEAD_BYTES);
	/* The command name only for records written: most syscalls write none. */
	if (with_comm)
		bpf_get_current_comm(r->comm, sizeof(r->comm));
	else
		__builtin_memset(r->comm, 0, sizeof(r->comm));
	__u32 len = e->path_len;
	if (len)
		bpf_probe_read_kernel(r->path, BOUND(len, KSPAN_HTTP_PATH_MAX), path);
	len = e->traceparent_len;
	if (len)
		bpf_probe_read_kernel(r->traceparent, BOUND(len, KSPAN_HTTP_TRACEPARENT_MAX),
				      e->traceparent);
	len = e->tracestate_len;
	if (len)
		bpf_probe_read_kernel(r->tracestate, BOUND(len, KSPAN_HTTP_TRACESTATE_MAX),
				      e->tracestate);
	bpf_ringbuf_submit(r, kspan_wakeup_flag(&kspan_http_ring, wakeup_bytes));
	kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_EMITTED);
}

/* A record of the current task (the usual case). */
static __always_inline void emit(struct kspan_http_event *e)
{
	emit_from(e, 1, (const __u8 *)e->path);
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
 * common case) costs one test, and a word with some goes from one '\n' to
 * the next by bit arithmetic, not byte by byte. */
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
		/* Bit 7 of each byte of m is set exactly where x has a zero
		 * byte, i.e. where w has a '\n' (no carries between bytes). */
		__u64 t = (x & 0x7f7f7f7f7f7f7f7fULL) + 0x7f7f7f7f7f7f7f7fULL;
		__u64 m = ~(t | x | 0x7f7f7f7f7f7f7f7fULL);
		for (__u32 b = 0; b < 8; b++) {
			if (!m)
				break;
			__u64 low = m & -m;
			/* low >> 7 is 1 in byte k only; multiplied by this constant
			 * its top byte is k. */
			__u32 k8 = ((low >> 7) * 0x0001020304050607ULL) >> 56;
			m &= m - 1;
			if (pos + k8 >= n)
				break;
			__u32 k = s->st.nlines;
			if (k >= KSPAN_HTTP_MAX_LINES) {
				s->st.lines_cut = 1;
				return 1;
			}
			s->nl[k & LINES_MASK] = pos + k8;
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
		__builtin_memcpy(m, &s->tmpl, HEAD_BYTES);
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
	__builtin_memcpy(m, &s->tmpl, HEAD_BYTES);
	m->kind = KSPAN_HTTP_REQUEST;
	m->version_minor = vminor;
	m->method_len = ml;
	__u32 plen = target_end - target;
	if (plen > KSPAN_HTTP_PATH_MAX) {
		plen = KSPAN_HTTP_PATH_MAX;
		m->flags |= KSPAN_HTTP_F_PATH_CUT;
	}
	if (!complete)
		m->flags |= KSPAN_HTTP_F_PATH_CUT; /* the line did not end in the window */
	m->path_len = plen;
	s->st.path_at = target; /* copied from the window if the message is recorded */
	/* The method field carries nothing but the method (ml is 3 to 7). */
	__u64 method = w & ((1ULL << (8 * (ml & 7))) - 1);
	__builtin_memcpy(m->method, &method, 8);
	return 1;
}

/* ---- sampling ----------------------------------------------------------- */

static __always_inline int hex_value(__u8 c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* A root request of process `tgid` at `now`: within the process's budget
 * for this second? Concurrent CPUs may overshoot the budget by a few. */
static __always_inline int root_allowed(__u32 tgid, __u64 now)
{
	if (!root_per_second)
		return 1;
	__u32 slot = tgid & (ROOT_SLOTS - 1);
	struct root_rate *r = bpf_map_lookup_elem(&kspan_http_rate, &slot);
	if (!r)
		return 1;
	if (r->tgid != tgid || now - r->window_ns >= 1000000000ULL) {
		r->tgid = tgid;
		r->window_ns = now;
		r->count = 1;
		return 1;
	}
	if (r->count >= root_per_second)
		return 0;
	__sync_fetch_and_add(&r->count, 1);
	return 1;
}

static __always_inline int lower_hex(__u8 c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* W3C trace context: version "-" trace-id "-" parent-id "-" flags, lower-case
 * hex, ids not all zero, version not ff; version 00 is exactly 55
 * characters, a later one may go on after a '-'. Anything else is no trace
 * context at all (the spec says to ignore it), so a client cannot buy its
 * way past the root budget with "...-01" nor hide a request with "...-00".
 * userspace/http_spans.cpp's ParseTraceParent applies the same rule to
 * the header it is given. */
static __always_inline int traceparent_valid(const struct kspan_http_event *m)
{
	__u32 len = m->traceparent_len;
	if (len < 55 || len > KSPAN_HTTP_TRACEPARENT_MAX || (m->flags & KSPAN_HTTP_F_TRACEPARENT_CUT))
		return 0;
	const char *t = m->traceparent;
	__u8 trace_bits = 0, parent_bits = 0;
	/* A loop, not unrolled: the callers' frames leave little stack for
	 * the temporaries of 55 unrolled checks. */
#pragma clang loop unroll(disable)
	for (int i = 0; i < 55; i++) {
		__u8 c = t[i];
		if (i == 2 || i == 35 || i == 52) {
			if (c != '-')
				return 0;
			continue;
		}
		if (!lower_hex(c))
			return 0;
		if (i >= 3 && i < 35)
			trace_bits |= c ^ '0';
		else if (i >= 36 && i < 52)
			parent_bits |= c ^ '0';
	}
	if (!trace_bits || !parent_bits || (t[0] == 'f' && t[1] == 'f'))
		return 0;
	if (len > 55 && ((t[0] == '0' && t[1] == '0') || t[55] != '-'))
		return 0;
	return 1;
}

/* Whether request `m` is recorded: by its traceparent's sampled flag
 * (characters 53-54), else by the root budget. A request whose headers
 * continue in a later syscall is recorded: its traceparent may be in the
 * part not seen yet. */
static __always_inline int sample_request(struct kspan_http_event *m)
{
	if (!(m->flags & KSPAN_HTTP_F_HEADERS_END))
		return 1;
	if (traceparent_valid(m)) {
		if (hex_value(m->traceparent[54]) & 1)
			return 1;
		kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_PARENT_UNSAMPLED);
		return 0;
	}
	if (root_allowed(m->pid, m->end_ns))
		return 1;
	kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_ROOT_LIMITED);
	return 0;
}

/* The decision for message `m`: requests decide and queue it, responses
 * take the decision of the request they answer (the oldest waiting), header
 * continuations follow their message. */
static __always_inline int recorded(struct scratch *s, struct kspan_http_event *m)
{
	__u32 keep;
	if (m->kind == KSPAN_HTTP_REQUEST) {
		s->st.req_dirs |= s->st.dir_bit;
		keep = sample_request(m);
		__u32 n = s->st.fifo_n;
		if (n < 32) {
			s->st.fifo |= keep << (n & 31);
			s->st.fifo_n = n + 1;
		}
		/* A full FIFO (32 requests unanswered): recorded, so pairing
		 * stays as it would be without sampling. */
		else
			keep = 1;
	} else if (m->kind == KSPAN_HTTP_RESPONSE) {
		keep = 1;
		if (s->st.fifo_n) {
			keep = s->st.fifo & 1;
			s->st.fifo >>= 1;
			s->st.fifo_n--;
		}
	} else {
		return !(s->st.skip & s->st.dir_bit);
	}
	if (keep)
		s->st.skip &= ~s->st.dir_bit;
	else
		s->st.skip |= s->st.dir_bit;
	return keep;
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
	if (recorded(s, m))
		emit_from(m, 1, &s->buf[AT(s->st.path_at)]);
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

/* fd -> struct sock of a TCP socket, with the socket file's inode number.
 * Like kspan_fd_file() and kspan_file_sock() (bpf/fd.bpf.h), with fewer
 * reads on the exit path of every traced socket syscall: the fd table's
 * max_fds and fd array in one read, and the inode's mode and number in one. */
static __always_inline struct sock *tcp_sock_of(long fd, __u64 *ino)
{
	if (fd < 0)
		return NULL;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return NULL;
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
	if ((unsigned long)fd >= max_fds)
		return NULL;
	struct file *file = NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return NULL;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	if (!inode)
		return NULL;
	__u32 off_mode = bpf_core_field_offset(struct inode, i_mode);
	__u32 off_ino = bpf_core_field_offset(struct inode, i_ino);
	__u16 mode;
	__u8 ih[128];
	if (off_mode <= 126 && off_ino <= 120 &&
	    bpf_probe_read_kernel(ih, sizeof(ih), inode) == 0) {
		__builtin_memcpy(&mode, ih + (off_mode & 127), 2);
		__builtin_memcpy(ino, ih + (off_ino & 127), 8);
	} else {
		mode = BPF_CORE_READ(inode, i_mode);
		*ino = BPF_CORE_READ(inode, i_ino);
	}
	if ((mode & KSPAN_S_IFMT) != KSPAN_S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	struct sock *sk = sock ? BPF_CORE_READ(sock, sk) : NULL;
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	return sk;
}

/* The process's trace level (cached per tgid and filter generation). */
static __always_inline int http_level(__u32 tgid)
{
	struct kspan_filter_config *fc = NULL;
	return kspan_cached_trace_level(&kspan_http_lvl, tgid, &fc);
}

/* Keeps the arguments for the exit: no fd, socket or user memory is looked
 * at before the syscall returns data. */
static __always_inline void on_enter(long fd, __u64 arg, __u32 kind, __u32 direction)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (http_level(pid_tgid >> 32) != KSPAN_TRACE_FULL)
		return;
	__u32 tid = (__u32)pid_tgid;
	__u32 idx = tid & infl_mask;
	struct inflight *slot = bpf_map_lookup_elem(&kspan_http_infl, &idx);
	if (slot && (slot->tid == 0 || slot->tid == tid)) {
		slot->tid = tid;
		slot->arg = arg;
		slot->fd = (__u32)fd;
		slot->direction = direction;
		slot->kind = kind;
		slot->start_ns = bpf_ktime_get_ns();
		return;
	}
	struct inflight fl = {
		.arg = arg,
		.tid = tid,
		.fd = (__u32)fd,
		.direction = direction,
		.kind = kind,
	};
	fl.start_ns = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&kspan_http_spill, &tid, &fl, BPF_ANY))
		kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_INFLIGHT_FULL);
}

/* The user buffer the data went to or came from: the first iovec for the
 * vector calls. Returns its length, 0 when there is none. */
static __always_inline __u64 user_buffer(const struct inflight *a, __u64 *buf)
{
	if (a->kind == ARG_BUF) {
		*buf = a->arg;
		return ~0ULL;
	}
	const struct iovec *vec = (const struct iovec *)a->arg;
	if (a->kind == ARG_MSG) {
		struct user_msghdr msg = {};
		if (bpf_probe_read_user(&msg, sizeof(msg), (const void *)a->arg) ||
		    msg.msg_iovlen < 1)
			return 0;
		vec = msg.msg_iov;
	}
	struct iovec iov = {};
	if (!vec || bpf_probe_read_user(&iov, sizeof(iov), vec))
		return 0;
	*buf = (__u64)iov.iov_base;
	return iov.iov_len;
}

/* The connection's addresses, into a new socket state. */
static __always_inline void read_addresses(struct sock_state *ss, struct sock *sk)
{
	ss->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	ss->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	ss->peer_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (ss->family == AF_INET6) {
		BPF_CORE_READ_INTO(&ss->local_addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&ss->peer_addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)ss->local_addr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)ss->peer_addr, sk, __sk_common.skc_daddr);
	}
}

/* The fields every record of this syscall shares, and the message fields
 * cleared (start_message() and the data records set theirs). The command
 * name is written by emit(), for records actually written. */
static __always_inline void fill_template(struct kspan_http_event *t, const struct call *a,
					  const struct sock_state *ss, __u64 pid_tgid, long ret,
					  __u64 now)
{
	t->type = KSPAN_EVENT_HTTP;
	t->kind = 0;
	t->flags = 0;
	t->offset = 0;
	t->bytes = 0;
	t->header_len = 0;
	t->status = 0;
	t->method_len = 0;
	t->path_len = 0;
	t->traceparent_len = 0;
	t->version_minor = 0;
	t->tracestate_len = 0;
	t->pad0 = 0;
	__builtin_memset(t->method, 0, sizeof(t->method));
	t->pid = pid_tgid >> 32;
	t->tid = (__u32)pid_tgid;
	t->direction = a->direction;
	t->start_ns = a->start_ns;
	t->end_ns = now;
	t->sock_id = a->sk;
	t->sock_ino = a->ino;
	t->syscall_bytes = ret;
	t->family = ss->family;
	t->local_port = ss->local_port;
	t->peer_port = ss->peer_port;
	__builtin_memcpy(t->local_addr, ss->local_addr, 16);
	__builtin_memcpy(t->peer_addr, ss->peer_addr, 16);
}

/* A socket's state on first sight: its addresses and owner. */
static __always_inline void init_state(struct sock_state *ss, struct sock *sk, __u64 ino,
				       __u32 tgid)
{
	ss->ino = ino;
	ss->tgid = tgid;
	read_addresses(ss, sk);
}

/* Data in the answering direction of a connection whose only request
 * waiting was not recorded: the start of that request's response (nothing
 * else travels that way before it), so this response cannot carry
 * pipelined responses to recorded requests. Taken as not recorded without
 * reading the user buffer at all; its header continuations and body, in
 * later syscalls, are data of an unrecorded message. Returns 1 when it was. */
static __always_inline int skip_unsampled_response(struct sock_state *ss, __u32 di)
{
	__u32 flags = ss->flags;
	__u32 cont = di ? SOCK_CONT_WRITE : SOCK_CONT_READ;
	__u32 req = ss->req_dirs;
	if (ss->fifo_n != 1 || (ss->fifo & 1) || !req || (req & (1u << di)) || (flags & cont) ||
	    ss->body_left[di])
		return 0;
	ss->fifo = 0;
	ss->fifo_n = 0;
	ss->skip |= 1u << di;
	ss->flags = flags | SOCK_SEEN;
	return 1;
}

/* `ret` bytes of data moved by a syscall of a fully traced process on TCP
 * socket `sk` (its file's inode `ino`, its state `ss`, not known to be
 * anything but HTTP), described by `in`: both variants end here. */
static __always_inline void on_data(__u64 pid_tgid, struct sock *sk, __u64 ino,
				    const struct inflight *in, long ret, struct sock_state *ss)
{
	struct call a = {.sk = (__u64)sk, .ino = ino, .start_ns = in->start_ns,
			 .direction = in->direction};
	__u32 flags = ss->flags;
	__u32 di = a.direction == KSPAN_HTTP_READ ? 0 : 1;
	__u64 buf = 0;
	__u64 buf_len = user_buffer(in, &buf);
	if (!buf_len)
		return;
	struct scratch *s = get_scratch();
	if (!s)
		return;

	__u64 n = ret;
	if (n > buf_len)
		n = buf_len;
	if (n > KSPAN_HTTP_WINDOW)
		n = KSPAN_HTTP_WINDOW;
	if (bpf_probe_read_user(s->buf, BOUND(n, KSPAN_HTTP_WINDOW), (const void *)buf))
		return;
	/* The bytes after the data must not look like a line of it. */
	if (n < KSPAN_HTTP_WINDOW)
		s->buf[n] = 0;

	/* The tp_btf variant has no enter: one clock read for both ends. */
	__u64 now = bpf_ktime_get_ns();
	if (!a.start_ns)
		a.start_ns = now;
	fill_template(&s->tmpl, &a, ss, pid_tgid, ret, now);
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
	s->st.dir_bit = 1u << di;
	s->st.fifo = ss->fifo;
	s->st.fifo_n = ss->fifo_n;
	s->st.skip = ss->skip;
	s->st.req_dirs = ss->req_dirs;
	__u32 left = ss->body_left[di];
	if (left && !(flags & cont)) {
		/* The rest of a body first: its bytes and times as data. */
		s->tmpl.kind = KSPAN_HTTP_DATA;
		s->tmpl.bytes = left < ret ? left : ret;
		if (!(s->st.skip & s->st.dir_bit))
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
		__builtin_memcpy(&s->msg, &s->tmpl, HEAD_BYTES);
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
	} else if ((flags & SOCK_HTTP) && !(s->st.skip & s->st.dir_bit)) {
		/* A body, or other data of an HTTP stream: times and bytes. */
		s->tmpl.kind = KSPAN_HTTP_DATA;
		s->tmpl.bytes = ret - (left < ret ? left : 0);
		emit(&s->tmpl);
	}
	if (messages > 0)
		ss->body_left[di] = s->st.body_left;
	ss->flags = nflags;
	ss->fifo = s->st.fifo;
	ss->fifo_n = s->st.fifo_n;
	ss->skip = s->st.skip;
	ss->req_dirs = s->st.req_dirs;
}

/* ---- variant tracepoint: the classic syscall tracepoints ---------------- */

static __always_inline void on_exit(long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	__u32 idx = tid & infl_mask;
	struct inflight in;
	struct inflight *slot = bpf_map_lookup_elem(&kspan_http_infl, &idx);
	if (slot && slot->tid == tid) {
		in = *slot;
		slot->tid = 0;
	} else {
		/* Not entered in a slot: a process that is not traced (cheap,
		 * cached) or one whose slot another thread held. */
		if (http_level(pid_tgid >> 32) != KSPAN_TRACE_FULL)
			return;
		struct inflight *sp = bpf_map_lookup_elem(&kspan_http_spill, &tid);
		if (!sp)
			return;
		in = *sp;
		bpf_map_delete_elem(&kspan_http_spill, &tid);
	}
	if (ret <= 0)
		return;
	__u64 ino = 0;
	struct sock *sk = tcp_sock_of(in.fd, &ino);
	if (!sk)
		return;
	/* A stream known not to be HTTP: the first check once the socket is known. */
	__u64 key = (__u64)sk;
	struct sock_state *ss = bpf_map_lookup_elem(&kspan_http_socks, &key);
	if (ss && ss->ino == ino && (ss->flags & SOCK_NOT_HTTP))
		return;
	if (!ss || ss->ino != ino) {
		struct sock_state fresh = {};
		init_state(&fresh, sk, ino, pid_tgid >> 32);
		if (bpf_map_update_elem(&kspan_http_socks, &key, &fresh, BPF_ANY)) {
			kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_STATE_FULL);
			return;
		}
		ss = bpf_map_lookup_elem(&kspan_http_socks, &key);
		if (!ss)
			return;
	}
	if (skip_unsampled_response(ss, in.direction == KSPAN_HTTP_READ ? 0 : 1))
		return;
	on_data(pid_tgid, sk, ino, &in, ret, ss);
}

#define HOOK_ENTER(name, call)                                   \
	SEC("tracepoint/syscalls/sys_enter_" #name)              \
	int kspan_http_##name(struct kspan_sys_enter_args *ctx)  \
	{                                                        \
		call;                                            \
		return 0;                                        \
	}
#define HOOK_EXIT(name)                                          \
	SEC("tracepoint/syscalls/sys_exit_" #name)               \
	int kspan_http_##name##_x(struct kspan_sys_exit_args *ctx) \
	{                                                        \
		on_exit(ctx->ret);                               \
		return 0;                                        \
	}

HOOK_ENTER(read, on_enter(ctx->args[0], ctx->args[1], ARG_BUF, KSPAN_HTTP_READ))
HOOK_EXIT(read)
HOOK_ENTER(write, on_enter(ctx->args[0], ctx->args[1], ARG_BUF, KSPAN_HTTP_WRITE))
HOOK_EXIT(write)
HOOK_ENTER(recvfrom, on_enter(ctx->args[0], ctx->args[1], ARG_BUF, KSPAN_HTTP_READ))
HOOK_EXIT(recvfrom)
HOOK_ENTER(sendto, on_enter(ctx->args[0], ctx->args[1], ARG_BUF, KSPAN_HTTP_WRITE))
HOOK_EXIT(sendto)
HOOK_ENTER(readv, on_enter(ctx->args[0], ctx->args[1], ARG_IOV, KSPAN_HTTP_READ))
HOOK_EXIT(readv)
HOOK_ENTER(writev, on_enter(ctx->args[0], ctx->args[1], ARG_IOV, KSPAN_HTTP_WRITE))
HOOK_EXIT(writev)
HOOK_ENTER(recvmsg, on_enter(ctx->args[0], ctx->args[1], ARG_MSG, KSPAN_HTTP_READ))
HOOK_EXIT(recvmsg)
HOOK_ENTER(sendmsg, on_enter(ctx->args[0], ctx->args[1], ARG_MSG, KSPAN_HTTP_WRITE))
HOOK_EXIT(sendmsg)

/* The end of an HTTP stream: userspace ends what is still open on it. */
SEC("tracepoint/syscalls/sys_enter_close")
int kspan_http_close(struct kspan_sys_enter_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (http_level(pid_tgid >> 32) != KSPAN_TRACE_FULL)
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
	struct scratch *s = get_scratch();
	if (!http || !s) {
		bpf_map_delete_elem(&kspan_http_socks, &key);
		return 0;
	}
	__u64 now = bpf_ktime_get_ns();
	struct call a = {.sk = key, .ino = ino, .start_ns = now};
	fill_template(&s->tmpl, &a, ss, pid_tgid, 0, now);
	bpf_map_delete_elem(&kspan_http_socks, &key);
	s->tmpl.kind = KSPAN_HTTP_CLOSE;
	emit(&s->tmpl);
	return 0;
}

/* ---- variant tp_btf: the socket layer's data tracepoints ---------------- */

#define TS_COMPAT 0x0002 /* x86 thread_info.status: an ia32 syscall is running */
#define MSG_PEEK_FLAG 2  /* MSG_PEEK: data looked at, not consumed */

/* x86_64 numbers of the syscalls whose socket data is read: the syscall the
 * data moved in says where its buffer is. */
enum {
	NR_READ = 0,
	NR_WRITE = 1,
	NR_READV = 19,
	NR_WRITEV = 20,
	NR_SENDTO = 44,
	NR_RECVFROM = 45,
	NR_SENDMSG = 46,
	NR_RECVMSG = 47,
};

/* The kind of buffer argument of syscall `nr` moving data in `direction`,
 * or -1: data moved by another syscall (sendfile, splice, recvmmsg,
 * io_uring) or by the kernel itself is not looked at. */
static __always_inline int buffer_kind(long nr, __u32 direction)
{
	if (direction == KSPAN_HTTP_READ) {
		switch (nr) {
		case NR_READ:
		case NR_RECVFROM:
			return ARG_BUF;
		case NR_READV:
			return ARG_IOV;
		case NR_RECVMSG:
			return ARG_MSG;
		}
		return -1;
	}
	switch (nr) {
	case NR_WRITE:
	case NR_SENDTO:
		return ARG_BUF;
	case NR_WRITEV:
		return ARG_IOV;
	case NR_SENDMSG:
		return ARG_MSG;
	}
	return -1;
}

/* sock_recvmsg()/sock_sendmsg() on `sk` returned `ret`: the data is in the
 * syscall's user buffer. Cost order: the process's cached level, the
 * socket's protocol, the socket state (which settles the response to an
 * unrecorded request at once), then the syscall and its buffer. */
static __always_inline void on_sock(struct sock *sk, int ret, int flags, __u32 direction)
{
	if (ret <= 0)
		return;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (http_level(pid_tgid >> 32) != KSPAN_TRACE_FULL)
		return;
	if (!sk || sk->sk_protocol != IPPROTO_TCP)
		return;
	if (direction == KSPAN_HTTP_READ && (flags & MSG_PEEK_FLAG))
		return;
	struct sock_state *ss = bpf_sk_storage_get(&kspan_http_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!ss) {
		kspan_count(&kspan_http_stats, KSPAN_HTTP_STAT_STATE_FULL);
		return;
	}
	if (ss->flags & SOCK_NOT_HTTP)
		return;
	/* The response to an unrecorded request, whichever syscall moves it:
	 * before anything else is looked at. */
	if (skip_unsampled_response(ss, direction == KSPAN_HTTP_READ ? 0 : 1))
		return;
	struct task_struct *task = bpf_get_current_task_btf();
	if (task->thread_info.status & TS_COMPAT)
		return; /* ia32 syscall numbers and argument layouts differ */
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	if (!regs)
		return;
	int kind = buffer_kind(regs->orig_ax, direction);
	if (kind < 0)
		return;
	__u64 ino = ss->ino;
	if (!ino) {
		/* First data on this socket: its file's inode (which records
		 * carry to tell reused socket addresses apart) and addresses. */
		struct socket *sock = sk->sk_socket;
		struct file *file = sock ? sock->file : NULL;
		struct inode *inode = file ? file->f_inode : NULL;
		if (!inode)
			return;
		ino = inode->i_ino;
		init_state(ss, sk, ino, pid_tgid >> 32);
	}
	struct inflight in = {
		.arg = regs->si,
		.fd = (__u32)regs->di,
		.direction = direction,
		.kind = kind,
	};
	/* start_ns 0: the data has moved when these run, so on_data() reads
	 * the clock once (only if it looks further) for both ends. */
	on_data(pid_tgid, sk, ino, &in, ret, ss);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(kspan_http_sk_recv, struct sock *sk, int ret, int flags)
{
	on_sock(sk, ret, flags, KSPAN_HTTP_READ);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(kspan_http_sk_send, struct sock *sk, int ret, int flags)
{
	on_sock(sk, ret, flags, KSPAN_HTTP_WRITE);
	return 0;
}

/* The end of an HTTP stream, for the tp_btf variant: the socket's final
 * state change (after the last data either side sent; in softirq when the
 * peer's last ACK or FIN completes it, so the owner comes from the socket
 * state). */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(kspan_http_sk_state, struct sock *sk, int oldstate, int newstate)
{
	if (newstate != TCP_CLOSE)
		return 0;
	struct sock_state *ss = bpf_sk_storage_get(&kspan_http_sk, (struct sock *)sk, 0, 0);
	if (!ss)
		return 0;
	struct scratch *s = get_scratch();
	if ((ss->flags & SOCK_HTTP) && s) {
		__u64 owner = (__u64)ss->tgid << 32 | ss->tgid;
		__u64 now = bpf_ktime_get_ns();
		struct call a = {.sk = (__u64)sk, .ino = ss->ino, .start_ns = now};
		fill_template(&s->tmpl, &a, ss, owner, 0, now);
		s->tmpl.kind = KSPAN_HTTP_CLOSE;
		emit_from(&s->tmpl, 0, NULL); /* the running task is not the owner */
	}
	bpf_sk_storage_delete(&kspan_http_sk, (struct sock *)sk);
	return 0;
}

/* A thread that exits frees its in-flight slot. */
static __always_inline int forget(int thread)
{
	kspan_forget_cached_level(&kspan_http_lvl);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!thread)
		return 0;
	__u32 tid = (__u32)pid_tgid;
	__u32 idx = tid & infl_mask;
	struct inflight *slot = bpf_map_lookup_elem(&kspan_http_infl, &idx);
	if (slot && slot->tid == tid)
		slot->tid = 0;
	bpf_map_delete_elem(&kspan_http_spill, &tid);
	return 0;
}

/* exec changes comm (and is where containers' processes enter their cgroup). */
SEC("tracepoint/sched/sched_process_exec")
int kspan_http_exec(void *ctx)
{
	return forget(0);
}

/* A tgid freed now may be reused by another process. */
SEC("tracepoint/sched/sched_process_exit")
int kspan_http_gone(void *ctx)
{
	return forget(1);
}
