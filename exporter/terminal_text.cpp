#include "exporter/terminal_text.h"

#include <cstddef>
#include <cstdint>

namespace kspan {
namespace {

// The length of the valid UTF-8 sequence at text[i] (1..4) and its code
// point, or 0 when the bytes there are not valid UTF-8 (RFC 3629 table 3:
// no overlong forms, no surrogates, nothing beyond U+10FFFF).
std::size_t DecodeUtf8(std::string_view text, std::size_t i, char32_t* cp) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong below U+0800
    if (b0 == 0xED) hi = 0x9F;  // surrogates U+D800..U+DFFF
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong below U+10000
    if (b0 == 0xF4) hi = 0x8F;  // beyond U+10FFFF
  } else {
    return 0;  // a continuation byte, C0/C1 (overlong ASCII), F5..FF
  }
  if (i + len > text.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  char32_t v = b0 & (0xFF >> (len + 1));
  for (std::size_t k = 1; k < len; ++k) {
    const unsigned char b = byte(i + k);
    if ((b & 0xC0) != 0x80) return 0;
    v = (v << 6) | (b & 0x3F);
  }
  *cp = v;
  return len;
}

bool Printable(char32_t cp) {
  if (cp < 0x20 || cp == 0x7F) return false;     // C0, DEL
  if (cp >= 0x80 && cp <= 0x9F) return false;    // C1
  if (cp == 0x2028 || cp == 0x2029) return false;  // line/paragraph separator
  // Bidi_Control (Unicode PropList.txt).
  if (cp == 0x061C || cp == 0x200E || cp == 0x200F) return false;
  if (cp >= 0x202A && cp <= 0x202E) return false;
  if (cp >= 0x2066 && cp <= 0x2069) return false;
  return true;
}

void AppendHex(std::string* out, unsigned char b) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->append("\\x");
  out->push_back(kHex[b >> 4]);
  out->push_back(kHex[b & 0xF]);
}

// Escapes `text`; with `max_bytes`, stops before the output would pass it
// and ends in "..." (an escape or a character is never split).
std::string Escape(std::string_view text, bool escape_backslash, std::size_t max_bytes = SIZE_MAX) {
  static constexpr std::string_view kCut = "...";
  std::string out;
  out.reserve(text.size() < max_bytes ? text.size() : max_bytes);
  std::size_t cut_at = 0;  // the last end of a piece that leaves room for kCut
  std::size_t i = 0;
  while (i < text.size()) {
    if (out.size() + kCut.size() <= max_bytes) cut_at = out.size();
    char32_t cp = 0;
    const std::size_t len = DecodeUtf8(text, i, &cp);
    if (len == 0) {
      AppendHex(&out, static_cast<unsigned char>(text[i]));
      ++i;
    } else {
      if (!Printable(cp)) {
        for (std::size_t k = 0; k < len; ++k) AppendHex(&out, static_cast<unsigned char>(text[i + k]));
      } else if (cp == '\\' && escape_backslash) {
        out.append("\\\\");
      } else {
        out.append(text.substr(i, len));
      }
      i += len;
    }
    if (out.size() > max_bytes) {
      out.resize(cut_at);
      if (cut_at + kCut.size() <= max_bytes) out.append(kCut);
      return out;
    }
  }
  return out;
}

}  // namespace

std::string EscapeForTerminal(std::string_view text) { return Escape(text, true); }

std::string EscapeControls(std::string_view text) { return Escape(text, false); }

std::string EscapePeerText(std::string_view text, std::size_t max_bytes, Backslashes backslashes) {
  return Escape(text, backslashes == Backslashes::kEscape, max_bytes);
}

bool IsTerminalSafe(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    char32_t cp = 0;
    const std::size_t len = DecodeUtf8(text, i, &cp);
    if (len == 0 || !Printable(cp)) return false;
    i += len;
  }
  return true;
}

}  // namespace kspan
