// Proves the sanitizer tree catches what it is there to catch, and stops
// there: each mode commits one bug and would print "survived" if the
// process went on. ctest expects the sanitizer's report and no "survived"
// (tests/sanitizer/CMakeLists.txt). Without this, a tree built without the
// flags (a CMake change, a cache entry) would pass every test silently.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// Kept out of the optimizer's sight so the bug is not folded away.
volatile int g_index = 4;
volatile int g_big = std::numeric_limits<int>::max();

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  if (std::strcmp(argv[1], "heap-overflow") == 0) {
    std::vector<int> v(4);
    std::printf("%d\n", v.data()[g_index]);
  } else if (std::strcmp(argv[1], "signed-overflow") == 0) {
    const int x = g_big + 1;
    std::printf("%d\n", x);
  } else if (std::strcmp(argv[1], "leak") == 0) {
    void* p = std::malloc(4096);
    std::printf("%p\n", p);
    p = nullptr;
    return 0;  // LeakSanitizer reports at exit
  } else {
    return 2;
  }
  std::puts("survived");
  return 0;
}
