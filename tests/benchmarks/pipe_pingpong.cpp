// Load program: two processes on one CPU hand a byte back and forth over two
// pipes, so each round trip is 2 write() + 2 read() and 2 context switches.
// Run it with the agent off and on to see what kspan costs a process it
// does not trace (docs/benchmarks.md, "What the agent costs every process").
//
//   kspan_pipe_pingpong [round trips per run, default 200000] [runs, default 5]
//
// Prints the median wall-clock ns per round trip over the runs.
#include <sched.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

double NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

// ns per round trip over `n` round trips, or a negative value on error.
double Run(int n) {
  int to_child[2], to_parent[2];
  if (pipe(to_child) != 0 || pipe(to_parent) != 0) return -1;
  const pid_t child = fork();
  if (child < 0) return -1;
  char c = 'x';
  if (child == 0) {
    for (int i = 0; i < n; ++i) {
      if (read(to_child[0], &c, 1) != 1 || write(to_parent[1], &c, 1) != 1) _exit(1);
    }
    _exit(0);
  }
  const double t0 = NowNs();
  bool ok = true;
  for (int i = 0; i < n && ok; ++i) {
    ok = write(to_child[1], &c, 1) == 1 && read(to_parent[0], &c, 1) == 1;
  }
  const double t1 = NowNs();
  int status = 0;
  waitpid(child, &status, 0);
  for (int fd : {to_child[0], to_child[1], to_parent[0], to_parent[1]}) close(fd);
  if (!ok || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return (t1 - t0) / n;
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 200000;
  const int runs = argc > 2 ? std::atoi(argv[2]) : 5;
  if (n <= 0 || runs <= 0) return std::fprintf(stderr, "usage: %s [round trips] [runs]\n", argv[0]), 2;
  // Both processes on the CPU this one starts on: every hand-over switches.
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(sched_getcpu(), &one);
  if (sched_setaffinity(0, sizeof(one), &one) != 0) std::perror("sched_setaffinity");
  std::vector<double> ns;
  for (int r = 0; r < runs; ++r) {
    const double v = Run(n);
    if (v < 0) return std::perror("round trip"), 1;
    ns.push_back(v);
  }
  std::sort(ns.begin(), ns.end());
  std::printf("%.0f ns per round trip (median of %d runs of %d)\n", ns[ns.size() / 2], runs, n);
  return 0;
}
