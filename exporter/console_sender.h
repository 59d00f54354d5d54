// Human-readable export: one line per span on stdout or stderr, e.g.
//   12:01:02.345 connect 127.0.0.1:8080 curl[1234/1234] 0.231ms OK
// Meant for a first look and debugging, not for machines (use the file store).
#pragma once

#include <cstdio>
#include <string>

#include "exporter/export_config.h"
#include "exporter/sender.h"

namespace kspan {

// The line for one span, without the newline. Time is local wall time of the
// span's start.
std::string FormatConsoleLine(const Span& span);

class ConsoleSender final : public SpanSender {
 public:
  explicit ConsoleSender(const ConsoleOptions& options);
  // For tests: write to any stream.
  explicit ConsoleSender(std::FILE* out);

  ExportResult Send(const SpanBatch& batch, Clock::time_point deadline) override;

 private:
  std::FILE* out_;
};

}  // namespace kspan
