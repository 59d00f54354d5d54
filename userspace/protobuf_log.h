// libprotobuf logs to stderr on its own, once per call: parsing a request
// with invalid UTF-8 in a string field writes an ERROR line each time, so
// any client could fill kspan's log (and journald) at its request rate.
// This routes those lines to spdlog as warnings (they are about a peer's
// data, which the receiver answers and counts), at most one every
// `min_interval`, with the number of lines left out since the last one.
#pragma once

#include <chrono>
#include <cstdint>

namespace kspan {

// Process-wide (libprotobuf has one handler); idempotent.
void RouteProtobufLogsToSpdlog(std::chrono::milliseconds min_interval = std::chrono::seconds(10));

// Lines libprotobuf wrote that were not logged (over the rate).
std::uint64_t ProtobufLogLinesSuppressed();

}  // namespace kspan
