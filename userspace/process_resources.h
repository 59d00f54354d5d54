// One OpenTelemetry resource per observed process: service.name (the
// executable's name), process.pid, process.executable.*, host.name.
//
// Built once per process from /proc and shared by all of its spans, so the
// batcher groups them under one ResourceSpans. Bounded: entries expire, and
// a pid reused by a new program gets a new resource.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "exporter/span.h"

namespace kspan {

class ProcessResources {
 public:
  struct Options {
    std::string proc_root = "/proc";
    std::string host_name;  // empty: gethostname()
    std::size_t max_entries = 8192;
    std::chrono::seconds ttl{60};
  };

  ProcessResources();
  explicit ProcessResources(Options options);

  // `comm` (from the kernel event) names the process when it has already
  // exited and /proc no longer has it. Pid 0 is the host itself (service.name
  // "kernel"). Not thread-safe: one per producer.
  std::shared_ptr<const Resource> For(std::uint32_t pid, std::string_view comm);

  const std::string& host_name() const { return host_name_; }

 private:
  struct Entry {
    std::shared_ptr<const Resource> resource;
    std::string exe_path;
    std::chrono::steady_clock::time_point built;
  };
  std::shared_ptr<const Resource> Build(std::uint32_t pid, std::string_view comm,
                                        std::string* exe_path) const;

  Options options_;
  std::string host_name_;
  std::unordered_map<std::uint32_t, Entry> cache_;
  std::shared_ptr<const Resource> kernel_;
};

}  // namespace kspan
