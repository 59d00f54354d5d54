// Loader of the HTTP/1.x program family (bpf/http.bpf.c): request and status
// lines and the W3C trace context headers read from the TCP socket syscalls
// of the processes traced in full. Explicit stages like the other families.
// Two attach variants (bpf/http.bpf.c): tp_btf on the socket layer's
// sock_recv_length/sock_send_length tracepoints where the kernel has them
// (6.3+), else the classic syscall tracepoints; Start() tries them in that
// order and logs one line naming the variant taken.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "bpf/http.h"

struct http_bpf;

namespace kspan {

enum class HttpVariant {
  kTpBtf,       // tp_btf/sock_recv_length, sock_send_length, inet_sock_set_state
  kTracepoint,  // syscalls:sys_enter_*/sys_exit_* of the socket data syscalls, and close
};

// "tp_btf", "tracepoint".
std::string_view HttpVariantName(HttpVariant v);
std::optional<HttpVariant> ParseHttpVariant(std::string_view name);
// The order Start() tries them in.
inline constexpr std::array kHttpVariants = {HttpVariant::kTpBtf, HttpVariant::kTracepoint};

// Whether the running kernel has the socket data tracepoints the tp_btf
// variant attaches to (sock:sock_recv_length and sock:sock_send_length).
bool KernelHasSockLengthTracepoints();

struct HttpCaptureOptions {
  std::uint32_t self_tgid = 0;
  std::size_t ring_buffer_bytes = 4u << 20;
  std::size_t wakeup_bytes = 0;  // 0: wake on every record
  std::string btf_path;
  std::string pin_dir;  // required: shared filter maps are pinned here
  // Only this variant (tests, or an operator's choice); empty = try in order.
  std::optional<HttpVariant> force_variant;
  // Requests without trace context (roots) recorded per process and second;
  // 0 = all. Requests with a sampled traceparent are always recorded, those
  // with an unsampled one never (bpf/http.h).
  std::uint32_t root_per_second = 0;
};

using HttpStats = std::array<std::uint64_t, KSPAN_HTTP_STAT_MAX>;

class HttpCapture {
 public:
  explicit HttpCapture(HttpCaptureOptions options);
  ~HttpCapture();
  HttpCapture(const HttpCapture&) = delete;
  HttpCapture& operator=(const HttpCapture&) = delete;

  // The stages for one variant (the forced one, else the first).
  absl::Status Open();
  absl::Status Configure();
  absl::Status Load();
  absl::Status Attach();
  // The stages for each variant in turn until one loads and attaches.
  absl::Status Start();
  void Detach();

  int ring_fd() const;
  HttpStats ReadStats() const;
  // The variant taken ("tp_btf", "tracepoint"); empty before Start.
  const std::string& variant() const { return variant_; }

 private:
  void Destroy();

  HttpCaptureOptions options_;
  HttpVariant attempt_;
  http_bpf* skel_ = nullptr;
  std::string variant_;
};

}  // namespace kspan
