// Monotonic time for every module: request timings, leases, budgets. One helper so that
// all of them read the same clock (CLOCK_MONOTONIC, the one libuv's loop time uses).
#pragma once

#include <cstdint>
#include <ctime>

namespace fg::clock {

inline uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

inline uint64_t mono_ms() { return mono_ns() / 1000000ULL; }

}  // namespace fg::clock
