// JSON-lines log sink shared by every thread. Lines are assembled in memory and written
// with one write(2) each batch so that lines from different workers never interleave
// (the kernel keeps one write on an O_APPEND file or a pipe of <= PIPE_BUF together;
// larger batches contain whole lines only).
#include "core/log.h"

#include "core/json_escape.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <utility>

namespace fg::log {
namespace {

std::atomic<int> g_fd{2};
std::string g_path;  // the sink's file; empty for stderr (main thread only)
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
// The kept share of successful access lines, in 1/2^32 steps (2^32 = keep all).
std::atomic<uint64_t> g_sample{1ull << 32};

}  // namespace

bool parse_level(std::string_view name, Level* out) {
  static constexpr std::pair<std::string_view, Level> kNames[] = {
      {"debug", Level::kDebug}, {"info", Level::kInfo}, {"warn", Level::kWarn}, {"error", Level::kError}};
  for (const auto& [n, l] : kNames) {
    if (n == name) {
      *out = l;
      return true;
    }
  }
  return false;
}

bool open_sink(const std::string& path, std::string* error) {
  if (path.empty()) return true;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (error) *error = path + ": " + std::strerror(errno);
    return false;
  }
  g_fd.store(fd);
  g_path = path;
  return true;
}

bool reopen_sink(std::string* error) {
  if (g_path.empty()) return true;
  int fd = ::open(g_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (error) *error = g_path + ": " + std::strerror(errno);
    return false;  // the old file stays the sink
  }
  int current = g_fd.load();
  if (::dup3(fd, current, O_CLOEXEC) < 0) {
    if (error) *error = g_path + ": " + std::strerror(errno);
    ::close(fd);
    return false;
  }
  ::close(fd);
  return true;
}

void set_level(Level level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }

bool enabled(std::string_view level) {
  Level l = Level::kInfo;  // an event's level is one of the four names; anything else counts as info
  parse_level(level, &l);
  return static_cast<int>(l) >= g_level.load(std::memory_order_relaxed);
}

void set_access_sample(double ratio) {
  if (ratio < 0) ratio = 0;
  if (ratio > 1) ratio = 1;
  g_sample.store(static_cast<uint64_t>(ratio * 4294967296.0), std::memory_order_relaxed);
}

bool keep_access_line(int status) {
  uint64_t keep = g_sample.load(std::memory_order_relaxed);
  if (keep >= (1ull << 32) || status <= 0 || status >= 400) return true;
  // xorshift32 per thread: cheap, and good enough to thin out log lines.
  static thread_local uint32_t state = 0x9e3779b9u ^ static_cast<uint32_t>(reinterpret_cast<uintptr_t>(&state));
  state ^= state << 13;
  state ^= state >> 17;
  state ^= state << 5;
  return state < keep;
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

size_t format_timestamp(char* out, uint64_t ms) {
  // Every line of a second shares "YYYY-MM-DDTHH:MM:SS.": it is formatted once per
  // second and thread, and a line only adds its milliseconds.
  static thread_local uint64_t cached_secs = UINT64_MAX;
  static thread_local char prefix[32];
  static thread_local size_t prefix_len = 0;
  uint64_t secs = ms / 1000;
  if (secs != cached_secs) {
    time_t t = static_cast<time_t>(secs);
    struct tm tm;
    gmtime_r(&t, &tm);
    int n = std::snprintf(prefix, sizeof prefix, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                          tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    prefix_len = n > 0 ? static_cast<size_t>(n) : 0;
    cached_secs = secs;
  }
  std::memcpy(out, prefix, prefix_len);
  unsigned frac = static_cast<unsigned>(ms % 1000);
  out[prefix_len] = static_cast<char>('0' + frac / 100);
  out[prefix_len + 1] = static_cast<char>('0' + frac / 10 % 10);
  out[prefix_len + 2] = static_cast<char>('0' + frac % 10);
  out[prefix_len + 3] = 'Z';
  return prefix_len + 4;
}

void append_timestamp(std::string& out, uint64_t ms) {
  char buf[kTimestampMax];
  out.append(buf, format_timestamp(buf, ms));
}

Line::Line(std::string& out) : out_(out) { out_ += '{'; }

// Field names are short literals: the separator, the quoted name and what follows are
// put together on the stack and appended once (an access line has a dozen fields).
void Line::key(std::string_view k, std::string_view tail) {
  char buf[96];
  if (k.size() + tail.size() + 4 > sizeof buf) {
    if (!first_) out_ += ',';
    out_ += '"';
    out_.append(k);
    out_ += "\":";
    out_.append(tail);
  } else {
    char* p = buf;
    if (!first_) *p++ = ',';
    *p++ = '"';
    std::memcpy(p, k.data(), k.size());
    p += k.size();
    *p++ = '"';
    *p++ = ':';
    if (!tail.empty()) std::memcpy(p, tail.data(), tail.size());  // an empty view may be null
    p += tail.size();
    out_.append(buf, static_cast<size_t>(p - buf));
  }
  first_ = false;
}

Line& Line::str(std::string_view k, std::string_view value) {
  key(k, "\"");
  json::append_escaped(out_, value);
  out_ += '"';
  return *this;
}

Line& Line::num(std::string_view k, int64_t value) {
  char buf[24];
  char* end = std::to_chars(buf, buf + sizeof buf, value).ptr;
  key(k, std::string_view(buf, static_cast<size_t>(end - buf)));
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
  key(k, value ? "true" : "false");
  return *this;
}

void Line::finish() { out_ += "}\n"; }

}  // namespace fg::log
