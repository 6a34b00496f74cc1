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

// Opens the sink's file again (logrotate moved it away): the new file takes the old
// descriptor's place atomically (dup2), so lines written meanwhile by other threads go
// to one file or the other, never nowhere. Main thread. True with stderr as the sink.
bool reopen_sink(std::string* error);

// Writes `data` (whole lines) to the sink with a single write(2); safe from any thread.
void write_raw(std::string_view data);

// Event lines below the level are not written (log.level; default info). Set by the
// main thread at start and reload; read by every thread (relaxed: a line racing a
// reload may use the old level).
enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };
// "debug", "info", "warn" or "error" (log.level); false for anything else.
bool parse_level(std::string_view name, Level* out);
void set_level(Level level);
bool enabled(std::string_view level);

// Sampling of successful access lines under load (log.access_sample, 0..1; default 1):
// a line of a request answered with status < 400 is kept with that probability; errors
// (and requests without an answer) are always kept. Any thread.
void set_access_sample(double ratio);
bool keep_access_line(int status);

// Milliseconds since the Unix epoch, and its ISO-8601 UTC form "2026-11-25T22:04:38.123Z".
uint64_t wall_ms();
void append_timestamp(std::string& out, uint64_t wall_ms);
// The same into out[0..kTimestampMax); returns its length (24 until the year 10000).
constexpr size_t kTimestampMax = 40;
size_t format_timestamp(char* out, uint64_t wall_ms);

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
  // Appends `,"k":` (no comma before the first field) and then `tail` in one append.
  void key(std::string_view k, std::string_view tail = {});
  std::string& out_;
  bool first_ = true;
};

// Writes an event line {"ts":..,"level":..,"event":name, ...}; `fill` may add fields.
// Safe from any thread; costs one write(2).
template <typename Fill>
void event(std::string_view level, std::string_view name, Fill&& fill) {
  if (!enabled(level)) return;
  std::string buf;
  buf.reserve(256);
  Line line(buf);
  char ts[kTimestampMax];
  line.str("ts", std::string_view(ts, format_timestamp(ts, wall_ms()))).str("level", level).str("event", name);
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
