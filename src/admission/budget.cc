// GCRA: a request at time `now` is admitted when the theoretical arrival time (TAT) is
// at most `tolerance` ahead of now; admitting pushes TAT forward by one interval.
// Equivalent to a token bucket of burst+1 tokens refilled at `rate`, in one word.
#include "admission/budget.h"

#include <algorithm>
#include <cmath>

namespace fg::admission {
namespace {

uint64_t interval_for(double rate) {
  double ns = 1e9 / rate;
  return ns < 1 ? 1 : static_cast<uint64_t>(std::llround(ns));
}

}  // namespace

Budget::Budget(double rate, double burst, uint64_t now_ns)
    : tat_ns_(now_ns),
      interval_ns_(interval_for(rate)),
      tolerance_ns_(static_cast<uint64_t>(std::llround(burst * static_cast<double>(interval_for(rate))))),
      rate_(rate),
      burst_(burst) {}

Decision Budget::try_acquire(uint64_t now_ns) {
  const uint64_t interval = interval_ns_.load(std::memory_order_relaxed);
  const uint64_t tolerance = tolerance_ns_.load(std::memory_order_relaxed);
  uint64_t tat = tat_ns_.load(std::memory_order_relaxed);
  for (;;) {
    uint64_t base = std::max(tat, now_ns);
    if (base - now_ns > tolerance) {
      Decision d;
      d.retry_after_ns = base - now_ns - tolerance;
      d.reset_ns = base - now_ns;
      return d;
    }
    uint64_t next = base + interval;
    if (tat_ns_.compare_exchange_weak(tat, next, std::memory_order_relaxed)) {
      Decision d;
      d.admitted = true;
      uint64_t ahead = next - now_ns;  // > 0
      uint64_t capacity = tolerance + interval;
      d.remaining = ahead >= capacity ? 0 : (capacity - ahead) / interval;
      d.reset_ns = ahead;
      return d;
    }
    // tat was reloaded by the failed CAS; try again.
  }
}

Decision Budget::peek(uint64_t now_ns) const {
  const uint64_t interval = interval_ns_.load(std::memory_order_relaxed);
  const uint64_t tolerance = tolerance_ns_.load(std::memory_order_relaxed);
  uint64_t tat = tat_ns_.load(std::memory_order_relaxed);
  uint64_t ahead = tat > now_ns ? tat - now_ns : 0;
  Decision d;
  d.admitted = ahead <= tolerance;
  d.retry_after_ns = ahead > tolerance ? ahead - tolerance : 0;
  uint64_t capacity = tolerance + interval;
  d.remaining = ahead >= capacity ? 0 : (capacity - ahead) / interval;
  d.reset_ns = ahead;
  return d;
}

void Budget::set_rate(double rate, double burst, uint64_t now_ns) {
  uint64_t old_interval = interval_ns_.load(std::memory_order_relaxed);
  uint64_t old_capacity = tolerance_ns_.load(std::memory_order_relaxed) + old_interval;
  uint64_t interval = interval_for(rate);
  uint64_t tolerance = static_cast<uint64_t>(std::llround(burst * static_cast<double>(interval)));
  uint64_t capacity = tolerance + interval;
  uint64_t tat = tat_ns_.load(std::memory_order_relaxed);
  uint64_t ahead = tat > now_ns ? tat - now_ns : 0;
  double used = std::min(1.0, static_cast<double>(ahead) / static_cast<double>(old_capacity));
  interval_ns_.store(interval, std::memory_order_relaxed);
  tolerance_ns_.store(tolerance, std::memory_order_relaxed);
  rate_.store(rate, std::memory_order_relaxed);
  burst_.store(burst, std::memory_order_relaxed);
  tat_ns_.store(now_ns + static_cast<uint64_t>(used * static_cast<double>(capacity)), std::memory_order_relaxed);
}

}  // namespace fg::admission
