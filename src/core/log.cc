// JSON-lines log sink shared by every thread. Lines are assembled in memory and written
// with one write(2) each batch so that lines from different workers never interleave
// (the kernel keeps one write on an O_APPEND file or a pipe of <= PIPE_BUF together;
// larger batches contain whole lines only).
#include "core/log.h"

#include "core/json_escape.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace fg::log {
namespace {

std::atomic<int> g_fd{2};

}  // namespace

bool open_sink(const std::string& path, std::string* error) {
  if (path.empty()) return true;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (error) *error = path + ": " + std::strerror(errno);
    return false;
  }
  g_fd.store(fd);
  return true;
}

void write_raw(std::string_view data) {
  int fd = g_fd.load(std::memory_order_relaxed);
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // a broken log sink must never take the gateway down
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

uint64_t wall_ms() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

void append_timestamp(std::string& out, uint64_t ms) {
  time_t secs = static_cast<time_t>(ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[32];
  int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                        static_cast<int>(ms % 1000));
  out.append(buf, static_cast<size_t>(n));
}

Line::Line(std::string& out) : out_(out) { out_ += '{'; }

void Line::key(std::string_view k) {
  if (out_.back() != '{') out_ += ',';
  out_ += '"';
  out_.append(k);
  out_ += "\":";
}

Line& Line::str(std::string_view k, std::string_view value) {
  key(k);
  out_ += '"';
  json::append_escaped(out_, value);
  out_ += '"';
  return *this;
}

Line& Line::num(std::string_view k, int64_t value) {
  key(k);
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "%" PRId64, value);
  out_.append(buf, static_cast<size_t>(n));
  return *this;
}

Line& Line::dbl(std::string_view k, double value) {
  key(k);
  char buf[32];
  int n = std::snprintf(buf, sizeof buf, "%.3f", value);
  out_.append(buf, static_cast<size_t>(n));
  return *this;
}

Line& Line::boolean(std::string_view k, bool value) {
  key(k);
  out_ += value ? "true" : "false";
  return *this;
}

void Line::finish() { out_ += "}\n"; }

}  // namespace fg::log
