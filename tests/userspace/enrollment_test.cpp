// Enrollment: a process that sends its own spans joins the allow-list and
// leaves it after it stops (or exits); one whose environment names kspan's
// receiver is enrolled from its exec (or kspan's start) until it exits;
// configured processes and kspan itself are left alone.
#include "userspace/enrollment.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <vector>

#include "bpf/process.h"
#include "tests/userspace/fake_proc.h"

namespace kspan {
namespace {

using namespace std::chrono_literals;

class EnrollmentTest : public ::testing::Test {
 protected:
  std::unique_ptr<Enrollment> Make(std::set<std::uint32_t> configured = {}) {
    return std::make_unique<Enrollment>(
        [this](std::uint32_t pid, bool allow) {
          calls_.push_back({pid, allow});
          return absl::OkStatus();
        },
        60s, /*self=*/777777, std::move(configured), metrics_, [this] { return now_; });
  }
  // Enrollment from the environment, with /proc/<pid>/environ from
  // `environ_` and kspan's receiver on 4317 and 4318.
  std::unique_ptr<Enrollment> MakeWithEnvironment(
      std::set<std::uint32_t> configured = {},
      EnvironmentEnrollMode mode = EnvironmentEnrollMode::kReceiver) {
    auto e = Make(std::move(configured));
    e->EnableEnvironment(Enrollment::Environment{
        .rule = {.mode = mode, .grpc_port = 4317, .http_port = 4318},
        .allow =
            [this](std::uint32_t pid, bool allow) {
              env_calls_.push_back({pid, allow});
              return absl::OkStatus();
            },
        .read =
            [this](std::uint32_t pid) -> std::optional<std::string> {
              ++reads_;
              auto it = environ_.find(pid);
              return it == environ_.end() ? std::nullopt : it->second;
            },
        .on_verdict = [this](std::uint32_t pid, bool sender) { verdicts_.push_back({pid, sender}); },
    });
    return e;
  }
  double Gauge(const char* reason) const {
    return metrics_.GaugeValue("kspan_enrollment_enrolled_processes", {{"reason", reason}});
  }
  std::uint64_t EnrolledTotal(const char* reason) const {
    return metrics_.CounterValue("kspan_enrollment_enrolled_total", {{"reason", reason}});
  }

  MetricsRegistry metrics_;
  std::chrono::steady_clock::time_point now_{std::chrono::seconds(5000)};
  std::vector<std::pair<std::uint32_t, bool>> calls_;
  std::vector<std::pair<std::uint32_t, bool>> env_calls_;
  std::vector<std::pair<std::uint32_t, bool>> verdicts_;
  std::map<std::uint32_t, std::optional<std::string>> environ_;
  int reads_ = 0;
};

using ::kspan::testing::Environ;

const std::string kNodeToKspan = Environ({"PATH=/usr/bin", "OTEL_SERVICE_NAME=checkout",
                                          "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318"});
const std::string kToVendor =
    Environ({"OTEL_SERVICE_NAME=billing", "OTEL_EXPORTER_OTLP_ENDPOINT=https://otlp.vendor.example"});
constexpr std::uint32_t kEndpointBits = KSPAN_OTEL_ENV_ENDPOINT | KSPAN_OTEL_ENV_SERVICE_NAME;

TEST_F(EnrollmentTest, SenderJoinsOnceAndLeavesAfterLinger) {
  auto e = Make();
  const auto me = static_cast<std::uint32_t>(getpid());  // a live process
  e->Seen(me);
  e->Seen(me);
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0], std::make_pair(me, true));
  EXPECT_EQ(e->Enrolled(), std::vector<std::uint32_t>{me});
  now_ += 59s;
  e->Seen(me);  // still sending: the linger restarts
  now_ += 59s;
  e->Expire();
  EXPECT_EQ(calls_.size(), 1u);
  now_ += 2s;
  e->Expire();
  ASSERT_EQ(calls_.size(), 2u);
  EXPECT_EQ(calls_[1], std::make_pair(me, false));
  EXPECT_TRUE(e->Enrolled().empty());
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_joined_total"), 1u);
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_left_total"), 1u);
}

