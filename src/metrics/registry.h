// Metrics: counters and histograms written by workers without shared writes (each
// worker owns a private block of cells; only it writes there) and summed at scrape
// time into Prometheus text. Series are registered on the main thread when a config
// snapshot is built; the hot path only adds to a cell by index.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace fg::metrics {

constexpr int kMaxWorkers = 256;
constexpr int kMainThread = kMaxWorkers;  // the slot of the main (admin/reload) thread
constexpr size_t kMaxCells = 1 << 14;     // series cells per thread block (128 KiB)

// Latency buckets (seconds) for every duration histogram: 0.5 ms to 30 s.
inline constexpr double kLatencyBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25,   0.5,   1,      2.5,   5,     10,    30};
constexpr size_t kLatencyBucketCount = sizeof(kLatencyBuckets) / sizeof(kLatencyBuckets[0]);

using CellId = uint32_t;

class Registry {
 public:
  static Registry& get();

  // Main thread: the cell of a counter series, created on first use. `labels` is the
  // rendered label set without braces, e.g. `route="orders",outcome="forwarded"`.
  CellId counter(std::string_view family, std::string_view help, std::string labels);
  // Main thread: a histogram series (kLatencyBucketCount+2 cells: buckets, +Inf, sum in µs).
  CellId histogram(std::string_view family, std::string_view help, std::string labels);

  // Main thread, before thread `thread` starts: allocates its block (idempotent).
  void ensure_thread(int thread);

  // Worker `thread` (its own block only; 0..kMaxWorkers-1, or kMainThread).
  void add(int thread, CellId id, uint64_t n = 1) {
    auto& c = blocks_[static_cast<size_t>(thread)][id];
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void observe(int thread, CellId base, double seconds);

  uint64_t value(CellId id) const;  // sum over all threads; any thread

  // Prometheus text of every registered series (gauges are rendered by the caller).
  // Any thread.
  std::string render() const;

 private:
  Registry();
  struct Series {
    std::string labels;
    CellId id;
  };
  struct Family {
    std::string help;
    bool histogram = false;
    std::vector<Series> series;
  };
  CellId allocate(size_t cells);

  mutable std::mutex mu_;  // registration and rendering only
  std::map<std::string, Family, std::less<>> families_;
  std::map<std::string, CellId, std::less<>> index_;
  CellId next_ = 0;
  std::unique_ptr<std::atomic<uint64_t>[]> blocks_[kMaxWorkers + 1];
};

// Appends a Prometheus label value escaped (backslash, quote, newline).
void append_label_value(std::string& out, std::string_view v);
std::string label(std::string_view name, std::string_view value);

}  // namespace fg::metrics
