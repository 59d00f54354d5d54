#include "exporter/dlq_commands.h"

#include <chrono>
#include <ctime>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "exporter/dead_letter_store.h"
#include "exporter/export_pipeline.h"
#include "exporter/otlp_transform.h"
#include "exporter/status_macros.h"
#include "exporter/terminal_text.h"

namespace kspan {
namespace {

bool HasStore(const DestinationConfig& d) {
  return d.dead_letter.enabled && !d.dead_letter.path.empty() &&
         std::filesystem::exists(d.dead_letter.path);
}

std::string FormatTime(std::int64_t unix_ms) {
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

absl::Status DlqList(const ExportConfig& config, std::FILE* out) {
  std::size_t total = 0;
  std::fprintf(out, "%-6s %-20s %-16s %7s %9s %-16s %-22s %s\n", "ID", "TIME", "DESTINATION",
               "SPANS", "BYTES", "REASON", "CODE", "MESSAGE");
  for (const auto& d : config.destinations) {
    if (!HasStore(d)) continue;
    auto store = DeadLetterStore::Open(d.dead_letter.path, d.dead_letter.max_bytes);
    if (!store.ok()) return store.status();
    auto list = (*store)->List();
    if (!list.ok()) return list.status();
    for (const auto& e : *list) {
      // The code and message are a collector's words, stored as it sent
      // them (by older versions, unescaped): they must not drive the
      // terminal or add lines to the listing. The message keeps its
      // backslashes: senders may have escaped it already.
      std::fprintf(out, "%-6lld %-20s %-16s %7zu %9zu %-16s %-22s %s\n",
                   static_cast<long long>(e.id), FormatTime(e.created_unix_ms).c_str(),
                   EscapeForTerminal(e.destination).c_str(), e.spans, e.bytes,
                   EscapeForTerminal(e.reason).c_str(), EscapePeerText(e.code, 64, Backslashes::kKeep).c_str(),
                   // Stored escaped by the senders; escaped again here (not
                   // doubling backslashes) for rows an older kspan stored raw:
                   // one row per line whatever a collector answered.
                   EscapePeerText(e.message, 120, Backslashes::kKeep).c_str());
      ++total;
    }
  }
  std::fprintf(out, "%zu dead letter(s)\n", total);
  return absl::OkStatus();
}

absl::StatusOr<DlqReplaySummary> DlqReplay(const ExportConfig& config,
                                           const std::string& destination, std::FILE* out,
                                           const EnvLookup& env) {
  DlqReplaySummary summary;
  bool found = destination.empty();
  for (const auto& d : config.destinations) {
    if (!destination.empty() && d.name != destination) continue;
    found = true;
    if (!HasStore(d)) continue;
    auto store = DeadLetterStore::Open(d.dead_letter.path, d.dead_letter.max_bytes);
    if (!store.ok()) return store.status();
    auto list = (*store)->List();
    if (!list.ok()) return list.status();
    if (list->empty()) continue;
    auto sender = MakeSpanSender(d, env);
    if (!sender.ok()) {
      return absl::Status(sender.status().code(), absl::StrCat("destination '", d.name,
                                                               "': ", sender.status().message()));
    }
    const auto timeout = d.otlp_grpc.timeout.count() > 0 ? d.otlp_grpc.timeout
                                                         : std::chrono::milliseconds(10000);
    for (const auto& e : *list) {
      auto payload = (*store)->Load(e.id);
      otlp::ExportTraceServiceRequest request;
      if (!payload.ok() || !request.ParseFromString(*payload)) {
        std::fprintf(out, "%lld: cannot read the stored batch; kept\n", static_cast<long long>(e.id));
        ++summary.batches_failed;
        continue;
      }
      SpanBatch batch;
      batch.spans = FromExportRequest(request);
      const auto r = (*sender)->Send(batch, std::chrono::steady_clock::now() + timeout);
      if (r.outcome == ExportResult::Outcome::kSuccess) {
        KSPAN_RETURN_IF_ERROR((*store)->Remove(e.id));
        ++summary.batches_sent;
        summary.spans_sent += batch.spans.size();
        summary.spans_rejected += static_cast<std::size_t>(std::max<std::int64_t>(r.rejected_spans, 0));
        std::fprintf(out, "%lld: sent %zu spans to '%s'%s\n", static_cast<long long>(e.id),
                     batch.spans.size(), EscapeForTerminal(d.name).c_str(),
                     r.rejected_spans > 0
                         ? absl::StrCat(" (", r.rejected_spans,
                                        " rejected: ", EscapeControls(r.message), ")")
                               .c_str()
                         : "");
      } else {
        ++summary.batches_failed;
        std::fprintf(out, "%lld: '%s' refused again (%s: %s); kept\n", static_cast<long long>(e.id),
                     EscapeForTerminal(d.name).c_str(), EscapeForTerminal(r.code).c_str(),
                     EscapeControls(r.message).c_str());
      }
    }
  }
  if (!found) {
    return absl::NotFoundError(absl::StrCat("no destination named '", destination, "'"));
  }
  std::fprintf(out, "replayed %zu batch(es), %zu span(s); %zu batch(es) still in the store\n",
               summary.batches_sent, summary.spans_sent, summary.batches_failed);
  return summary;
}

}  // namespace kspan