TEST_F(EnrollmentTest, ExitedProcessLeavesAtOnce) {
  auto e = Make();
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  waitpid(child, nullptr, 0);
  e->Seen(static_cast<std::uint32_t>(child));
  e->Expire();
  EXPECT_TRUE(e->Enrolled().empty());
  ASSERT_EQ(calls_.size(), 2u);
  EXPECT_FALSE(calls_[1].second);
}

TEST_F(EnrollmentTest, ConfiguredProcessesAndKspanItselfAreLeftAlone) {
  auto e = Make({4242});
  e->Seen(4242);
  e->Seen(777777);
  e->Seen(0);
  EXPECT_TRUE(calls_.empty());
}

TEST_F(EnrollmentTest, RefusedEnrollmentIsCountedAndRetriedOnTheNextRequest) {
  int refusals = 1;
  Enrollment e(
      [&](std::uint32_t, bool) {
        return refusals-- > 0 ? absl::ResourceExhaustedError("allow-list full") : absl::OkStatus();
      },
      60s, 1, {}, metrics_, [this] { return now_; });
  const auto me = static_cast<std::uint32_t>(getpid());
  e.Seen(me);
  EXPECT_TRUE(e.Enrolled().empty());
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_failed_total"), 1u);
  e.Seen(me);
  EXPECT_EQ(e.Enrolled(), std::vector<std::uint32_t>{me});
}

TEST_F(EnrollmentTest, EnrolledProcessesLeaveWhenKspanStops) {
  {
    auto e = Make();
    e->Seen(static_cast<std::uint32_t>(getpid()));
  }
  ASSERT_EQ(calls_.size(), 2u);
  EXPECT_FALSE(calls_[1].second);
}

TEST_F(EnrollmentTest, EnvironmentNamingTheReceiverEnrollsUntilExitNotUntilLinger) {
  auto e = MakeWithEnvironment();
  const auto me = static_cast<std::uint32_t>(getpid());  // a live process
  environ_[me] = kNodeToKspan;
  e->OnExec(me, kEndpointBits, KSPAN_PROC_F_ENROLLED);
  EXPECT_EQ(e->Enrolled(), std::vector<std::uint32_t>{me});
  EXPECT_TRUE(env_calls_.empty()) << "the kernel enrolled it already";
  EXPECT_TRUE(calls_.empty());
  ASSERT_EQ(verdicts_.size(), 1u);
  EXPECT_EQ(verdicts_[0], std::make_pair(me, true));
  auto list = e->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].reasons, std::vector<EnrollReason>{EnrollReason::kEnvironment});
  EXPECT_EQ(list[0].service, "checkout");
  EXPECT_EQ(list[0].detail, "OTEL_EXPORTER_OTLP_ENDPOINT names receiver port 4318");
  EXPECT_EQ(EnrolledTotal("environment"), 1u);
  EXPECT_EQ(Gauge("environment"), 1.0);
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_joined_total"), 0u);
  // It never sends: linger does not apply.
  now_ += 10min;
  e->Expire();
  EXPECT_EQ(e->Enrolled(), std::vector<std::uint32_t>{me});
  e->OnExit(me);
  EXPECT_TRUE(e->Enrolled().empty());
  EXPECT_EQ(Gauge("environment"), 0.0);
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_left_total"), 1u);
}

