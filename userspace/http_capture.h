// Loader of the HTTP/1.x program family (bpf/http.bpf.c): request and status
// lines and the W3C trace context headers read from the TCP socket syscalls
// of the processes traced in full. Explicit stages like the other families;
// one variant (classic syscall tracepoints).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "bpf/http.h"

struct http_bpf;

namespace kspan {

struct HttpCaptureOptions {
  std::uint32_t self_tgid = 0;
  std::size_t ring_buffer_bytes = 4u << 20;
  std::size_t wakeup_bytes = 0;  // 0: wake on every record
  std::string btf_path;
  std::string pin_dir;  // required: shared filter maps are pinned here
};

using HttpStats = std::array<std::uint64_t, KSPAN_HTTP_STAT_MAX>;

class HttpCapture {
 public:
  explicit HttpCapture(HttpCaptureOptions options);
  ~HttpCapture();
  HttpCapture(const HttpCapture&) = delete;
  HttpCapture& operator=(const HttpCapture&) = delete;

  absl::Status Open();
  absl::Status Configure();
  absl::Status Load();
  absl::Status Attach();
  absl::Status Start();  // all four
  void Detach();

  int ring_fd() const;
  HttpStats ReadStats() const;

 private:
  HttpCaptureOptions options_;
  http_bpf* skel_ = nullptr;
};

}  // namespace kspan
