// Route budgets: a GCRA (generic cell rate algorithm) token bucket kept in one atomic
// "theoretical arrival time", shared by every worker of the instance without a lock.
// No libuv: callers pass the monotonic time in nanoseconds.
#pragma once

#include <atomic>
#include <cstdint>

namespace fg::admission {

struct Decision {
  bool admitted = false;
  uint64_t retry_after_ns = 0;  // when rejected: until one request would be admitted
  uint64_t remaining = 0;       // requests that could still be admitted right now
  uint64_t reset_ns = 0;        // until the bucket is full again
};

// Admits at most `rate` requests per second plus `burst` at once. Exact: over any
// interval t of continuous demand it admits floor(t * rate) + burst + 1 requests.
// Thread-safe: try_acquire() is a compare-and-swap loop on one 64-bit atomic; the
// parameters are atomics too, so a reload applies to every worker at once (a request
// racing with set_rate() may be judged by the old rate: one request's worth of error).
class Budget {
 public:
  Budget(double rate, double burst, uint64_t now_ns);

  Decision try_acquire(uint64_t now_ns);
  // Read-only view of the same numbers (for RateLimit headers on other answers).
  Decision peek(uint64_t now_ns) const;

  // Changes rate and burst keeping the current fill ratio (a half-full bucket stays
  // half full under the new parameters).
  void set_rate(double rate, double burst, uint64_t now_ns);

  double rate() const { return rate_.load(std::memory_order_relaxed); }
  double burst() const { return burst_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> tat_ns_;        // theoretical arrival time of the next request
  std::atomic<uint64_t> interval_ns_;   // 1e9 / rate
  std::atomic<uint64_t> tolerance_ns_;  // burst * interval
  std::atomic<double> rate_;
  std::atomic<double> burst_;
};

}  // namespace fg::admission
