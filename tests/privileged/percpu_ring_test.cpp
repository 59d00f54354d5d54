// The per-CPU record ring reader (userspace/percpu_ring.*, RingReader's
// AddPerCpu) against real mmapable BPF arrays. The test is the producer:
// through a mapping of its own it follows the protocol of
// bpf/kspan_common.h exactly as the BPF programs do.
#include <bpf/bpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/privileged/privileged.h"
#include "userspace/percpu_ring.h"
#include "userspace/ring_reader.h"

namespace kspan {
namespace {

constexpr std::uint32_t kSlotBytes = 136;  // sizeof(kspan_syscall_event)

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

int CreateArray(const char* name, std::uint32_t value_size, std::uint32_t entries,
                std::uint32_t flags = BPF_F_MMAPABLE) {
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = flags);
  return bpf_map_create(BPF_MAP_TYPE_ARRAY, name, sizeof(std::uint32_t), value_size, entries, &opts);
}

// The two maps of a ring, sized as `spec` says.
struct RingMaps {
  RingMaps(std::uint32_t cpus, std::uint32_t slots, std::uint32_t slot_bytes = kSlotBytes)
      : records(CreateArray("test_rec", slot_bytes, cpus * slots)),
        positions(CreateArray("test_pos", sizeof(kspan_percpu_pos), cpus)) {
    spec.name = "test_ring";
    spec.records_fd = records.get();
    spec.positions_fd = positions.get();
    spec.cpus = cpus;
    spec.slots_per_cpu = slots;
    spec.slot_bytes = slot_bytes;
  }
  bool ok() const { return records.get() >= 0 && positions.get() >= 0; }
  Fd records;
  Fd positions;
  PerCpuRingSpec spec;
};

std::size_t PageRound(std::size_t n) {
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return (n + page - 1) / page * page;
}

// The producer side of bpf/kspan_common.h, from userspace: its own shared
// mappings of both maps.
class Producer {
 public:
  explicit Producer(const PerCpuRingSpec& spec)
      : slots_(spec.slots_per_cpu),
        slot_bytes_(spec.slot_bytes),
        rec_len_(PageRound(std::size_t{spec.cpus} * spec.slots_per_cpu * spec.slot_bytes)),
        pos_len_(PageRound(std::size_t{spec.cpus} * sizeof(kspan_percpu_pos))) {
    void* r = mmap(nullptr, rec_len_, PROT_READ | PROT_WRITE, MAP_SHARED, spec.records_fd, 0);
    void* p = mmap(nullptr, pos_len_, PROT_READ | PROT_WRITE, MAP_SHARED, spec.positions_fd, 0);
    rec_ = r == MAP_FAILED ? nullptr : static_cast<std::byte*>(r);
    pos_ = p == MAP_FAILED ? nullptr : static_cast<kspan_percpu_pos*>(p);
  }
  ~Producer() {
    if (rec_) munmap(rec_, rec_len_);
    if (pos_) munmap(pos_, pos_len_);
  }
  bool ok() const { return rec_ != nullptr && pos_ != nullptr; }

  // False (and nothing written) when the CPU's ring is full.
  bool Write(std::uint32_t cpu, const std::vector<std::byte>& record) {
    kspan_percpu_pos* pos = &pos_[cpu];
    const std::uint64_t head = __atomic_load_n(&pos->head, __ATOMIC_RELAXED);
    const std::uint64_t tail = __atomic_load_n(&pos->tail, __ATOMIC_ACQUIRE);
    if (head - tail >= slots_) return false;
    std::memcpy(Slot(cpu, head % slots_), record.data(), slot_bytes_);
    __atomic_store_n(&pos->head, head + 1, __ATOMIC_RELEASE);
    return true;
  }
  std::byte* Slot(std::uint32_t cpu, std::uint64_t index) {
    return rec_ + (std::size_t{cpu} * slots_ + index) * slot_bytes_;
  }
  kspan_percpu_pos& pos(std::uint32_t cpu) { return pos_[cpu]; }

