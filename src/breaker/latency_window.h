// The p99 of one upstream's response latencies over the last 10 seconds, for
// `timeout = "adaptive"` (clamp(3 x p99, timeout_min, timeout_max)). Shared by every
// worker; no libuv: callers pass the monotonic time in milliseconds.
#pragma once

#include <cstddef>
#include <cstdint>

#include "breaker/second_slot.h"

namespace fg::breaker {

// Ten 1 s slots, each a histogram of 64 log-scale buckets, all relaxed atomics:
// record() is two atomic increments (plus a slot rollover once a second), so every
// worker records without a lock.
//
// Buckets, 4 per doubling: 0..7 ms exactly (one bucket per millisecond), then each
// power of two [2^e, 2^(e+1)) split in 4 equal parts, up to bucket 63 =
// [114688, 131071] ms, which also takes anything longer. p99_ms() answers the upper
// edge of the bucket holding the 99th percentile sample, so for samples up to
// 131071 ms it is never below that sample and at most 25% above it.
//
// Approximations: those of SecondSlot (second_slot.h) at second boundaries; a p99
// read racing record() sees the sample or not; the window is the current whole second
// plus the 9 before it (a sample counts for more than 9 s and at most 10 s).
class LatencyWindow {
 public:
  static constexpr size_t kBuckets = 64;
  static constexpr uint64_t kWindowSeconds = 10;
  // Below this many samples in the window the p99 means little: adaptive_timeout_ms()
  // answers its maximum.
  static constexpr uint64_t kMinSamples = 20;

  LatencyWindow() = default;
  LatencyWindow(const LatencyWindow&) = delete;
  LatencyWindow& operator=(const LatencyWindow&) = delete;

  // Counts one latency (time to the response head, ms) at now_ms. Any thread.
  void record(uint64_t latency_ms, uint64_t now_ms);

  // Samples in the window ending at now_ms. Any thread.
  uint64_t samples(uint64_t now_ms) const;

  // The 99th percentile (the ceil(0.99 n)-th smallest sample, rounded up to its
  // bucket's upper edge) of the window ending at now_ms; 0 when the window is empty.
  // Any thread.
  uint64_t p99_ms(uint64_t now_ms) const;

  // clamp(3 x p99, min_ms, max_ms); max_ms while the window holds fewer than
  // kMinSamples samples (too few to trust, so the generous bound), and max_ms too
  // when min_ms > max_ms. Any thread.
  uint64_t adaptive_timeout_ms(uint64_t now_ms, uint64_t min_ms, uint64_t max_ms) const;

  // The bucket a latency falls in, and the largest latency of a bucket.
  static size_t bucket_of(uint64_t latency_ms);
  static uint64_t bucket_upper_ms(size_t bucket);

 private:
  struct Histogram {
    uint64_t counts[kBuckets] = {};
    uint64_t total = 0;
  };
  Histogram load(uint64_t now_ms) const;
  static uint64_t p99_of(const Histogram& h);

  // Slot s % kWindowSeconds counts second s.
  SecondSlot<kBuckets> slots_[kWindowSeconds];
};

}  // namespace fg::breaker
