// Clients that attack a server the way the receiver's limits tests need:
// raw bytes on a TCP connection (floods, trickles, lies), with the server's
// answer read on a thread of its own; and the process's peak RSS growth.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "tests/support/process_memory.h"

namespace kspan::testing {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Growth of the process's resident memory at its peak since construction
// (tests/support/process_memory.h).
class PeakRss {
 public:
  PeakRss() : reset_(ResetPeakMemory()), before_(ReadMemory()) {}
  std::int64_t growth_mib() const { return static_cast<std::int64_t>(PeakGrowthSince(before_) >> 20); }
  bool reset() const { return reset_; }

 private:
  bool reset_ = false;
  Memory before_;
};

class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    timeval tv{5, 0};  // a send the server never drains fails instead of hanging the test
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  }
  ~RawClient() {
    if (fd_ >= 0) shutdown(fd_, SHUT_RDWR);
    if (reader_.joinable()) reader_.join();
    if (fd_ >= 0) close(fd_);
  }

  bool connected() const { return connected_; }
  bool Send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent_ += static_cast<std::size_t>(n);
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  void CloseWrite() { shutdown(fd_, SHUT_WR); }
  std::size_t sent() const { return sent_; }

  // Reads what the server answers, on a thread of its own, until it closes.
  void StartReading() {
    reader_ = std::thread([this] {
      char buf[4096];
      for (;;) {
        const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
        std::lock_guard lock(mu_);
        if (n <= 0) {
          closed_ = true;
          return;
        }
        answer_.append(buf, static_cast<std::size_t>(n));
      }
    });
  }
  // What arrived once `done` holds for it, or when `timeout` passed.
  std::string WaitAnswer(const std::function<bool(const std::string&, bool closed)>& done, milliseconds timeout) {
    const auto until = steady_clock::now() + timeout;
    for (;;) {
      {
        std::lock_guard lock(mu_);
        if (done(answer_, closed_) || steady_clock::now() > until) return answer_;
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
  }
  // The whole answer, once the server closed the connection.
  std::string WaitClosed(milliseconds timeout) {
    return WaitAnswer([](const std::string&, bool closed) { return closed; }, timeout);
  }
  bool closed() {
    std::lock_guard lock(mu_);
    return closed_;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::size_t sent_ = 0;
  std::thread reader_;
  std::mutex mu_;
  std::string answer_;
  bool closed_ = false;
};

inline bool WaitFor(const std::function<bool()>& condition, milliseconds timeout) {
  const auto until = steady_clock::now() + timeout;
  while (!condition()) {
    if (steady_clock::now() > until) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return true;
}

// Sends a chunked body of up to `total` bytes after `head`, until the
// server stops taking it.
inline void ChunkedFlood(RawClient& c, const std::string& head, std::size_t total) {
  const std::string piece(64 * 1024, 'a');
  char size_line[32];
  std::snprintf(size_line, sizeof(size_line), "%zx\r\n", piece.size());
  const std::string framed = size_line + piece + "\r\n";
  if (!c.Send(head)) return;
  while (c.sent() < total && c.Send(framed)) {
  }
}

}  // namespace kspan::testing
