// Holds the empty sched_switch program of switch_floor.bpf.c attached until
// SIGTERM or SIGINT, in place of the agent: agent_cost_bench.sh
// --family switch_floor measures what any program on sched_switch costs the
// pipe ping-pong, the floor under kspan_sys_slow (docs/benchmarks.md).
// Prints "attached" once the program is on the tracepoint. Needs root.
#include <signal.h>
#include <unistd.h>

#include <cstdio>

#include "switch_floor.skel.h"

int main() {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigprocmask(SIG_BLOCK, &stop, nullptr);
  switch_floor_bpf* skel = switch_floor_bpf::open_and_load();
  if (skel == nullptr) return std::perror("switch_floor: load"), 1;
  if (switch_floor_bpf::attach(skel) != 0) {
    std::perror("switch_floor: attach");
    switch_floor_bpf::destroy(skel);
    return 1;
  }
  std::printf("attached\n");
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop, &sig);
  switch_floor_bpf::destroy(skel);
  return 0;
}
