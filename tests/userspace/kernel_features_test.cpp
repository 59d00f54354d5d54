#include "userspace/kernel_features.h"

#include <gtest/gtest.h>

#include <fstream>

namespace kspan {
namespace {

TEST(KernelFeatures, MissingKernelBtfSaysWhatAndWhatToDo) {
  KernelRequirements req;
  req.sysfs_btf = "/nonexistent/sys/kernel/btf/vmlinux";
  auto s = CheckBtf(req);
  ASSERT_FALSE(s.ok());
  const std::string msg(s.message());
  EXPECT_NE(msg.find("kernel BTF not found"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CONFIG_DEBUG_INFO_BTF"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--btf"), std::string::npos) << msg;
  // CheckKernel reports BTF first, before touching bpf().
  EXPECT_EQ(CheckKernel(req).message(), s.message());
}

TEST(KernelFeatures, ExternalBtfThatIsNotBtfIsRefused) {
  const std::string path = ::testing::TempDir() + "/not-btf";
  std::ofstream(path) << "this is not BTF";
  KernelRequirements req;
  req.btf_override = path;
  auto s = CheckBtf(req);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("cannot be parsed"), std::string::npos) << s.message();

  req.btf_override = "/nonexistent.btf";
  s = CheckBtf(req);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("--btf"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace kspan
