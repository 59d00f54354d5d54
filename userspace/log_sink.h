// The log's last line of defence against injection: every message is passed
// through EscapeControls (exporter/terminal_text.h) before it is formatted,
// so no message, whatever a call site interpolated into it (a process's
// name, a collector's answer, libbpf's text, an exception's), can put a raw
// control byte or invalid UTF-8 on the terminal or start a line that looks
// like one of kspan's. Call sites still escape untrusted values themselves
// (EscapeForTerminal) so that they read back unambiguously; escaping here
// leaves those unchanged.
#pragma once

#include <memory>
#include <string>

#include "spdlog/sinks/sink.h"

namespace kspan {

class EscapingSink final : public spdlog::sinks::sink {
 public:
  explicit EscapingSink(std::shared_ptr<spdlog::sinks::sink> inner) : inner_(std::move(inner)) {}

  void log(const spdlog::details::log_msg& msg) override;
  void flush() override { inner_->flush(); }
  void set_pattern(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter(std::unique_ptr<spdlog::formatter> formatter) override {
    inner_->set_formatter(std::move(formatter));
  }

 private:
  std::shared_ptr<spdlog::sinks::sink> inner_;
};

}  // namespace kspan
