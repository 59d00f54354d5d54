// Text from outside kspan on its way to a terminal or the log: the rows of
// `kspan dlq list` (a dead letter's destination, reason, and the collector's
// code and message, stored as the collector sent them), span names and
// attributes on the console, a collector's error messages in the log. Each
// escaped text must be safe to print (IsTerminalSafe), within its bound
// (a cut never splits an escape or a character), and escaping twice must
// change nothing where the promise is made (EscapeControls).
//
// Input: the first byte is the bound (0 to 255 bytes) and, in the rows'
// way, whether backslashes are kept; the rest is the text.
// Seeds: collectors' answers with escape sequences, forged rows, invalid
// UTF-8 and Trojan Source controls (corpus/README.md).
#include <cstddef>
#include <cstdint>
#include <string>

#include "exporter/terminal_text.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kspan::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kspan;
  if (size == 0) return 0;
  const std::size_t max_bytes = data[0] >> 1;
  const Backslashes backslashes = (data[0] & 1) != 0 ? Backslashes::kKeep : Backslashes::kEscape;
  const std::string_view text = fuzz::AsText(data + 1, size - 1);

  const std::string full = EscapeForTerminal(text);
  FUZZ_CHECK(IsTerminalSafe(full));
  const std::string controls = EscapeControls(text);
  FUZZ_CHECK(IsTerminalSafe(controls));
  FUZZ_CHECK(EscapeControls(controls) == controls);
  if (IsTerminalSafe(text)) FUZZ_CHECK(controls == text);

  const std::string peer = EscapePeerText(text, max_bytes, backslashes);
  FUZZ_CHECK(IsTerminalSafe(peer));
  FUZZ_CHECK(peer.size() <= max_bytes);
  const std::string unbounded = backslashes == Backslashes::kKeep ? controls : full;
  if (peer != unbounded) {
    // Cut: a prefix of the whole escape, ending in "..." when there is room.
    std::string_view kept = peer;
    if (kept.size() >= 3 && kept.substr(kept.size() - 3) == "...") kept.remove_suffix(3);
    FUZZ_CHECK(unbounded.compare(0, kept.size(), kept) == 0);
    FUZZ_CHECK(unbounded.size() > max_bytes);
  }
  return 0;
}
