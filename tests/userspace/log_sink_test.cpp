#include "userspace/log_sink.h"

#include <gtest/gtest.h>

#include <memory>
#include <sstream>
#include <string>

#include "spdlog/logger.h"
#include "spdlog/sinks/ostream_sink.h"

namespace kspan {
namespace {

class LogSinkTest : public ::testing::Test {
 protected:
  LogSinkTest() {
    auto inner = std::make_shared<spdlog::sinks::ostream_sink_st>(out_);
    logger_ = std::make_shared<spdlog::logger>("test", std::make_shared<EscapingSink>(inner));
    logger_->set_pattern("%l %v");
  }
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> logger_;
};

TEST_F(LogSinkTest, AValueCannotForgeALogLineOrDriveTheTerminal) {
  // A service name as a process's environment could set it.
  const std::string name = "svc\r\ninfo enrollment: process 1 (sshd) sends its spans\x1b[2J\x9b";
  logger_->info("enrollment: process {} ({}) sends its spans", 42, name);
  const std::string text = out_.str();
  EXPECT_EQ(text,
            "info enrollment: process 42 (svc\\x0d\\x0ainfo enrollment: process 1 (sshd) sends its "
            "spans\\x1b[2J\\x9b) sends its spans\n");
}

TEST_F(LogSinkTest, SafeAndAlreadyEscapedMessagesPassUnchanged) {
  logger_->warn("removed {} stale pin(s) under {}", 2, "/sys/fs/bpf/kspan");
  logger_->info("name {}", "a\\x0ab café");
  EXPECT_EQ(out_.str(),
            "warning removed 2 stale pin(s) under /sys/fs/bpf/kspan\n"
            "info name a\\x0ab café\n");
}

}  // namespace
}  // namespace kspan
