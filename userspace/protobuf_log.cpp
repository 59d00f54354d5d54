#include "userspace/protobuf_log.h"

#include <atomic>
#include <mutex>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "spdlog/spdlog.h"

namespace kspan {
namespace {

struct RateState {
  std::mutex mu;
  std::chrono::steady_clock::time_point last{};
  bool logged_once = false;
  std::uint64_t left_out = 0;  // since the last line logged
  std::chrono::milliseconds min_interval{10000};
};

RateState& State() {
  static RateState* state = new RateState();  // never destroyed: used until exit
  return *state;
}

std::atomic<std::uint64_t> suppressed_total{0};

void Handler(google::protobuf::LogLevel level, const char* filename, int line, const std::string& message) {
  if (level >= google::protobuf::LOGLEVEL_FATAL) {
    spdlog::critical("libprotobuf {}:{}: {}", filename, line, message);
    return;
  }
  RateState& s = State();
  std::uint64_t left_out = 0;
  {
    std::lock_guard lock(s.mu);
    const auto now = std::chrono::steady_clock::now();
    if (s.logged_once && now - s.last < s.min_interval) {
      ++s.left_out;
      suppressed_total.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    s.logged_once = true;
    s.last = now;
    left_out = s.left_out;
    s.left_out = 0;
  }
  // The message names a field, never its contents; the file/line say where.
  if (left_out > 0) {
    spdlog::warn("libprotobuf: {} ({} similar lines left out)", message, left_out);
  } else {
    spdlog::warn("libprotobuf: {}", message);
  }
}

}  // namespace

void RouteProtobufLogsToSpdlog(std::chrono::milliseconds min_interval) {
  static std::once_flag once;
  {
    std::lock_guard lock(State().mu);
    State().min_interval = min_interval;
  }
  std::call_once(once, [] { google::protobuf::SetLogHandler(&Handler); });
}

std::uint64_t ProtobufLogLinesSuppressed() { return suppressed_total.load(std::memory_order_relaxed); }

}  // namespace kspan
