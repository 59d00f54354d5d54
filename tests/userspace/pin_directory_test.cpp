// KspanPinnedMaps() is what a pin directory may hold and all kspan ever
// removes from one: it must name every map the program families pin.
#include "userspace/pin_directory.h"

#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "dns.skel.h"
#include "http.skel.h"
#include "process.skel.h"
#include "syscalls.skel.h"
#include "tcp.skel.h"

namespace kspan {
namespace {

// The maps a skeleton pins by name (libbpf gives them a pin path at open;
// opening parses the object and needs no privilege).
template <typename Skeleton>
void AddPinnedMaps(std::set<std::string>* names) {
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  opts.pin_root_path = "/sys/fs/bpf/kspan-unit-test";
  Skeleton* skel = Skeleton::open(&opts);
  ASSERT_NE(skel, nullptr);
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, skel->obj) {
    if (bpf_map__pin_path(map) != nullptr) names->insert(bpf_map__name(map));
  }
  Skeleton::destroy(skel);
}

TEST(PinDirectory, KnowsEveryMapTheFamiliesPin) {
  std::set<std::string> pinned;
  AddPinnedMaps<tcp_bpf>(&pinned);
  AddPinnedMaps<syscalls_bpf>(&pinned);
  AddPinnedMaps<dns_bpf>(&pinned);
  AddPinnedMaps<http_bpf>(&pinned);
  AddPinnedMaps<process_bpf>(&pinned);
  std::set<std::string> known;
  for (auto name : KspanPinnedMaps()) known.insert(std::string(name));
  EXPECT_EQ(pinned, known);
}

}  // namespace
}  // namespace kspan
