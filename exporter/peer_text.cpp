#include "exporter/peer_text.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace kspan {
namespace {

// Length and code point of the valid UTF-8 sequence at s[i]; length 0 when
// invalid (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
std::size_t DecodeUtf8(std::string_view s, std::size_t i, std::uint32_t* cp) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const auto cont = [&](std::size_t k) { return i + k < s.size() && (b(k) & 0xC0) == 0x80; };
  const unsigned char c = b(0);
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF) {
    if (!cont(1)) return 0;
    *cp = (c & 0x1Fu) << 6 | (b(1) & 0x3Fu);
    return 2;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xE0 && b(1) < 0xA0) return 0;  // overlong
    if (c == 0xED && b(1) > 0x9F) return 0;  // surrogate
    *cp = (c & 0x0Fu) << 12 | (b(1) & 0x3Fu) << 6 | (b(2) & 0x3Fu);
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xF0 && b(1) < 0x90) return 0;  // overlong
    if (c == 0xF4 && b(1) > 0x8F) return 0;  // > U+10FFFF
    *cp = (c & 0x07u) << 18 | (b(1) & 0x3Fu) << 12 | (b(2) & 0x3Fu) << 6 | (b(3) & 0x3Fu);
    return 4;
  }
  return 0;
}

// Code points that change how a terminal or a reader sees the rest of the
// line although they print nothing themselves.
bool Invisible(std::uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) ||      // C1 controls (U+009B is a CSI)
         cp == 0x200E || cp == 0x200F ||    // LRM, RLM
         cp == 0x2028 || cp == 0x2029 ||    // line and paragraph separators
         (cp >= 0x202A && cp <= 0x202E) ||  // bidi embeddings and overrides
         (cp >= 0x2066 && cp <= 0x2069) ||  // bidi isolates
         cp == 0xFEFF;                      // zero-width no-break space
}

}  // namespace

// Hand-written rather than absl::Utf8SafeCHexEscape: that one passes every
// byte >= 0x80 through, C1 controls and invalid UTF-8 included, and a
// terminal may act on U+009B as on ESC [.
std::string EscapePeerText(std::string_view in, std::size_t max_bytes, Backslashes backslashes) {
  static constexpr std::string_view kCut = "...";
  std::string out;
  out.reserve(std::min(in.size(), max_bytes));
  char buf[16];
  std::size_t cut_at = 0;
  for (std::size_t i = 0; i < in.size();) {
    std::uint32_t cp = 0;
    const std::size_t n = DecodeUtf8(in, i, &cp);
    std::string_view piece;
    if (n == 0) {
      std::snprintf(buf, sizeof(buf), "\\x%02X", static_cast<unsigned char>(in[i]));
      piece = buf;
    } else if (cp == '\n') {
      piece = "\\n";
    } else if (cp == '\r') {
      piece = "\\r";
    } else if (cp == '\t') {
      piece = "\\t";
    } else if (cp == '\\') {
      piece = backslashes == Backslashes::kEscape ? "\\\\" : "\\";
    } else if (cp < 0x20 || cp == 0x7F) {
      std::snprintf(buf, sizeof(buf), "\\x%02X", static_cast<unsigned>(cp));
      piece = buf;
    } else if (Invisible(cp)) {
      std::snprintf(buf, sizeof(buf), "\\u{%04X}", static_cast<unsigned>(cp));
      piece = buf;
    } else {
      piece = in.substr(i, n);
    }
    // Pieces are never split: remember the last end that leaves room for
    // the mark of a cut, and stop once the output is over the bound.
    if (out.size() + kCut.size() <= max_bytes) cut_at = out.size();
    out.append(piece);
    i += n == 0 ? 1 : n;
    if (out.size() > max_bytes) {
      out.resize(cut_at);
      if (cut_at + kCut.size() <= max_bytes) out.append(kCut);
      return out;
    }
  }
  return out;
}

}  // namespace kspan