TEST_F(EnrollmentTest, EnvironmentNamingAnotherCollectorTakesTheKernelsEntryOff) {
  auto e = MakeWithEnvironment();
  environ_[4321] = kToVendor;
  e->OnExec(4321, kEndpointBits, KSPAN_PROC_F_ENROLLED);
  EXPECT_TRUE(e->Enrolled().empty());
  ASSERT_EQ(env_calls_.size(), 1u);
  EXPECT_EQ(env_calls_[0], std::make_pair(4321u, false));
  ASSERT_EQ(verdicts_.size(), 1u);
  EXPECT_EQ(verdicts_[0], std::make_pair(4321u, false));
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_environment_rejected_total"), 1u);
}

TEST_F(EnrollmentTest, UnreadableEnvironmentKeepsWhatTheKernelDecided) {
  auto e = MakeWithEnvironment();
  e->OnExec(5001, kEndpointBits, KSPAN_PROC_F_ENROLLED);  // gone before it was read
  environ_[5002] = std::string();                          // a zombie's reads empty
  e->OnExec(5002, kEndpointBits, 0);
  EXPECT_EQ(e->Enrolled(), std::vector<std::uint32_t>{5001});
  EXPECT_TRUE(env_calls_.empty());
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_environment_unreadable_total"), 2u);
}

TEST_F(EnrollmentTest, RuleMayEnrollWhereTheKernelDidNot) {
  // `any` takes a vendor endpoint; the exec hook had not enrolled it (its
  // allow-list was full, say): the agent adds the environment entry.
  auto e = MakeWithEnvironment({}, EnvironmentEnrollMode::kAny);
  environ_[4321] = kToVendor;
  e->OnExec(4321, kEndpointBits, 0);
  EXPECT_EQ(e->Enrolled(), std::vector<std::uint32_t>{4321});
  ASSERT_EQ(env_calls_.size(), 1u);
  EXPECT_EQ(env_calls_[0], std::make_pair(4321u, true));
}

TEST_F(EnrollmentTest, SendingDoesNotEndAnEnvironmentEnrollment) {
  auto e = MakeWithEnvironment();
  const auto me = static_cast<std::uint32_t>(getpid());
  environ_[me] = kNodeToKspan;
  e->OnExec(me, kEndpointBits, KSPAN_PROC_F_ENROLLED);
  e->Seen(me);
  EXPECT_TRUE(calls_.empty()) << "capture is on already: no agent entry";
  EXPECT_EQ(EnrolledTotal("export"), 1u);
  auto list = e->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].reasons, (std::vector<EnrollReason>{EnrollReason::kEnvironment, EnrollReason::kExport}));
  now_ += 61s;
  e->Expire();  // the export reason ends, the environment's stays
  EXPECT_EQ(e->Enrolled(), std::vector<std::uint32_t>{me});
  EXPECT_TRUE(calls_.empty());
  EXPECT_TRUE(env_calls_.empty());
  EXPECT_EQ(Gauge("export"), 0.0);
  EXPECT_EQ(Gauge("environment"), 1.0);
}

TEST_F(EnrollmentTest, AgentEntryBecomesAnEnvironmentEntryWhenLingerEnds) {
  // A process that sent before the start-up scan judged it.
  auto e = MakeWithEnvironment();
  const auto me = static_cast<std::uint32_t>(getpid());
  environ_[me] = kNodeToKspan;
  e->Seen(me);
  e->Scan({me});
  ASSERT_EQ(calls_.size(), 1u);
  ASSERT_EQ(env_calls_.size(), 1u);
  EXPECT_EQ(env_calls_[0], std::make_pair(me, true));
  now_ += 61s;
  e->Expire();
  ASSERT_EQ(calls_.size(), 2u);
  EXPECT_EQ(calls_[1], std::make_pair(me, false));
  ASSERT_EQ(env_calls_.size(), 2u);
  EXPECT_EQ(env_calls_[1], std::make_pair(me, true));
  EXPECT_EQ(e->Enrolled(), std::vector<std::uint32_t>{me});
}

