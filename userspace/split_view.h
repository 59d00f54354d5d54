// Splitting text into views of it, for parsers of kernel and node files.
//
// Hand-written rather than absl::StrSplit: Debian's abseil has a string_view
// of its own (not std::string_view), so its pieces would need converting at
// every use in code that works on std::string_view.
#pragma once

#include <string_view>
#include <vector>

namespace kspan {

// Every piece between separators, empty ones included ("a::b" -> a, "", b).
inline std::vector<std::string_view> SplitView(std::string_view s, char separator) {
  std::vector<std::string_view> parts;
  while (true) {
    const std::size_t at = s.find(separator);
    parts.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return parts;
    s.remove_prefix(at + 1);
  }
}

}  // namespace kspan
