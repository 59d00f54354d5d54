// Records real ring records as seeds for event_decoder_fuzzer,
// http_spans_fuzzer and dns_spans_fuzzer (corpus/README.md says how the
// checked-in seeds were made). Needs root: it loads kspan's BPF programs.
//
//   record_seeds OUT_DIR SECONDS COMM_PREFIX...
//
// Captures, for SECONDS, every family (process, TCP, syscalls, DNS, HTTP) of
// the processes whose comm starts with one of the prefixes, and writes:
//   OUT_DIR/records/<family>-<n>.rec  each record as the ring held it
// The corpora are made from these by tests/fuzz/corpus/make_seeds.py.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "userspace/capture_filter.h"
#include "userspace/dns_capture.h"
#include "userspace/http_capture.h"
#include "userspace/pin_directory.h"
#include "userspace/process_capture.h"
#include "userspace/ring_reader.h"
#include "userspace/syscall_capture.h"
#include "userspace/tcp_capture.h"

namespace {

class Recorder final : public kspan::EventSink {
 public:
  explicit Recorder(std::filesystem::path dir) : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
  }
  void OnEvent(std::span<const std::byte> record) noexcept override {
    std::uint32_t type = 0;
    if (record.size() >= sizeof(type)) std::memcpy(&type, record.data(), sizeof(type));
    std::lock_guard lock(mu_);
    const int n = count_[type]++;
    if (n >= 200) return;  // plenty of each kind
    std::ofstream out(dir_ / (Family(type) + "-" + std::to_string(n) + ".rec"), std::ios::binary);
    out.write(reinterpret_cast<const char*>(record.data()), static_cast<std::streamsize>(record.size()));
  }
  void Summary() {
    std::lock_guard lock(mu_);
    for (const auto& [type, n] : count_) std::printf("%s: %d records\n", Family(type).c_str(), n);
  }

 private:
  static std::string Family(std::uint32_t type) {
    switch (type) {
      case KSPAN_EVENT_TCP_CONNECT: return "tcp_connect";
      case KSPAN_EVENT_TCP_ACCEPT: return "tcp_accept";
      case KSPAN_EVENT_TCP_CONN: return "tcp_conn";
      case KSPAN_EVENT_TCP_CONN_EVENT: return "tcp_note";
      case KSPAN_EVENT_SYSCALL: return "syscall";
      case KSPAN_EVENT_DNS: return "dns";
      case KSPAN_EVENT_HTTP: return "http";
      case KSPAN_EVENT_PROCESS: return "process";
      default: return "type" + std::to_string(type);
    }
  }
  std::filesystem::path dir_;
  std::mutex mu_;
  std::map<std::uint32_t, int> count_;
};

#define OR_DIE(expr)                                                              \
  do {                                                                            \
    if (auto _s = (expr); !_s.ok()) {                                             \
      std::fprintf(stderr, "%s: %s\n", #expr, std::string(_s.message()).c_str()); \
      return 1;                                                                   \
    }                                                                             \
  } while (0)

}  // namespace

int main(int argc, char** argv) {
  using namespace kspan;
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s OUT_DIR SECONDS COMM_PREFIX...\n", argv[0]);
    return 2;
  }
  Recorder recorder(std::filesystem::path(argv[1]) / "records");
  auto pins = PinDirectory::Create("/sys/fs/bpf/kspan-record-seeds");
  OR_DIE(pins.status());
  const auto self = static_cast<std::uint32_t>(getpid());

  ProcessCapture process({.self_tgid = self, .pin_dir = pins->path()});
  OR_DIE(process.Start());
  CaptureOptions tcp_opts;
  tcp_opts.self_tgid = self;
  tcp_opts.wakeup_bytes = 0;
  tcp_opts.pin_dir = pins->path();
  TcpCapture tcp(tcp_opts);
  OR_DIE(tcp.Start());
  SyscallCaptureOptions sys_opts;
  sys_opts.self_tgid = self;
  sys_opts.wakeup_bytes = 0;
  sys_opts.pin_dir = pins->path();
  sys_opts.class_min = {};  // every syscall of the selected processes, however fast
  SyscallCapture syscalls(sys_opts);
  OR_DIE(syscalls.Start());
  DnsCapture dns({.self_tgid = self, .pin_dir = pins->path()});
  OR_DIE(dns.Start());
  HttpCapture http({.self_tgid = self, .pin_dir = pins->path()});
  OR_DIE(http.Start());

  auto filter = CaptureFilter::Open(pins->path());
  OR_DIE(filter.status());
  for (int i = 3; i < argc; ++i) OR_DIE(filter->AllowCommPrefix(argv[i]));
  // Nothing of the other processes.
  OR_DIE(filter->SetSlowThreshold(std::chrono::nanoseconds(0)));

  RingReader reader;
  OR_DIE(reader.Add(process.ring_fd(), "kspan_proc_ring", &recorder));
  OR_DIE(reader.Add(tcp.ring_fd(), "kspan_tcp_ring", &recorder));
  OR_DIE(reader.Add(syscalls.ring_fd(), "kspan_sys_ring", &recorder));
  OR_DIE(reader.AddPerCpu(syscalls.record_rings(), syscalls.bell_fd(), &recorder));
  OR_DIE(reader.Add(dns.ring_fd(), "kspan_dns_ring", &recorder));
  OR_DIE(reader.Add(http.ring_fd(), "kspan_http_ring", &recorder));
  OR_DIE(reader.Start(std::chrono::milliseconds(50)));
  std::printf("recording for %s s\n", argv[2]);
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::seconds(std::atoi(argv[2])));
  reader.Stop();
  recorder.Summary();
  return 0;
}
