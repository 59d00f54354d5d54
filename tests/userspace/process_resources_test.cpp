#include "userspace/process_resources.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace kspan {
namespace {

std::string Attr(const Resource& r, std::string_view key) {
  const auto* v = FindAttribute(r.attributes, key);
  if (v == nullptr) return "<absent>";
  if (const auto* s = std::get_if<std::string>(v)) return *s;
  return std::to_string(std::get<std::int64_t>(*v));
}

TEST(ProcessResources, DescribesALiveProcessFromProc) {
  ProcessResources resources;
  auto r = resources.For(static_cast<std::uint32_t>(getpid()), "ignored");
  EXPECT_EQ(Attr(*r, "service.name"), "kspan_userspace_tests");
  EXPECT_EQ(Attr(*r, "process.executable.name"), "kspan_userspace_tests");
  EXPECT_NE(Attr(*r, "process.executable.path").find("/kspan_userspace_tests"), std::string::npos);
  EXPECT_EQ(Attr(*r, "process.pid"), std::to_string(getpid()));
  EXPECT_EQ(Attr(*r, "host.name"), resources.host_name());
  // Cached: the same resource object for the same process.
  EXPECT_EQ(resources.For(static_cast<std::uint32_t>(getpid()), "x").get(), r.get());
}

TEST(ProcessResources, FallsBackToCommForAnExitedProcess) {
  ProcessResources resources(ProcessResources::Options{"/nonexistent", "h", 4, std::chrono::seconds(60)});
  auto r = resources.For(99999, "nginx");
  EXPECT_EQ(Attr(*r, "service.name"), "nginx");
  EXPECT_EQ(Attr(*r, "process.executable.path"), "<absent>");
}

TEST(ProcessResources, StaysBounded) {
  ProcessResources resources(ProcessResources::Options{"/nonexistent", "h", 4, std::chrono::seconds(60)});
  auto first = resources.For(1, "a");
  for (std::uint32_t pid = 2; pid < 100; ++pid) resources.For(pid, "b");
  // pid 1 was evicted along the way, so it is rebuilt (a new object).
  EXPECT_NE(resources.For(1, "a").get(), first.get());
}

}  // namespace
}  // namespace kspan
