// The metrics registry and its Prometheus text rendering.
#include "metrics/registry.h"

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace fg::metrics {

Registry& Registry::get() {
  static Registry* r = new Registry();  // lives as long as the process; workers use it to the end
  return *r;
}

Registry::Registry() { ensure_thread(kMainThread); }

void Registry::ensure_thread(int thread) {
  auto& b = blocks_[static_cast<size_t>(thread)];
  if (b) return;
  b.reset(new std::atomic<uint64_t>[kMaxCells]);
  for (size_t i = 0; i < kMaxCells; i++) b[i].store(0, std::memory_order_relaxed);
}

CellId Registry::allocate(size_t cells) {
  if (next_ + cells > kMaxCells) {
    std::fprintf(stderr, "floodgate: metrics registry full (%zu cells)\n", kMaxCells);
    std::abort();  // a broken invariant: the series set is bounded by the config
  }
  CellId id = next_;
  next_ += static_cast<CellId>(cells);
  return id;
}

CellId Registry::counter(std::string_view family, std::string_view help, std::string labels) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string key = std::string(family) + "{" + labels + "}";
  auto it = index_.find(key);
  if (it != index_.end()) return it->second;
  CellId id = allocate(1);
  index_.emplace(key, id);
  auto& f = families_[std::string(family)];
  f.help = help;
  f.series.push_back({std::move(labels), id});
  return id;
}

CellId Registry::histogram(std::string_view family, std::string_view help, std::string labels) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string key = std::string(family) + "{" + labels + "}";
  auto it = index_.find(key);
  if (it != index_.end()) return it->second;
  CellId id = allocate(kLatencyBucketCount + 2);
  index_.emplace(key, id);
  auto& f = families_[std::string(family)];
  f.help = help;
  f.histogram = true;
  f.series.push_back({std::move(labels), id});
  return id;
}

void Registry::observe(int thread, CellId base, double seconds) {
  size_t b = 0;
  while (b < kLatencyBucketCount && seconds > kLatencyBuckets[b]) b++;
  add(thread, base + static_cast<CellId>(b));
  double us = seconds * 1e6;
  // Rounded, not truncated: callers pass whole milliseconds as ms / 1000.0, which is
  // often a hair below the exact value.
  add(thread, base + static_cast<CellId>(kLatencyBucketCount + 1), us > 0 ? static_cast<uint64_t>(std::llround(us)) : 0);
}

uint64_t Registry::value(CellId id) const {
  uint64_t sum = 0;
  for (const auto& b : blocks_) {
    if (b) sum += b[id].load(std::memory_order_relaxed);
  }
  return sum;
}

std::string Registry::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out.reserve(16 * 1024);
  char num[64];
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n";
    out += "# TYPE " + name + (f.histogram ? " histogram\n" : " counter\n");
    for (const auto& s : f.series) {
      if (!f.histogram) {
        std::snprintf(num, sizeof num, " %" PRIu64 "\n", value(s.id));
        out += s.labels.empty() ? name + num : name + "{" + s.labels + "}" + num;
        continue;
      }
      uint64_t cumulative = 0;
      std::string sep = s.labels.empty() ? "" : ",";
      for (size_t b = 0; b <= kLatencyBucketCount; b++) {
        cumulative += value(s.id + static_cast<CellId>(b));
        std::string le = "+Inf";
        if (b < kLatencyBucketCount) {
          std::snprintf(num, sizeof num, "%g", kLatencyBuckets[b]);
          le = num;
        }
        std::snprintf(num, sizeof num, " %" PRIu64 "\n", cumulative);
        out += name + "_bucket{" + s.labels + sep + "le=\"" + le + "\"}" + num;
      }
      double sum = static_cast<double>(value(s.id + static_cast<CellId>(kLatencyBucketCount + 1))) / 1e6;
      std::snprintf(num, sizeof num, " %.6f\n", sum);
      out += name + "_sum{" + s.labels + "}" + num;
      std::snprintf(num, sizeof num, " %" PRIu64 "\n", cumulative);
      out += name + "_count{" + s.labels + "}" + num;
    }
  }
  return out;
}

void append_label_value(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

std::string label(std::string_view name, std::string_view value) {
  std::string out(name);
  out += "=\"";
  append_label_value(out, value);
  out += '"';
  return out;
}

}  // namespace fg::metrics
