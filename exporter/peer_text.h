// Text a peer wrote (a collector's gRPC status message, partial_success
// error_message, an HTTP error body) made safe to print: to the log, to
// `kspan dlq list` on a terminal, to the dead-letter store that list reads.
//
// A collector is outside kspan's trust boundary: its text may hold escape
// sequences that clear a terminal or move its cursor, newlines that forge
// log lines or `dlq list` rows, bidirectional overrides that reorder what a
// reader sees, and any number of bytes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kspan {

// Longest escaped peer text kept (in ExportResult::message and so in logs
// and dead letters); longer text ends in "...".
inline constexpr std::size_t kMaxPeerTextBytes = 512;

enum class Backslashes {
  kEscape,  // "\" becomes "\\": the output reads back unambiguously
  kKeep,    // for text that may already be escaped (dead letters stored
            // by this function): escaping it again would double them
};

// Printable ASCII and valid UTF-8 stay; CR, LF and TAB become \r \n \t;
// other C0 controls, DEL and invalid UTF-8 bytes \xHH; C1 controls, line and
// paragraph separators and bidirectional formatting characters \u{XXXX}.
// At most `max_bytes` of output (with the "..." that marks a cut).
std::string EscapePeerText(std::string_view in, std::size_t max_bytes = kMaxPeerTextBytes,
                           Backslashes backslashes = Backslashes::kEscape);

}  // namespace kspan
