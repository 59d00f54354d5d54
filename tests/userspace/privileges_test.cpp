// The capabilities the agent keeps after load and attach, as the config
// decides them, and how the drop is described (the drop itself runs in
// tests/privileged/agent_privileges_test.cpp, on the real agent).
#include "userspace/privileges.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "userspace/config.h"

namespace kspan {
namespace {

bool Has(const std::vector<std::string>& caps, const std::string& cap) {
  return std::find(caps.begin(), caps.end(), cap) != caps.end();
}

TEST(Privileges, ProcReadersAlwaysKeptBindOnlyForLowPorts) {
  AgentConfig c;  // 127.0.0.1:9464, :4317, :4318
  auto keep = RunTimeCapabilities(c);
  EXPECT_TRUE(Has(keep, "cap_sys_ptrace"));
  EXPECT_TRUE(Has(keep, "cap_dac_read_search"));
  EXPECT_FALSE(Has(keep, "cap_net_bind_service"));
  EXPECT_FALSE(Has(keep, "cap_sys_admin"));
  EXPECT_FALSE(Has(keep, "cap_perfmon"));

  c.receiver.http_endpoint = "0.0.0.0:80";
  EXPECT_TRUE(Has(RunTimeCapabilities(c), "cap_net_bind_service"));
  c.receiver.http_enabled = false;  // a low port that is not bound needs nothing
  EXPECT_FALSE(Has(RunTimeCapabilities(c), "cap_net_bind_service"));
  c.admin_listen = "[::1]:443";
  EXPECT_TRUE(Has(RunTimeCapabilities(c), "cap_net_bind_service"));
}

TEST(Privileges, DescribeSaysWhatWasKept) {
  PrivilegeState s;
  s.dropped = true;
  s.effective = {"CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"};
  s.no_new_privs = true;
  EXPECT_EQ(s.Describe(), "kept CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE; dropped all others; no_new_privs");
  s.bounding_not_dropped = {"CAP_SYS_ADMIN"};
  EXPECT_NE(s.Describe().find("still in the bounding set, no CAP_SETPCAP to remove them: "
                              "CAP_SYS_ADMIN"),
            std::string::npos);
  PrivilegeState off;
  off.effective = {"CAP_CHOWN", "CAP_BPF"};
  EXPECT_EQ(off.Describe(), "not dropped (security.drop_capabilities: false): 2 capabilities effective");
}

TEST(Privileges, ReadPrivilegesReadsThisThread) {
  const PrivilegeState s = ReadPrivileges();
  EXPECT_EQ(s.permitted.size() >= s.effective.size(), true);
  EXPECT_FALSE(s.bounding.empty());  // nobody runs the tests with an empty bounding set
}

}  // namespace
}  // namespace kspan
