// LatencyWindow: a per-second ring of log-scale histograms (see latency_window.h for
// the bucket layout and what the p99 promises).
#include "breaker/latency_window.h"

#include <algorithm>
#include <bit>

namespace fg::breaker {

size_t LatencyWindow::bucket_of(uint64_t latency_ms) {
  if (latency_ms < 8) return static_cast<size_t>(latency_ms);
  // latency in [2^e, 2^(e+1)), e >= 3: the two bits below the leading one pick the
  // quarter. Bucket 4(e-1) + quarter puts e = 3 right after the exact 0..7.
  const auto e = static_cast<uint64_t>(std::bit_width(latency_ms) - 1);
  const uint64_t quarter = (latency_ms >> (e - 2)) & 3;
  return static_cast<size_t>(std::min<uint64_t>(4 * (e - 1) + quarter, kBuckets - 1));
}

uint64_t LatencyWindow::bucket_upper_ms(size_t bucket) {
  if (bucket < 8) return bucket;
  const uint64_t e = bucket / 4 + 1;
  const uint64_t quarter = bucket % 4;
  const uint64_t width = uint64_t{1} << (e - 2);
  return ((4 + quarter) << (e - 2)) + width - 1;
}

void LatencyWindow::record(uint64_t latency_ms, uint64_t now_ms) {
  const uint64_t sec = now_ms / 1000;
  SecondSlot<kBuckets>& slot = slots_[sec % kWindowSeconds];
  if (slot.enter(sec)) slot.add(bucket_of(latency_ms));
}

LatencyWindow::Histogram LatencyWindow::load(uint64_t now_ms) const {
  const uint64_t sec = now_ms / 1000;
  const uint64_t window = std::min(kWindowSeconds, sec + 1);
  Histogram h;
  for (uint64_t s = sec + 1 - window; s <= sec; s++) {
    const SecondSlot<kBuckets>& slot = slots_[s % kWindowSeconds];
    if (!slot.holds(s)) continue;
    for (size_t b = 0; b < kBuckets; b++) {
      const uint64_t n = slot.get(b);
      h.counts[b] += n;
      h.total += n;
    }
  }
  return h;
}

uint64_t LatencyWindow::p99_of(const Histogram& h) {
  if (h.total == 0) return 0;
  // The rank (from 1) of the 99th percentile sample: ceil(0.99 n), in integers.
  const uint64_t rank = (99 * h.total + 99) / 100;
  uint64_t seen = 0;
  for (size_t b = 0; b < kBuckets; b++) {
    seen += h.counts[b];
    if (seen >= rank) return bucket_upper_ms(b);
  }
  return bucket_upper_ms(kBuckets - 1);
}

uint64_t LatencyWindow::samples(uint64_t now_ms) const { return load(now_ms).total; }

uint64_t LatencyWindow::p99_ms(uint64_t now_ms) const { return p99_of(load(now_ms)); }

uint64_t LatencyWindow::adaptive_timeout_ms(uint64_t now_ms, uint64_t min_ms, uint64_t max_ms) const {
  const Histogram h = load(now_ms);
  if (h.total < kMinSamples) return max_ms;
  return std::min(std::max(3 * p99_of(h), min_ms), max_ms);
}

}  // namespace fg::breaker
