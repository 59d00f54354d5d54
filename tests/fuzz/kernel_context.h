// What span building needs, with nothing read from the host: a fixed clock
// offset, and a /proc that does not exist (resources fall back to the
// record's comm).
#pragma once

#include <chrono>

#include "userspace/clock_sync.h"
#include "userspace/id_generator.h"
#include "userspace/process_resources.h"
#include "userspace/tcp_spans.h"

namespace kspan::fuzz {

struct KernelContext {
  ClockSync clock{std::chrono::hours(1), [] { return ClockSync::Sample{1'700'000'000'000'000'000, 1}; }};
  ProcessResources resources{ProcessResources::Options{
      .proc_root = "/nonexistent-kspan-fuzz-proc", .host_name = "fuzz", .max_entries = 8}};
  IdGenerator ids;
  SpanBuildContext ctx{clock, resources, ids};
};

}  // namespace kspan::fuzz
