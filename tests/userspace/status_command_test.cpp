// `kspan status` prints what an HTTP endpoint on the admin address answers:
// the agent's names taken from processes, or, when no agent runs, whatever a
// local user listening on that port chose. None of it may drive the
// terminal or print a line of its own.
#include "userspace/status_command.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "exporter/terminal_text.h"
#include "nlohmann/json.hpp"

namespace kspan {
namespace {

// Every string carries a line break followed by FORGED, plus ESC, BEL, C1
// and separator characters: as JSON escapes, and, where JSON allows them
// raw (DEL, C1 and U+202E as UTF-8), as raw bytes in "host".
const std::string kHostileStatus = std::string(R"({
  "host": ")") + "raw\x7f\xc2\x9b" "31m\xe2\x80\xae" + R"(",
  "version": "1.0\r\nFORGED kspan 9.9\u001b[2J",
  "pid": 7, "uptime_seconds": 3,
  "pin_path": "/sys/fs/bpf/kspan\u009b31m\u2028FORGED",
  "capture": [{
    "family": "tcp\nFORGED", "variant": "tp_btf\u001b]0;title\u0007",
    "accept_variant": "fexit\rFORGED",
    "programs": ["kspan_tcp_btf\nFORGED"],
    "syscalls": ["read\u202e\nFORGED"],
    "hooks": {"attached": "yes\nFORGED", "attach": "on_demand\nFORGED"},
    "slow_watch": "sched_switch\u001b[2J\nFORGED",
    "slow_scan": {"scans": 100, "seconds": 0.5, "failures": 0},
    "events": {"tcp_connect\nFORGED": 1},
    "lost": {"ring_full\u001b[1A\nFORGED": 0}
  }],
  "privileges": {"drop_capabilities": true, "effective": ["CAP_SYS_PTRACE\nFORGED"],
                 "bounding": ["CAP_SYS_PTRACE\nFORGED"], "ambient": [], "no_new_privs": true},
  "enrolled_pids": [5],
  "enrolled": [{"pid": 5, "is": "checkout\r\nFORGED 6 postgres"}],
  "pipeline": {"ring_records": 1, "decoded": 1, "decode_errors": 0, "spans": 1},
  "export": {"submitted": 1, "batcher_dropped": 0},
  "destinations": {"otlp\nFORGED": {"exported": 1, "dropped": 0}}
})";

class StatusServer {
 public:
  explicit StatusServer(std::string body) : body_(std::move(body)) {
    server_.Get("/status", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(body_, "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    // Bound and listening already: a request before the loop runs waits in
    // the backlog.
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~StatusServer() {
    server_.stop();
    thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::string body_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

struct Printed {
  int status;
  std::string text;
};

Printed Status(const std::string& admin, bool json) {
  char* buf = nullptr;
  std::size_t len = 0;
  std::FILE* out = open_memstream(&buf, &len);
  StatusOptions o;
  o.admin = admin;
  o.json = json;
  o.out = out;
  o.pin_path = "/nonexistent";
  const int status = RunStatus(o);
  std::fclose(out);
  Printed p{status, std::string(buf, len)};
  std::free(buf);
  return p;
}

void ExpectNothingForged(const std::string& text) {
  ASSERT_FALSE(text.empty());
  std::size_t start = 0;
  while (start < text.size()) {
    const auto nl = text.find('\n', start);
    const std::string line = text.substr(start, nl == std::string::npos ? nl : nl - start);
    EXPECT_NE(line.rfind("FORGED", 0), 0u) << "a forged line: " << line;
    for (unsigned char c : line) {
      EXPECT_FALSE(c < 0x20 || c == 0x7F) << "raw control byte " << int(c) << " in " << line;
    }
    EXPECT_TRUE(IsTerminalSafe(line)) << line;
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
}

TEST(StatusCommand, PrintsEveryNameEscaped) {
  StatusServer server(kHostileStatus);
  const auto p = Status(server.address(), false);
  EXPECT_EQ(p.status, 0) << p.text;
  ExpectNothingForged(p.text);
  // What was printed is still there, escaped.
  EXPECT_NE(p.text.find("checkout\\x0d\\x0aFORGED 6 postgres"), std::string::npos) << p.text;
  EXPECT_NE(p.text.find("kspan 1.0\\x0d\\x0aFORGED"), std::string::npos) << p.text;
  EXPECT_NE(p.text.find("otlp\\x0aFORGED"), std::string::npos) << p.text;
  // A non-boolean "attached" is not taken for true.
  EXPECT_NE(p.text.find("enter/exit programs: detached (no process selected) (attach: "
                        "on_demand\\x0aFORGED)"),
            std::string::npos)
      << p.text;
  EXPECT_NE(p.text.find("slow syscalls of other processes: sched_switch\\x1b[2J\\x0aFORGED"),
            std::string::npos)
      << p.text;
  EXPECT_NE(p.text.find("slow-syscall scan: 100 passes, 0.500 s in all (5000.0 us a pass), 0 "
                        "failed\n"),
            std::string::npos)
      << p.text;
  EXPECT_NE(p.text.find("privileges: kept CAP_SYS_PTRACE\\x0aFORGED; dropped all others; "
                        "no_new_privs\n"),
            std::string::npos)
      << p.text;
}

TEST(StatusCommand, JsonIsReencodedAsAscii) {
  StatusServer server(kHostileStatus);
  const auto p = Status(server.address(), true);
  EXPECT_EQ(p.status, 0) << p.text;
  ExpectNothingForged(p.text);
  for (unsigned char c : p.text) EXPECT_LT(c, 0x80) << p.text;
  // The same document.
  EXPECT_EQ(nlohmann::json::parse(p.text), nlohmann::json::parse(kHostileStatus));
}

TEST(StatusCommand, PrintsWhoIsEnrolledAndWhy) {
  nlohmann::json j = nlohmann::json::parse(kHostileStatus);
  j["enroll_from_environment"] = "receiver\nFORGED";
  j["enrollment"] = nlohmann::json::array(
      {{{"pid", 5}, {"reason", "environment"}, {"reasons", {"environment", "export"}},
        {"service", "checkout\r\nFORGED"}, {"detail", "OTEL_EXPORTER_OTLP_ENDPOINT names receiver port 4318"}},
       {{"pid", "x"}, {"reasons", {"configured"}}, {"service", ""}, {"detail", ""}}});
  StatusServer server(j.dump());
  const auto p = Status(server.address(), false);
  EXPECT_EQ(p.status, 0) << p.text;
  ExpectNothingForged(p.text);
  EXPECT_NE(p.text.find("  5 checkout\\x0d\\x0aFORGED [environment, export]: "
                        "OTEL_EXPORTER_OTLP_ENDPOINT names receiver port 4318\n"),
            std::string::npos)
      << p.text;
  EXPECT_NE(p.text.find("  0  [configured]\n"), std::string::npos) << p.text;
  EXPECT_NE(p.text.find("from the environment: receiver\\x0aFORGED:"), std::string::npos) << p.text;
}

TEST(StatusCommand, AnswerOfAnotherShapeIsRefusedNotCrashedOn) {
  StatusServer server(R"({"version": 5, "capture": "x", "pipeline": []})");
  const auto p = Status(server.address(), false);
  EXPECT_EQ(p.status, 1) << p.text;
}

}  // namespace
}  // namespace kspan
