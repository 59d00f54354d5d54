#include "userspace/log_sink.h"

#include <string_view>

#include "exporter/terminal_text.h"

namespace kspan {

void EscapingSink::log(const spdlog::details::log_msg& msg) {
  const std::string_view payload(msg.payload.data(), msg.payload.size());
  if (IsTerminalSafe(payload)) {
    inner_->log(msg);
    return;
  }
  const std::string escaped = EscapeControls(payload);
  spdlog::details::log_msg copy(msg);
  copy.payload = spdlog::string_view_t(escaped.data(), escaped.size());
  inner_->log(copy);
}

}  // namespace kspan