 private:
  std::uint32_t slots_;
  std::uint32_t slot_bytes_;
  std::size_t rec_len_;
  std::size_t pos_len_;
  std::byte* rec_ = nullptr;
  kspan_percpu_pos* pos_ = nullptr;
};

std::uint64_t Mix(std::uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Record `seq` of `cpu`: its first word names it, every other word is
// derived from it, so a torn, stale or misplaced record shows.
std::vector<std::byte> MakeRecord(std::uint32_t cpu, std::uint64_t seq, std::uint32_t bytes = kSlotBytes) {
  std::vector<std::byte> r(bytes);
  const std::uint64_t id = (std::uint64_t{cpu} << 48) | seq;
  std::memcpy(r.data(), &id, 8);
  for (std::size_t w = 1; w < bytes / 8; ++w) {
    const std::uint64_t v = Mix(id * 131 + w);
    std::memcpy(r.data() + w * 8, &v, 8);
  }
  return r;
}

struct CopyingSink : EventSink {
  std::vector<std::vector<std::byte>> records;
  void OnEvent(std::span<const std::byte> record) noexcept override {
    records.emplace_back(record.begin(), record.end());
  }
};

struct CountingSink : EventSink {
  std::size_t records = 0;
  void OnEvent(std::span<const std::byte>) noexcept override { ++records; }
};

#define SETUP_RING(maps, cpus, slots)                                  \
  KSPAN_REQUIRE_BPF();                                                 \
  RingMaps maps(cpus, slots);                                          \
  ASSERT_TRUE(maps.ok()) << "bpf_map_create: " << std::strerror(errno)

TEST(PerCpuRingTest, DeliversEachCpusRecordsInOrderWithTheirBytes) {
  SETUP_RING(maps, 4, 8);
  auto ring = PerCpuRing::Open(maps.spec);
  ASSERT_TRUE(ring.ok()) << ring.status();
  Producer producer(maps.spec);
  ASSERT_TRUE(producer.ok());

  // Two rounds; the second wraps every busy CPU's ring.
  const std::uint64_t rounds[2][4] = {{5, 8, 0, 3}, {6, 6, 0, 7}};
  std::uint64_t written[4] = {0, 0, 0, 0};
  for (const auto& counts : rounds) {
    std::uint64_t before[4];
    std::memcpy(before, written, sizeof(before));
    // Interleaved across CPUs, as concurrent programs would write.
    for (std::uint64_t i = 0; i < 8; ++i) {
      for (std::uint32_t cpu = 0; cpu < 4; ++cpu) {
        if (i < counts[cpu]) {
          ASSERT_TRUE(producer.Write(cpu, MakeRecord(cpu, written[cpu]++)));
        }
      }
    }
    CopyingSink sink;
    const std::size_t n = (*ring)->Drain(&sink);
    std::vector<std::vector<std::byte>> expected;
    for (std::uint32_t cpu = 0; cpu < 4; ++cpu) {
      for (std::uint64_t s = before[cpu]; s < written[cpu]; ++s) expected.push_back(MakeRecord(cpu, s));
    }
    EXPECT_EQ(n, expected.size());
    ASSERT_EQ(sink.records.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(sink.records[i], expected[i]) << "record " << i;
    for (std::uint32_t cpu = 0; cpu < 4; ++cpu) {
      EXPECT_EQ(producer.pos(cpu).head, written[cpu]);
      EXPECT_EQ(producer.pos(cpu).tail, written[cpu]) << "tail of CPU " << cpu;
    }
  }
  CopyingSink empty;
  EXPECT_EQ((*ring)->Drain(&empty), 0u);
  EXPECT_TRUE(empty.records.empty());
  EXPECT_EQ((*ring)->Usage().used_bytes, 0u);
}

TEST(PerCpuRingTest, FullRingRefusesTheProducerAndKeepsItsRecords) {
  SETUP_RING(maps, 2, 4);
  auto ring = PerCpuRing::Open(maps.spec);
  ASSERT_TRUE(ring.ok()) << ring.status();
  Producer producer(maps.spec);
  ASSERT_TRUE(producer.ok());

  for (std::uint64_t s = 0; s < 4; ++s) ASSERT_TRUE(producer.Write(0, MakeRecord(0, s)));
  EXPECT_FALSE(producer.Write(0, MakeRecord(0, 99)));  // head - tail == slots
  EXPECT_TRUE(producer.Write(1, MakeRecord(1, 0)));     // the other CPU is not full
  EXPECT_EQ(producer.pos(0).head, 4u);
  for (std::uint64_t s = 0; s < 4; ++s) {
    EXPECT_EQ(std::memcmp(producer.Slot(0, s), MakeRecord(0, s).data(), kSlotBytes), 0) << "slot " << s;
  }
  EXPECT_EQ((*ring)->Usage().used_bytes, 5u * kSlotBytes);
  EXPECT_DOUBLE_EQ((*ring)->MaxCpuUsedFraction(), 1.0);

  CopyingSink sink;
  ASSERT_EQ((*ring)->Drain(&sink), 5u);
  ASSERT_EQ(sink.records.size(), 5u);
  for (std::uint64_t s = 0; s < 4; ++s) EXPECT_EQ(sink.records[s], MakeRecord(0, s));
  EXPECT_EQ(sink.records[4], MakeRecord(1, 0));

  // Drained: the slots are the producer's again.
  ASSERT_TRUE(producer.Write(0, MakeRecord(0, 4)));
  EXPECT_EQ(std::memcmp(producer.Slot(0, 0), MakeRecord(0, 4).data(), kSlotBytes), 0);
  CopyingSink after;
  ASSERT_EQ((*ring)->Drain(&after), 1u);
  EXPECT_EQ(after.records[0], MakeRecord(0, 4));
}

TEST(PerCpuRingTest, DrainHonoursItsPerCpuLimit) {
  SETUP_RING(maps, 2, 8);
  auto ring = PerCpuRing::Open(maps.spec);
  ASSERT_TRUE(ring.ok()) << ring.status();
  Producer producer(maps.spec);
  ASSERT_TRUE(producer.ok());
  for (std::uint32_t cpu = 0; cpu < 2; ++cpu) {
    for (std::uint64_t s = 0; s < 5; ++s) ASSERT_TRUE(producer.Write(cpu, MakeRecord(cpu, s)));
  }
  CopyingSink sink;
  EXPECT_EQ((*ring)->Drain(&sink, 2), 4u);
  EXPECT_EQ(producer.pos(0).tail, 2u);
  EXPECT_EQ(producer.pos(1).tail, 2u);
  EXPECT_EQ((*ring)->Drain(&sink, 2), 4u);
  EXPECT_EQ((*ring)->Drain(&sink), 2u);
  const std::vector<std::pair<std::uint32_t, std::uint64_t>> order = {
      {0, 0}, {0, 1}, {1, 0}, {1, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {0, 4}, {1, 4}};
  ASSERT_EQ(sink.records.size(), order.size());
  for (std::size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(sink.records[i], MakeRecord(order[i].first, order[i].second)) << "record " << i;
  }
}

TEST(PerCpuRingTest, UsageCountsWaitingRecordsPerCpu) {
  SETUP_RING(maps, 3, 16);
  auto ring = PerCpuRing::Open(maps.spec);
  ASSERT_TRUE(ring.ok()) << ring.status();
  Producer producer(maps.spec);
  ASSERT_TRUE(producer.ok());

  RingUsage u = (*ring)->Usage();
  EXPECT_EQ(u.size_bytes, 3u * 16 * kSlotBytes);
  EXPECT_EQ(u.used_bytes, 0u);
  EXPECT_DOUBLE_EQ((*ring)->MaxCpuUsedFraction(), 0.0);

  for (std::uint64_t s = 0; s < 3; ++s) ASSERT_TRUE(producer.Write(0, MakeRecord(0, s)));
  for (std::uint64_t s = 0; s < 12; ++s) ASSERT_TRUE(producer.Write(2, MakeRecord(2, s)));
  u = (*ring)->Usage();
  EXPECT_EQ(u.size_bytes, 3u * 16 * kSlotBytes);
  EXPECT_EQ(u.used_bytes, 15u * kSlotBytes);
  EXPECT_DOUBLE_EQ((*ring)->MaxCpuUsedFraction(), 12.0 / 16);

  CopyingSink sink;
  EXPECT_EQ((*ring)->Drain(&sink, 10), 13u);
  EXPECT_EQ((*ring)->Usage().used_bytes, 2u * kSlotBytes);
  EXPECT_DOUBLE_EQ((*ring)->MaxCpuUsedFraction(), 2.0 / 16);
  EXPECT_EQ((*ring)->Drain(&sink), 2u);
  EXPECT_EQ((*ring)->Usage().used_bytes, 0u);
}

TEST(PerCpuRingTest, CorruptHeadDeliversNothingFromThatCpu) {
  SETUP_RING(maps, 2, 4);
  auto ring = PerCpuRing::Open(maps.spec);
  ASSERT_TRUE(ring.ok()) << ring.status();
  Producer producer(maps.spec);
  ASSERT_TRUE(producer.ok());
  for (std::uint64_t s = 0; s < 2; ++s) ASSERT_TRUE(producer.Write(1, MakeRecord(1, s)));
  __atomic_store_n(&producer.pos(0).head, 5, __ATOMIC_RELEASE);  // a ring and one past tail 0

  CopyingSink sink;
  EXPECT_EQ((*ring)->Drain(&sink), 2u);
  ASSERT_EQ(sink.records.size(), 2u);
  EXPECT_EQ(sink.records[0], MakeRecord(1, 0));
  EXPECT_EQ(sink.records[1], MakeRecord(1, 1));
  EXPECT_EQ(producer.pos(0).tail, 0u);
  EXPECT_EQ((*ring)->corrupt_positions(), 1u);
  // Shown as a full CPU ring, not as more bytes than the ring has.
  EXPECT_EQ((*ring)->Usage().used_bytes, 4u * kSlotBytes);
  EXPECT_EQ((*ring)->Drain(&sink), 0u);
  EXPECT_EQ((*ring)->corrupt_positions(), 2u);
}

TEST(PerCpuRingTest, OpenRefusesMapsThatDoNotMatchTheSpec) {
  SETUP_RING(maps, 2, 8);
  ASSERT_TRUE(PerCpuRing::Open(maps.spec).ok());

  auto refused = [&](PerCpuRingSpec spec, absl::StatusCode code, const std::string& words) {
    auto r = PerCpuRing::Open(spec);
    EXPECT_FALSE(r.ok());
    if (r.ok()) return;
    EXPECT_EQ(r.status().code(), code) << r.status();
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status();
  };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;

  Fd plain_rec(CreateArray("plain_rec", kSlotBytes, 16, 0));
  Fd plain_pos(CreateArray("plain_pos", sizeof(kspan_percpu_pos), 2, 0));
  Fd small_rec(CreateArray("small_rec", 128, 16));
  Fd long_rec(CreateArray("long_rec", kSlotBytes, 17));
  Fd small_pos(CreateArray("small_pos", 64, 2));
  Fd long_pos(CreateArray("long_pos", sizeof(kspan_percpu_pos), 3));
  Fd hash(bpf_map_create(BPF_MAP_TYPE_HASH, "hash_rec", 4, kSlotBytes, 16, nullptr));
  for (int fd : {plain_rec.get(), plain_pos.get(), small_rec.get(), long_rec.get(), small_pos.get(),
                 long_pos.get(), hash.get()}) {
    ASSERT_GE(fd, 0) << std::strerror(errno);
  }

  // Each case: one change to a valid spec, and the words of the refusal.
  struct Case {
    std::function<void(PerCpuRingSpec&)> change;
    absl::StatusCode code;
    const char* words;
  };
  const Case cases[] = {
      {[&](auto& s) { s.records_fd = plain_rec.get(); }, kInvalid, "BPF_F_MMAPABLE"},
      {[&](auto& s) { s.positions_fd = plain_pos.get(); }, kInvalid, "BPF_F_MMAPABLE"},
      {[&](auto& s) { s.records_fd = small_rec.get(); }, kInvalid, "value_size 128, expected 136"},
      {[&](auto& s) { s.records_fd = long_rec.get(); }, kInvalid, "max_entries 17, expected 16"},
      {[&](auto& s) { s.positions_fd = small_pos.get(); }, kInvalid, "value_size 64, expected 128"},
      {[&](auto& s) { s.positions_fd = long_pos.get(); }, kInvalid, "max_entries 3, expected 2"},
      {[&](auto& s) { s.records_fd = hash.get(); }, kInvalid, "expected an ARRAY"},
      {[&](auto& s) { s.positions_fd = maps.records.get(); }, kInvalid, "positions map"},  // swapped
      {[](auto& s) { s.slots_per_cpu = 6; }, kInvalid, "power of two"},
      {[](auto& s) { s.slot_bytes = 132; }, kInvalid, "multiple of 8"},
      {[](auto& s) { s.cpus = 0; }, kInvalid, "no CPUs"},
      {[](auto& s) { s.bell_every = 3; }, kInvalid, "a doorbell every 3 records"},
      {[](auto& s) { s.bell_every = 16; }, kInvalid, "power of two up to 8"},
      {[](auto& s) { s.cpus = 4; }, kInvalid, "max_entries 16, expected 32"},  // maps for two
      {[](auto& s) { s.records_fd = -1; }, absl::StatusCode::kInternal, "records map"},
  };
  for (const Case& c : cases) {
    PerCpuRingSpec s = maps.spec;
    c.change(s);
    refused(s, c.code, c.words);
  }
}

// The doorbell each CPU's producer rings (bpf/kspan_common.h): bell_every
// records past where the CPU was when the ring was opened.
TEST(PerCpuRingTest, OpenSetsEachCpusFirstDoorbell) {
  SETUP_RING(maps, 2, 16);
  maps.spec.bell_every = 4;
  Producer producer(maps.spec);
  ASSERT_TRUE(producer.ok());
  for (std::uint64_t i = 0; i < 5; ++i) ASSERT_TRUE(producer.Write(1, MakeRecord(1, i)));
  auto ring = PerCpuRing::Open(maps.spec);
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_EQ(producer.pos(0).bell_at, 4u);
  EXPECT_EQ(producer.pos(1).bell_at, 9u);

  // Without doorbells the positions' bell_at is left alone.
  RingMaps quiet(2, 16);
  ASSERT_TRUE(quiet.ok());
  Producer quiet_producer(quiet.spec);
  ASSERT_TRUE(quiet_producer.ok());
  ASSERT_TRUE(PerCpuRing::Open(quiet.spec).ok());
  EXPECT_EQ(quiet_producer.pos(0).bell_at, 0u);
}

// After a drain: a CPU whose records trickle in rings bell_every records
// past its tail and the reader may wait its whole period; a CPU that wrote
// more than a doorbell's worth per period is drained on a timer (when a
// quarter of its ring would be in use, 1 ms at least) and rings only at
// half its ring.
TEST(PerCpuRingTest, ArmDoorbellsPutsBusyCpusOnATimer) {
  SETUP_RING(maps, 2, 1024);
  maps.spec.bell_every = 16;
  Producer producer(maps.spec);
  ASSERT_TRUE(producer.ok());
  auto ring = PerCpuRing::Open(maps.spec);
  ASSERT_TRUE(ring.ok()) << ring.status();
  CountingSink sink;
  using std::chrono::milliseconds;
  const auto period = milliseconds(100);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ((*ring)->ArmDoorbells(t0, period), period);  // nothing yet: both wait

  // CPU 0: 512 records in 10 ms (51 200 a second, 5120 a period); CPU 1:
  // one (10 a period, fewer than a doorbell's worth).
  for (std::uint64_t i = 0; i < 512; ++i) ASSERT_TRUE(producer.Write(0, MakeRecord(0, i)));
  ASSERT_TRUE(producer.Write(1, MakeRecord(1, 0)));
  EXPECT_EQ((*ring)->Drain(&sink), 513u);
  auto next = (*ring)->ArmDoorbells(t0 + milliseconds(10), period);
  // A quarter ring (256 records) at 51 200 a second: 5 ms.
  EXPECT_NEAR((std::chrono::duration<double, std::milli>(next).count()), 5.0, 0.01);
  EXPECT_EQ(producer.pos(0).bell_at, 512u + 512u);
  EXPECT_EQ(producer.pos(1).bell_at, 1u + 16u);

  // Faster still: the timer is held at 1 ms.
  for (std::uint64_t i = 512; i < 1024; ++i) ASSERT_TRUE(producer.Write(0, MakeRecord(0, i)));
  EXPECT_EQ((*ring)->Drain(&sink), 512u);
  next = (*ring)->ArmDoorbells(t0 + milliseconds(11), period);
  EXPECT_EQ(next, milliseconds(1));
  EXPECT_EQ(producer.pos(0).bell_at, 1024u + 512u);

  // Quiet again: back to doorbells and the whole period.
  next = (*ring)->ArmDoorbells(t0 + milliseconds(111), period);
  EXPECT_EQ(next, period);
  EXPECT_EQ(producer.pos(0).bell_at, 1024u + 16u);
}

// A producer that is already past the bell_at it is given would ring only
// bell_every records later: the reader is told to drain again at once.
TEST(PerCpuRingTest, ArmDoorbellsSaysDrainNowWhenAProducerIsPastItsBell) {
  SETUP_RING(maps, 2, 64);
  maps.spec.bell_every = 4;
  Producer producer(maps.spec);
  ASSERT_TRUE(producer.ok());
  auto ring = PerCpuRing::Open(maps.spec);
  ASSERT_TRUE(ring.ok()) << ring.status();
  for (std::uint64_t i = 0; i < 10; ++i) ASSERT_TRUE(producer.Write(1, MakeRecord(1, i)));
  const auto now = std::chrono::steady_clock::now();
  EXPECT_EQ((*ring)->ArmDoorbells(now, std::chrono::milliseconds(100)), std::chrono::nanoseconds::zero());
  CountingSink sink;
  EXPECT_EQ((*ring)->Drain(&sink), 10u);
  EXPECT_GT((*ring)->ArmDoorbells(now + std::chrono::seconds(1), std::chrono::milliseconds(100)),
            std::chrono::nanoseconds::zero());
}

// Checks each delivered record against the one its CPU should send next.
struct SequenceSink : EventSink {
  explicit SequenceSink(std::uint32_t cpus) : next(cpus, 0) {}
  std::vector<std::uint64_t> next;
  std::uint64_t delivered = 0;
  std::uint64_t out_of_order = 0;
  std::uint64_t damaged = 0;
  std::uint64_t checksum = 0;
  void OnEvent(std::span<const std::byte> record) noexcept override {
    ++delivered;
    std::uint64_t id = 0;
    std::memcpy(&id, record.data(), 8);
    const auto cpu = static_cast<std::uint32_t>(id >> 48);
    const std::uint64_t seq = id & ((1ull << 48) - 1);
    if (cpu >= next.size() || seq != next[cpu]) {
      ++out_of_order;
    } else {
      ++next[cpu];
    }
    const auto want = MakeRecord(cpu, seq, static_cast<std::uint32_t>(record.size()));
    if (std::memcmp(want.data(), record.data(), record.size()) != 0) ++damaged;
    for (std::size_t w = 0; w < record.size() / 8; ++w) {
      std::uint64_t v;
      std::memcpy(&v, record.data() + w * 8, 8);
      checksum += Mix(v);
    }
  }
};

std::uint64_t Checksum(const std::vector<std::byte>& r) {
  std::uint64_t sum = 0;
  for (std::size_t w = 0; w < r.size() / 8; ++w) {
    std::uint64_t v;
    std::memcpy(&v, r.data() + w * 8, 8);
    sum += Mix(v);
  }
  return sum;
}

TEST(PerCpuRingTest, ConcurrentProducersAndReaderThreadLoseAndRepeatNothing) {
  constexpr std::uint32_t kCpus = 2;
  constexpr std::uint64_t kPerCpu = 300'000;
  SETUP_RING(maps, kCpus, 64);
  Producer producer(maps.spec);
  ASSERT_TRUE(producer.ok());
  SequenceSink sink(kCpus);
  RingReader reader;
  ASSERT_TRUE(reader.AddPerCpu(maps.spec, -1, &sink).ok());
  ASSERT_TRUE(reader.Start(std::chrono::milliseconds(1)).ok());

  // One producer per CPU ring, as the kernel runs one program at a time per
  // CPU. A full ring makes it retry, so everything written is owed.
  std::atomic<bool> gave_up{false};
  std::uint64_t produced_sum[kCpus] = {};
  std::uint64_t full_retries[kCpus] = {};
  std::vector<std::thread> producers;
  for (std::uint32_t cpu = 0; cpu < kCpus; ++cpu) {
    producers.emplace_back([&, cpu] {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
      for (std::uint64_t s = 0; s < kPerCpu; ++s) {
        const auto rec = MakeRecord(cpu, s);
        while (!producer.Write(cpu, rec)) {
          ++full_retries[cpu];
          if (std::chrono::steady_clock::now() > deadline) {
            gave_up = true;
            return;
          }
          std::this_thread::yield();
        }
        produced_sum[cpu] += Checksum(rec);
      }
    });
  }
  for (auto& t : producers) t.join();
  reader.Stop();  // drains what the thread had not yet read

  ASSERT_FALSE(gave_up) << "the reader stopped draining";
  EXPECT_EQ(sink.delivered, kCpus * kPerCpu);
  EXPECT_EQ(reader.records_read(), kCpus * kPerCpu);
  EXPECT_EQ(sink.out_of_order, 0u);
  EXPECT_EQ(sink.damaged, 0u);
  EXPECT_EQ(sink.checksum, produced_sum[0] + produced_sum[1]);
  for (std::uint32_t cpu = 0; cpu < kCpus; ++cpu) {
    EXPECT_EQ(sink.next[cpu], kPerCpu);
    EXPECT_EQ(producer.pos(cpu).tail, kPerCpu);
  }
  std::printf("concurrent: %llu records, producer retries on a full ring: %llu + %llu\n",
              static_cast<unsigned long long>(sink.delivered), static_cast<unsigned long long>(full_retries[0]),
              static_cast<unsigned long long>(full_retries[1]));
}

TEST(PerCpuRingTest, ReaderWithoutDoorbellWaitsItsTimeoutThenDrains) {
  SETUP_RING(maps, 2, 8);
  Producer producer(maps.spec);
  ASSERT_TRUE(producer.ok());
  CopyingSink sink;
  RingReader reader;
  ASSERT_TRUE(reader.AddPerCpu(maps.spec, -1, &sink).ok());

  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(reader.PollOnce(std::chrono::milliseconds(30)), 0);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(30));

  ASSERT_TRUE(producer.Write(1, MakeRecord(1, 0)));
  ASSERT_TRUE(producer.Write(0, MakeRecord(0, 0)));
  t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(reader.PollOnce(std::chrono::seconds(10)), 2);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)) << "records waited for the timeout";
  ASSERT_EQ(sink.records.size(), 2u);
  EXPECT_EQ(sink.records[0], MakeRecord(0, 0));
  EXPECT_EQ(sink.records[1], MakeRecord(1, 0));
  EXPECT_EQ(reader.records_read(), 2u);
}

// A socket filter that writes one 8-byte record with a forced wakeup to the
// ring buffer `bell_fd`, as the BPF producers ring their doorbell.
int LoadBellRinger(int bell_fd) {
  const bpf_insn insns[] = {
      // *(u64 *)(r10 - 8) = 1
      {.code = BPF_ST | BPF_MEM | BPF_DW, .dst_reg = BPF_REG_10, .src_reg = 0, .off = -8, .imm = 1},
      // r1 = the ring buffer (a two-instruction map fd load)
      {.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = BPF_REG_1, .src_reg = BPF_PSEUDO_MAP_FD, .off = 0,
       .imm = bell_fd},
      {.code = 0, .dst_reg = 0, .src_reg = 0, .off = 0, .imm = 0},
      // r2 = r10 - 8; r3 = 8; r4 = BPF_RB_FORCE_WAKEUP
      {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_2, .src_reg = BPF_REG_10, .off = 0, .imm = 0},
      {.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = BPF_REG_2, .src_reg = 0, .off = 0, .imm = -8},
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_3, .src_reg = 0, .off = 0, .imm = 8},
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_4, .src_reg = 0, .off = 0,
       .imm = BPF_RB_FORCE_WAKEUP},
      {.code = BPF_JMP | BPF_CALL, .dst_reg = 0, .src_reg = 0, .off = 0, .imm = BPF_FUNC_ringbuf_output},
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .src_reg = 0, .off = 0, .imm = 0},
      {.code = BPF_JMP | BPF_EXIT, .dst_reg = 0, .src_reg = 0, .off = 0, .imm = 0},
  };
  return bpf_prog_load(BPF_PROG_TYPE_SOCKET_FILTER, "kspan_test_bell", "GPL", insns,
                       sizeof(insns) / sizeof(insns[0]), nullptr);
}

