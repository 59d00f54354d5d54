// A /proc tree in a temporary directory, in the kernel's own formats, for
// the parts of kspan that read /proc about other processes: the files and
// links a test gives, nothing else.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>

namespace kspan::testing {

// A NUL-separated environment block, as /proc/<pid>/environ holds it.
inline std::string Environ(std::initializer_list<std::string> vars) {
  std::string out;
  for (const auto& v : vars) out += v + '\0';
  return out;
}

class FakeProc {
 public:
  FakeProc() {
    char tmpl[] = "/tmp/kspan-fakeproc-XXXXXX";
    root_ = mkdtemp(tmpl);
  }
  ~FakeProc() { std::filesystem::remove_all(root_); }
  FakeProc(const FakeProc&) = delete;
  FakeProc& operator=(const FakeProc&) = delete;

  const std::string& root() const { return root_; }

  // <root>/<rel> with `content` (parent directories created).
  void File(const std::string& rel, const std::string& content) const {
    const std::filesystem::path p = root_ + "/" + rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
  }
  // <root>/<rel> -> target (a dangling link is how /proc shows "pid:[n]").
  void Link(const std::string& rel, const std::string& target) const {
    const std::filesystem::path p = root_ + "/" + rel;
    std::filesystem::create_directories(p.parent_path());
    std::filesystem::remove(p);
    std::filesystem::create_symlink(target, p);
  }
  // A process: its pid namespace, NSpid line, and optionally exe and cgroup.
  void Process(std::uint32_t pid, std::uint64_t pid_ns, const std::string& nspid,
               const std::string& exe = "", const std::string& cgroup = "",
               const std::string& environ = "") const {
    const std::string d = std::to_string(pid);
    Link(d + "/ns/pid", "pid:[" + std::to_string(pid_ns) + "]");
    File(d + "/status", "Name:\tx\nTgid:\t" + d + "\nNSpid:\t" + nspid + "\nPPid:\t1\n");
    if (!exe.empty()) Link(d + "/exe", exe);
    File(d + "/cgroup", cgroup.empty() ? "0::/\n" : cgroup);
    File(d + "/environ", environ);
  }
  void Remove(std::uint32_t pid) const { std::filesystem::remove_all(root_ + "/" + std::to_string(pid)); }

 private:
  std::string root_;
};

}  // namespace kspan::testing
