#include "exporter/terminal_text.h"

#include <gtest/gtest.h>

#include <string>

namespace kspan {
namespace {

// No byte a terminal acts on: C0 controls, DEL, and no byte >= 0x80 that is
// not part of valid UTF-8 of a printable character (checked by re-reading
// the output: it must be terminal-safe itself).
void ExpectNoRawControl(const std::string& out) {
  for (unsigned char c : out) {
    EXPECT_FALSE(c < 0x20 || c == 0x7F) << "raw control byte " << int(c) << " in '" << out << "'";
  }
  EXPECT_TRUE(IsTerminalSafe(out)) << out;
}

TEST(TerminalText, PrintableUtf8IsKept) {
  for (const std::string s : {"GET /api/v1/users", "checkout-api", "naïve café", "日本語",
                              "emoji \xF0\x9F\x98\x80", "quotes \"'`", ""}) {
    EXPECT_EQ(EscapeForTerminal(s), s);
    EXPECT_EQ(EscapeControls(s), s);
    EXPECT_TRUE(IsTerminalSafe(s)) << s;
  }
}

TEST(TerminalText, ControlBytesAreHexEscaped) {
  EXPECT_EQ(EscapeForTerminal("a\nb"), "a\\x0ab");
  EXPECT_EQ(EscapeForTerminal("a\r\nb\tc"), "a\\x0d\\x0ab\\x09c");
  EXPECT_EQ(EscapeForTerminal(std::string("nul\0x", 5)), "nul\\x00x");
  EXPECT_EQ(EscapeForTerminal("del\x7f"), "del\\x7f");
  // Colour, clear screen, window title (OSC ... BEL).
  EXPECT_EQ(EscapeForTerminal("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
  EXPECT_EQ(EscapeForTerminal("\x1b[2J\x1b]0;pwned\x07"), "\\x1b[2J\\x1b]0;pwned\\x07");
}

TEST(TerminalText, C1SeparatorsAndBidiControlsAreEscaped) {
  // U+009B (CSI as a C1 control), encoded as valid UTF-8.
  EXPECT_EQ(EscapeForTerminal("x\xC2\x9B" "31m"), "x\\xc2\\x9b31m");
  // U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR.
  EXPECT_EQ(EscapeForTerminal("a\xE2\x80\xA8" "b\xE2\x80\xA9"), "a\\xe2\\x80\\xa8b\\xe2\\x80\\xa9");
  // U+202E RIGHT-TO-LEFT OVERRIDE, U+2066 LEFT-TO-RIGHT ISOLATE.
  EXPECT_EQ(EscapeForTerminal("ok\xE2\x80\xAE" "gpj.exe"), "ok\\xe2\\x80\\xaegpj.exe");
  EXPECT_EQ(EscapeForTerminal("\xE2\x81\xA6"), "\\xe2\\x81\\xa6");
}

TEST(TerminalText, InvalidUtf8IsEscapedByteByByte) {
  EXPECT_EQ(EscapeForTerminal("\x9b" "31m"), "\\x9b31m");   // a lone continuation byte (8-bit CSI)
  EXPECT_EQ(EscapeForTerminal("\xC0\x8A"), "\\xc0\\x8a");    // overlong LF
  EXPECT_EQ(EscapeForTerminal("\xE0\x80\x8A"), "\\xe0\\x80\\x8a");  // overlong LF, 3 bytes
  EXPECT_EQ(EscapeForTerminal("\xED\xA0\x80"), "\\xed\\xa0\\x80");  // surrogate U+D800
  EXPECT_EQ(EscapeForTerminal("\xF4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // > U+10FFFF
  EXPECT_EQ(EscapeForTerminal("\xFF\xFE"), "\\xff\\xfe");
  // A cut sequence, then valid text: the text after it is kept.
  EXPECT_EQ(EscapeForTerminal("\xE6\x97" "ok"), "\\xe6\\x97ok");
  EXPECT_EQ(EscapeForTerminal("end\xF0\x9F\x98"), "end\\xf0\\x9f\\x98");
}

TEST(TerminalText, BackslashIsEscapedOnlyForValues) {
  // A literal "\x1b" in a value cannot pass for an escaped ESC.
  EXPECT_EQ(EscapeForTerminal("C:\\x1b"), "C:\\\\x1b");
  // The log sink sees lines whose values are escaped already: unchanged.
  const std::string once = EscapeForTerminal("a\nb\\c");
  EXPECT_EQ(EscapeControls(once), once);
  EXPECT_EQ(EscapeControls("a\nb\\c"), "a\\x0ab\\c");
}

TEST(TerminalText, AnyByteStringComesOutSafe) {
  // Every single byte and every pair of bytes.
  for (int a = 0; a < 256; ++a) {
    std::string one(1, static_cast<char>(a));
    ExpectNoRawControl(EscapeForTerminal(one));
    for (int b = 0; b < 256; ++b) {
      std::string two = one + static_cast<char>(b);
      const std::string out = EscapeForTerminal(two);
      ASSERT_TRUE(IsTerminalSafe(out)) << a << " " << b;
      ASSERT_EQ(out.find('\n'), std::string::npos);
    }
  }
  EXPECT_FALSE(IsTerminalSafe("a\nb"));
  EXPECT_FALSE(IsTerminalSafe("\xC3"));
  EXPECT_TRUE(IsTerminalSafe("\xC3\xA9"));
}

}  // namespace
}  // namespace kspan
