// Overload: more connect records than the ring holds, with nobody reading.
// Every attempt must be accounted for exactly: either it reached userspace
// or the kernel counted it as lost.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/privileged/privileged.h"
#include "tests/privileged/tcp_fixture.h"
#include "userspace/capture_filter.h"

namespace kspan {
namespace {

using ::kspan::testing::ClosedPort;
using ::kspan::testing::ConnectLoopback;
using ::kspan::testing::TcpCaptureTest;

class TcpOverload : public TcpCaptureTest {};

TEST_P(TcpOverload, GeneratedEqualsReceivedPlusCountedDrops) {
  KSPAN_REQUIRE_BPF();
  // Only this process (other processes' connects would share the counters),
  // a one-page ring (about 40 records), and the reader not started.
  StartCapture(
      0,
      [](CaptureOptions& o) {
        o.tcp_selected_only = true;
        o.ring_buffer_bytes = 4096;
      },
      /*start_reader=*/false);
  auto filter = CaptureFilter::Open(pins_->path());
  ASSERT_TRUE(filter.ok()) << filter.status();
  ASSERT_TRUE(filter->AllowPid(static_cast<std::uint32_t>(getpid())).ok());

  // Refused connects: exactly one record each (no connection to follow).
  constexpr std::uint64_t kGenerated = 2000;
  ClosedPort closed(AF_INET);
  for (std::uint64_t i = 0; i < kGenerated; ++i) {
    auto r = ConnectLoopback(AF_INET, closed.port());
    ASSERT_EQ(r.err, ECONNREFUSED);
    close(r.fd);
  }

  // Drain everything that made it into the ring.
  while (reader_.PollOnce(std::chrono::milliseconds(0)) > 0) {
  }
  const auto st = capture_->ReadStats();
  const std::uint64_t received = decoder_.decoded();
  const std::uint64_t lost = st[KSPAN_TCP_STAT_RING_FULL] + st[KSPAN_TCP_STAT_START_TABLE_FULL];
  EXPECT_GT(st[KSPAN_TCP_STAT_RING_FULL], 0u) << "the ring never filled: no overload";
  EXPECT_EQ(received, st[KSPAN_TCP_STAT_CONNECT_EMITTED]);
  EXPECT_EQ(received + lost, kGenerated)
      << "received " << received << ", ring full " << st[KSPAN_TCP_STAT_RING_FULL]
      << ", start table full " << st[KSPAN_TCP_STAT_START_TABLE_FULL];
  EXPECT_EQ(decoder_.errors(), 0u);
}

KSPAN_INSTANTIATE_TCP_VARIANTS(TcpOverload);

}  // namespace
}  // namespace kspan
