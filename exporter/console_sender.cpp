#include "exporter/console_sender.h"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "exporter/terminal_text.h"

namespace kspan {
namespace {

// The attribute from the span, else from its resource.
const AttributeValue* Find(const Span& span, std::string_view key) {
  if (const auto* v = FindAttribute(span.attributes, key)) return v;
  if (span.resource) return FindAttribute(span.resource->attributes, key);
  return nullptr;
}

std::string ToText(const AttributeValue& v) {
  if (const auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (const auto* i = std::get_if<std::int64_t>(&v)) return absl::StrCat(*i);
  if (const auto* d = std::get_if<double>(&v)) return absl::StrCat(*d);
  // Strings as they are; bytes, arrays and key-value lists as JSON text.
  // Escaped: attributes come from apps and from the wire (a request target
  // an HTTP client chose), and this line goes to a terminal.
  return EscapeForTerminal(AttributeValueText(v));
}

std::string FirstOf(const Span& span, std::initializer_list<std::string_view> keys) {
  for (auto key : keys) {
    if (const auto* v = Find(span, key)) return ToText(*v);
  }
  return {};
}

}  // namespace

std::string FormatConsoleLine(const Span& span) {
  std::string line;
  const std::time_t secs = static_cast<std::time_t>(span.start_unix_nano / 1'000'000'000);
  const auto millis = (span.start_unix_nano / 1'000'000) % 1000;
  std::tm tm{};
  localtime_r(&secs, &tm);
  absl::StrAppendFormat(&line, "%02d:%02d:%02d.%03d %s", tm.tm_hour, tm.tm_min, tm.tm_sec,
                        static_cast<int>(millis), EscapeForTerminal(span.name));

  std::string peer = FirstOf(span, {"network.peer.address", "server.address"});
  if (!peer.empty()) {
    const std::string port = FirstOf(span, {"network.peer.port", "server.port"});
    // IPv6 addresses are bracketed so the port stays readable.
    if (peer.find(':') != std::string::npos) peer = absl::StrCat("[", peer, "]");
    absl::StrAppend(&line, " ", peer, port.empty() ? "" : ":", port);
  }

  const std::string who =
      FirstOf(span, {"service.name", "process.executable.name", "process.command"});
  const std::string pid = FirstOf(span, {"process.pid"});
  const std::string tid = FirstOf(span, {"thread.id"});
  if (!who.empty() || !pid.empty()) {
    absl::StrAppend(&line, " ", who.empty() ? "?" : who);
    if (!pid.empty()) absl::StrAppend(&line, "[", pid, tid.empty() ? "" : "/", tid, "]");
  }

  const double ms = span.end_unix_nano >= span.start_unix_nano
                        ? static_cast<double>(span.end_unix_nano - span.start_unix_nano) / 1e6
                        : 0.0;
  absl::StrAppendFormat(&line, " %.3fms", ms);

  switch (span.status_code) {
    case StatusCode::kOk: line += " OK"; break;
    case StatusCode::kError:
      line += " ERROR";
      if (!span.status_message.empty()) {
        absl::StrAppend(&line, " (", EscapeForTerminal(span.status_message), ")");
      }
      break;
    case StatusCode::kUnset: line += " -"; break;
  }
  return line;
}

ConsoleSender::ConsoleSender(const ConsoleOptions& options)
    : out_(options.to_stderr ? stderr : stdout) {}

ConsoleSender::ConsoleSender(std::FILE* out) : out_(out) {}

ExportResult ConsoleSender::Send(const SpanBatch& batch, Clock::time_point /*deadline*/) {
  std::string text;
  for (const auto& span : batch.spans) {
    text += FormatConsoleLine(span);
    text += '\n';
  }
  // One write per batch keeps lines of concurrent writers whole.
  if (std::fwrite(text.data(), 1, text.size(), out_) != text.size() || std::fflush(out_) != 0) {
    const int err = errno;
    // A closed terminal or pipe does not come back: retrying cannot help.
    return ExportResult::Permanent(err == EPIPE ? "EPIPE" : "EIO", std::strerror(err));
  }
  return ExportResult::Success();
}

}  // namespace kspan