TEST_F(EnrollmentTest, StartUpScanEnrollsRunningSendersOnly) {
  auto e = MakeWithEnvironment({4242});
  environ_[100] = kNodeToKspan;
  environ_[101] = kToVendor;
  environ_[102] = Environ({"PATH=/bin"});
  environ_[4242] = kNodeToKspan;    // configured: left alone
  environ_[777777] = kNodeToKspan;  // kspan itself
  e->Scan({1, 100, 101, 102, 4242, 777777});
  EXPECT_EQ(e->Enrolled(), std::vector<std::uint32_t>{100});
  ASSERT_EQ(env_calls_.size(), 1u);
  EXPECT_EQ(env_calls_[0], std::make_pair(100u, true));
  ASSERT_EQ(verdicts_.size(), 1u);  // only senders: nothing expected the others
  EXPECT_EQ(verdicts_[0], std::make_pair(100u, true));
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_environment_unreadable_total"), 0u);
  auto list = e->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].pid, 100u);
  EXPECT_EQ(list[1].pid, 4242u);
  EXPECT_EQ(list[1].reasons, std::vector<EnrollReason>{EnrollReason::kConfigured});
  EXPECT_EQ(Gauge("configured"), 1.0);
  EXPECT_EQ(EnrolledTotal("configured"), 1u);
}

TEST_F(EnrollmentTest, NewImageWithoutVariablesEndsTheEnvironmentEnrollment) {
  auto e = MakeWithEnvironment();
  environ_[100] = kNodeToKspan;
  e->OnExec(100, kEndpointBits, KSPAN_PROC_F_ENROLLED);
  ASSERT_EQ(e->Enrolled(), std::vector<std::uint32_t>{100});
  e->OnExec(100, 0, 0);
  EXPECT_TRUE(e->Enrolled().empty());
  ASSERT_EQ(env_calls_.size(), 1u);
  EXPECT_EQ(env_calls_[0], std::make_pair(100u, false));
  EXPECT_EQ(verdicts_.back(), std::make_pair(100u, false));
}

TEST_F(EnrollmentTest, WorkerJudgesQueuedRecordsInOrderAndSkipsPlainExecs) {
  auto e = MakeWithEnvironment();
  environ_[100] = kNodeToKspan;
  environ_[200] = Environ({"PATH=/bin"});
  e->PostExec(200, 0, 0);  // no variables, not enrolled: never queued
  e->PostExec(100, kEndpointBits, KSPAN_PROC_F_ENROLLED);
  e->Drain();
  EXPECT_EQ(reads_, 1);
  EXPECT_EQ(e->Enrolled(), std::vector<std::uint32_t>{100});
  e->PostExit(100);
  e->PostExec(100, kEndpointBits, KSPAN_PROC_F_ENROLLED);  // the pid, reused
  e->PostExit(100);
  e->Drain();
  EXPECT_TRUE(e->Enrolled().empty());
  EXPECT_EQ(EnrolledTotal("environment"), 2u);
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_left_total"), 2u);
  e->PostExit(300);  // never enrolled: not queued, nothing happens
  e->Drain();
  EXPECT_EQ(metrics_.CounterTotal("kspan_enrollment_left_total"), 2u);
  EXPECT_EQ(reads_, 2);  // the two execs of 100
}

TEST_F(EnrollmentTest, WithoutEnvironmentEnrollmentNothingIsQueued) {
  auto e = Make();
  e->PostExec(100, kEndpointBits, KSPAN_PROC_F_ENROLLED);
  e->Drain();
  EXPECT_TRUE(e->Enrolled().empty());
  EXPECT_EQ(reads_, 0);
}

TEST(ListProcessesTest, ListsRunningProcessesOnly) {
  const auto pids = ListProcesses();
  EXPECT_TRUE(std::binary_search(pids.begin(), pids.end(), static_cast<std::uint32_t>(getpid())));
  EXPECT_TRUE(ListProcesses("/nonexistent-proc").empty());
}

}  // namespace
}  // namespace kspan
