// Text that did not come from kspan itself (span names and attributes from
// apps and from the wire, a collector's messages, names read from /proc or a
// container's files), made safe to print on a terminal or into the log: no
// byte of it can move the cursor, change colours, retitle the window, start
// a new line that looks like one of kspan's, or reorder what follows.
//
// Kept as is: valid UTF-8 of printable characters. Escaped as \xNN, byte by
// byte: C0 controls (CR, LF, TAB, ESC...), DEL, C1 controls (U+0080..U+009F,
// which some terminals take as 8-bit CSI/OSC), the line and paragraph
// separators U+2028/U+2029, the Bidi_Control characters (U+061C, U+200E,
// U+200F, U+202A..U+202E, U+2066..U+2069: "Trojan Source" reordering), and
// every byte that is not part of valid UTF-8 (overlong forms, surrogates,
// beyond U+10FFFF, cut sequences).
//
// Hand-written rather than absl::Utf8SafeCHexEscape: that one passes every
// byte >= 0x80 through unchecked, so invalid UTF-8 and C1 controls would
// reach the terminal.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace kspan {

// For one untrusted value: also escapes '\' as "\\", so the output reads
// back unambiguously (a literal "\x1b" in the input is printed "\\x1b").
std::string EscapeForTerminal(std::string_view text);

// For a whole line that may already hold escaped values (the log sink): a
// backslash stays as it is, so escaping twice changes nothing.
std::string EscapeControls(std::string_view text);

// Text a peer wrote (a collector's gRPC status message, partial_success
// error_message, an HTTP error body), escaped as EscapeForTerminal does and
// bounded: a collector is outside kspan's trust boundary and may answer any
// number of bytes. Longer text is cut (never inside an escape or a
// character) and ends in "...".
inline constexpr std::size_t kMaxPeerTextBytes = 512;
enum class Backslashes {
  kEscape,  // "\" becomes "\\": the output reads back unambiguously
  kKeep,    // for text that may already be escaped (dead letters stored
            // escaped): escaping it again would double them
};
std::string EscapePeerText(std::string_view text, std::size_t max_bytes = kMaxPeerTextBytes,
                           Backslashes backslashes = Backslashes::kEscape);

// True when EscapeControls would return `text` unchanged (the common case,
// checked without allocating).
bool IsTerminalSafe(std::string_view text);

}  // namespace kspan
