// JSON-lines logging: one object per line on stderr or `log.file`.
// Event lines are written at once (rare); access lines are batched per worker in a
// LogBuffer and flushed by the worker's timer, so a request costs no syscall for logging.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fg::log {

// Opens the sink. `path` empty means stderr. Called once by main before workers start.
// Returns false (and leaves stderr as the sink) when the file cannot be opened.
bool open_sink(const std::string& path, std::string* error);

// Writes `data` (whole lines) to the sink with a single write(2); safe from any thread.
void write_raw(std::string_view data);

// Milliseconds since the Unix epoch, and its ISO-8601 UTC form "2026-11-25T22:04:38.123Z".
uint64_t wall_ms();
void append_timestamp(std::string& out, uint64_t wall_ms);

// A small builder for one JSON object: add fields, then finish() appends the newline.
class Line {
 public:
  explicit Line(std::string& out);
  Line& str(std::string_view key, std::string_view value);
  Line& num(std::string_view key, int64_t value);
  Line& dbl(std::string_view key, double value);
  Line& boolean(std::string_view key, bool value);
  void finish();

 private:
  void key(std::string_view k);
  std::string& out_;
};

// Writes an event line {"ts":..,"level":..,"event":name, ...}; `fill` may add fields.
// Safe from any thread; costs one write(2).
template <typename Fill>
void event(std::string_view level, std::string_view name, Fill&& fill) {
  std::string buf;
  buf.reserve(256);
  Line line(buf);
  std::string ts;
  append_timestamp(ts, wall_ms());
  line.str("ts", ts).str("level", level).str("event", name);
  fill(line);
  line.finish();
  write_raw(buf);
}

inline void event(std::string_view level, std::string_view name) {
  event(level, name, [](Line&) {});
}

// Per-worker buffer of access lines. Owned and used by one worker thread only.
class LogBuffer {
 public:
  static constexpr size_t kFlushBytes = 64 * 1024;
  std::string& buffer() { return buf_; }
  // Flushes when the buffer is large; the worker also flushes it on a timer.
  void maybe_flush() {
    if (buf_.size() >= kFlushBytes) flush();
  }
  void flush() {
    if (!buf_.empty()) {
      write_raw(buf_);
      buf_.clear();
    }
  }

 private:
  std::string buf_;
};

}  // namespace fg::log