bool RingBell(int prog_fd) {
  std::byte packet[64] = {};
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = packet, .data_size_in = sizeof(packet), .repeat = 1);
  return bpf_prog_test_run_opts(prog_fd, &opts) == 0;
}

TEST(PerCpuRingTest, DoorbellRingBufferWakesThePollAndIsNotCountedAsARecord) {
  SETUP_RING(maps, 2, 8);
  RingMaps other(2, 8);
  ASSERT_TRUE(other.ok());
  other.spec.name = "other_ring";
  Fd bell(bpf_map_create(BPF_MAP_TYPE_RINGBUF, "test_bell", 0, 0, 4096, nullptr));
  ASSERT_GE(bell.get(), 0) << std::strerror(errno);
  Fd ringer(LoadBellRinger(bell.get()));
  ASSERT_GE(ringer.get(), 0) << "loading the doorbell program: " << std::strerror(errno);
  Producer producer(maps.spec);
  Producer other_producer(other.spec);
  ASSERT_TRUE(producer.ok() && other_producer.ok());

  CopyingSink sink;
  CopyingSink other_sink;
  RingReader reader;
  auto not_a_bell = reader.AddPerCpu(maps.spec, maps.records.get(), &sink);
  EXPECT_EQ(not_a_bell.code(), absl::StatusCode::kInvalidArgument) << not_a_bell;
  ASSERT_TRUE(reader.AddPerCpu(maps.spec, bell.get(), &sink).ok());
  // A second family's ring on the same doorbell.
  ASSERT_TRUE(reader.AddPerCpu(other.spec, bell.get(), &other_sink).ok());
  ASSERT_NE(reader.per_cpu_ring("other_ring"), nullptr);
  EXPECT_EQ(reader.per_cpu_ring("other_ring")->Usage().size_bytes, 2u * 8 * kSlotBytes);
  EXPECT_EQ(reader.per_cpu_ring("missing"), nullptr);

  // Nothing waiting, no doorbell: the poll waits its timeout.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(reader.PollOnce(std::chrono::milliseconds(30)), 0);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(25));

  // Records waiting without a doorbell wait for the timeout (as records in
  // a ring buffer wait for their wakeup), then are drained.
  ASSERT_TRUE(producer.Write(0, MakeRecord(0, 0)));
  ASSERT_TRUE(other_producer.Write(1, MakeRecord(1, 0)));
  ASSERT_TRUE(producer.Write(1, MakeRecord(1, 0)));
  t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(reader.PollOnce(std::chrono::milliseconds(50)), 3);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(40));
  ASSERT_EQ(sink.records.size(), 2u);
  EXPECT_EQ(sink.records[0], MakeRecord(0, 0));
  EXPECT_EQ(sink.records[1], MakeRecord(1, 0));
  ASSERT_EQ(other_sink.records.size(), 1u);
  EXPECT_EQ(other_sink.records[0], MakeRecord(1, 0));

  // A doorbell rung while the reader waits ends the wait: only it can make
  // this poll return before its 10 s timeout.
  std::atomic<bool> rang{false};
  std::thread bell_thread([&] { rang = RingBell(ringer.get()); });
  t0 = std::chrono::steady_clock::now();
  const int n = reader.PollOnce(std::chrono::seconds(10));
  const auto waited = std::chrono::steady_clock::now() - t0;
  bell_thread.join();
  ASSERT_TRUE(rang) << "bpf_prog_test_run: " << std::strerror(errno);
  EXPECT_EQ(n, 0);  // the doorbell is not a record
  EXPECT_LT(waited, std::chrono::seconds(5));
  EXPECT_EQ(reader.doorbells(), 1u);

  // Record then doorbell, as the BPF producer does: delivered, bell ignored.
  std::thread producer_thread([&] {
    producer.Write(0, MakeRecord(0, 1));
    rang = RingBell(ringer.get());
  });
  std::size_t got = 0;
  t0 = std::chrono::steady_clock::now();
  while (got < 1 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)) {
    const int m = reader.PollOnce(std::chrono::seconds(10));
    ASSERT_GE(m, 0);
    got += static_cast<std::size_t>(m);
  }
  producer_thread.join();
  EXPECT_TRUE(rang);
  EXPECT_EQ(got, 1u);
  ASSERT_EQ(sink.records.size(), 3u);
  EXPECT_EQ(sink.records[2], MakeRecord(0, 1));
  EXPECT_EQ(reader.records_read(), 4u);
  // The bell is consumed by this poll or the next; it never counts as a record.
  reader.PollOnce(std::chrono::milliseconds(0));
  EXPECT_EQ(reader.doorbells(), 2u);
  EXPECT_EQ(reader.records_read(), 4u);
}

