// Fixture for the TCP family's privileged tests: loads the family in one
// variant (the test parameter) on a private pin directory, drains its ring
// on a thread, and keeps every decoded record for the test to look up.
#pragma once

#include <gtest/gtest.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "tests/privileged/privileged.h"
#include "userspace/event_decoder.h"
#include "userspace/pin_directory.h"
#include "userspace/ring_reader.h"
#include "userspace/tcp_capture.h"

namespace kspan::testing {

class TcpCollector : public KernelEventHandler {
 public:
  void OnTcpConnect(const kspan_tcp_connect_event& e) noexcept override { Add(connects_, e); }
  void OnTcpAccept(const kspan_tcp_accept_event& e) noexcept override { Add(accepts_, e); }
  void OnTcpConn(const kspan_tcp_conn_event& e) noexcept override { Add(conns_, e); }
  void OnTcpNote(const kspan_tcp_note& e) noexcept override { Add(notes_, e); }

  template <typename Record>
  using Pred = std::function<bool(const Record&)>;

  std::optional<kspan_tcp_connect_event> WaitConnect(Pred<kspan_tcp_connect_event> p,
                                                     std::chrono::milliseconds t) {
    return Wait(connects_, p, t);
  }
  std::optional<kspan_tcp_accept_event> WaitAccept(Pred<kspan_tcp_accept_event> p,
                                                   std::chrono::milliseconds t) {
    return Wait(accepts_, p, t);
  }
  std::optional<kspan_tcp_conn_event> WaitConn(Pred<kspan_tcp_conn_event> p,
                                               std::chrono::milliseconds t) {
    return Wait(conns_, p, t);
  }
  std::vector<kspan_tcp_note> NotesOf(std::uint64_t sock_id) {
    std::lock_guard lock(mu_);
    std::vector<kspan_tcp_note> out;
    for (const auto& n : notes_) {
      if (n.sock_id == sock_id) out.push_back(n);
    }
    return out;
  }
  std::size_t ConnectsFrom(std::uint32_t pid) {
    std::lock_guard lock(mu_);
    std::size_t n = 0;
    for (const auto& e : connects_) n += e.pid == pid;
    return n;
  }

 private:
  template <typename Record>
  void Add(std::vector<Record>& v, const Record& r) {
    std::lock_guard lock(mu_);
    v.push_back(r);
    cv_.notify_all();
  }
  template <typename Record>
  std::optional<Record> Wait(std::vector<Record>& v, const Pred<Record>& p,
                             std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    std::optional<Record> found;
    cv_.wait_for(lock, timeout, [&] {
      for (const auto& r : v) {
        if (p(r)) {
          found = r;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<kspan_tcp_connect_event> connects_;
  std::vector<kspan_tcp_accept_event> accepts_;
  std::vector<kspan_tcp_conn_event> conns_;
  std::vector<kspan_tcp_note> notes_;
};

class TcpCaptureTest : public ::testing::TestWithParam<TcpVariant> {
 protected:
  // Loads exactly the parameter's variant: a kernel that refuses it fails
  // the test under KSPAN_REQUIRE_BPF (every supported kernel has all three).
  void StartCapture(std::uint32_t self_tgid,
                    const std::function<void(CaptureOptions&)>& tweak = {},
                    bool start_reader = true) {
    auto pins = PinDirectory::Create(TestPinDir());
    ASSERT_TRUE(pins.ok()) << pins.status();
    pins_.emplace(std::move(*pins));
    CaptureOptions opts;
    opts.self_tgid = self_tgid;
    opts.ring_buffer_bytes = 256 << 10;
    opts.wakeup_bytes = 0;
    opts.pin_dir = pins_->path();
    if (tweak) tweak(opts);
    capture_ = std::make_unique<TcpCapture>(opts);
    auto status = capture_->Start({GetParam()});
    ASSERT_TRUE(status.ok()) << status;
    ReportVariant("tcp_state.forced", capture_->variant());
    ReportVariant("tcp_accept", capture_->accept_variant());
    ASSERT_TRUE(reader_.Add(capture_->ring_fd(), "kspan_tcp_ring", &decoder_).ok());
    if (start_reader) {
      ASSERT_TRUE(reader_.Start(std::chrono::milliseconds(10)).ok());
    }
  }

  void TearDown() override {
    if (capture_) capture_->Detach();
    reader_.Stop();
    capture_.reset();
    pins_.reset();
  }

  MetricsRegistry metrics_;
  TcpCollector collector_;
  EventDecoder decoder_{collector_, metrics_};
  RingReader reader_;
  std::optional<PinDirectory> pins_;
  std::unique_ptr<TcpCapture> capture_;
};

inline std::string VariantParamName(const ::testing::TestParamInfo<TcpVariant>& info) {
  return VariantName(info.param);
}

#define KSPAN_INSTANTIATE_TCP_VARIANTS(Suite)                                              \
  INSTANTIATE_TEST_SUITE_P(Variants, Suite,                                                \
                           ::testing::Values(::kspan::TcpVariant::kTpBtf,                  \
                                             ::kspan::TcpVariant::kRawTp,                  \
                                             ::kspan::TcpVariant::kTracepoint),            \
                           ::kspan::testing::VariantParamName)

}  // namespace kspan::testing
