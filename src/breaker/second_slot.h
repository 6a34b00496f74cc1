// One second's worth of counters in a ring of per-second slots, shared by every worker
// without a lock. Used by Breaker (requests/errors/timeouts) and LatencyWindow (a
// histogram); callers pass the time, so nothing here reads a clock.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace fg::breaker {

// A slot of a ring indexed by `second % ring_size`. `tag_` is the second it counts,
// plus one (0: never written). A writer for a newer second takes the slot over with a
// compare-and-swap on the tag; readers count a slot only when its tag is the exact
// second they look for, so a stale slot is simply skipped.
//
// What the relaxed atomics make approximate (all of it at a second boundary):
// - Rollover keeps every increment made for the new second. The thread that wins the
//   tag CAS subtracts the counts it read *before* the CAS (instead of storing zeros),
//   so increments by threads that already saw the new tag survive. The acq_rel CAS
//   keeps those reads before it, and a writer's acquire load of the new tag orders its
//   increment after them, so the subtraction never removes a new-second increment.
// - A writer that read the slot's old tag as current and then stalled for a whole ring
//   (ring_size seconds) before its increments adds that one sample to the newer second,
//   or only some of its counters (those incremented after the rollover's reads).
//   A sample whose second is a whole ring older than the slot is dropped (enter() is
//   false): it is outside every window by then.
// - A reader racing a rollover may see the new tag before the winner's subtraction and
//   count the outgoing second once more, for that one read.
// - clear() racing a rollover winner between its CAS and its subtraction makes the
//   subtraction remove counts that clear() already removed: the slot goes below zero.
//   get() reads such a value as 0, new increments first pay back the deficit, and the
//   slot's next rollover restores it exactly (the arithmetic is modulo 2^64). Cost: a
//   few samples of that one second unseen.
template <size_t N>
class SecondSlot {
 public:
  // Makes the slot count `second`. Returns false when it already counts a later second
  // (the sample is a whole ring old; the caller drops it). Any thread.
  bool enter(uint64_t second) {
    const uint64_t want = second + 1;
    uint64_t tag = tag_.load(std::memory_order_acquire);
    while (tag < want) {
      uint64_t seen[N];
      for (size_t i = 0; i < N; i++) seen[i] = counts_[i].load(std::memory_order_relaxed);
      if (tag_.compare_exchange_weak(tag, want, std::memory_order_acq_rel, std::memory_order_acquire)) {
        for (size_t i = 0; i < N; i++) counts_[i].fetch_sub(seen[i], std::memory_order_relaxed);
        return true;
      }
      // `tag` now holds the current tag: another thread rolled the slot (or the CAS
      // failed spuriously); look again.
    }
    return tag == want;
  }

  void add(size_t i, uint64_t n = 1) { counts_[i].fetch_add(n, std::memory_order_relaxed); }

  // True when the slot counts `second`. Any thread.
  bool holds(uint64_t second) const { return tag_.load(std::memory_order_acquire) == second + 1; }

  // Counter i; a transiently negative value (see clear()) reads as 0.
  uint64_t get(size_t i) const {
    const auto v = static_cast<int64_t>(counts_[i].load(std::memory_order_relaxed));
    return v < 0 ? 0 : static_cast<uint64_t>(v);
  }

  // Zeroes the counters, keeping the tag. An increment racing it is either removed or
  // kept, never doubled.
  void clear() {
    for (auto& c : counts_) c.exchange(0, std::memory_order_relaxed);
  }

 private:
  std::atomic<uint64_t> tag_{0};
  std::atomic<uint64_t> counts_[N]{};
};

}  // namespace fg::breaker