// A reader that found a ring busy drains it again on its timer, without
// waiting for a doorbell or its own poll timeout.
TEST(PerCpuRingTest, ReaderDrainsABusyRingOnATimer) {
  SETUP_RING(maps, 2, 1024);
  maps.spec.bell_every = 4;
  Fd bell(bpf_map_create(BPF_MAP_TYPE_RINGBUF, "test_bell", 0, 0, 4096, nullptr));
  ASSERT_GE(bell.get(), 0) << std::strerror(errno);
  Producer producer(maps.spec);
  ASSERT_TRUE(producer.ok());
  CountingSink sink;
  RingReader reader;
  ASSERT_TRUE(reader.AddPerCpu(maps.spec, bell.get(), &sink).ok());
  // 600 records within one 100 ms poll (the producer rings no doorbell):
  // far more than a doorbell's worth per poll timeout.
  for (std::uint64_t i = 0; i < 600; ++i) ASSERT_TRUE(producer.Write(0, MakeRecord(0, i)));
  EXPECT_EQ(reader.PollOnce(std::chrono::milliseconds(100)), 600);
  EXPECT_EQ(producer.pos(0).bell_at, 600u + 512u);  // rings only at half the ring

  // Two records, fewer than a doorbell's worth and no doorbell: the next
  // poll returns with them after the timer, not after its 10 s timeout.
  ASSERT_TRUE(producer.Write(0, MakeRecord(0, 600)));
  ASSERT_TRUE(producer.Write(0, MakeRecord(0, 601)));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(reader.PollOnce(std::chrono::seconds(10)), 2);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  EXPECT_EQ(sink.records, 602u);
  EXPECT_EQ(reader.doorbells(), 0u);
}

}  // namespace
}  // namespace kspan
