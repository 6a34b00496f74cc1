// Per-client rate limits with a fixed memory cap: a set-associative table of GCRA
// slots keyed by a 64-bit hash of the client key. A million distinct clients cannot
// grow it; when a set is full the slot whose client is furthest under its limit is
// reused (that client merely starts again with a full bucket).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>

#include "admission/budget.h"

namespace fg::admission {

class ClientLimiter {
 public:
  static constexpr size_t kWays = 4;
  static constexpr size_t kShards = 64;
  static constexpr size_t kBytesPerSlot = 16;

  // `slots` is rounded up to a multiple of kWays * kShards. Memory: slots * 16 bytes.
  ClientLimiter(double rate, double burst, size_t slots);

  // Thread-safe. One shard mutex is held for a few nanoseconds; shards keep workers
  // from contending unless they judge clients in the same shard at the same instant.
  Decision try_acquire(std::string_view key, uint64_t now_ns);

  void set_rate(double rate, double burst);
  size_t slots() const { return slots_; }
  size_t memory_bytes() const { return slots_ * kBytesPerSlot; }
  // Main thread only (the thread that calls set_rate).
  double rate() const { return rate_; }
  double burst() const { return burst_; }

 private:
  struct Slot {
    uint64_t key = 0;  // hash; 0 = empty
    uint64_t tat = 0;
  };
  struct alignas(64) Shard {
    std::mutex mu;
  };
  size_t slots_;
  size_t sets_;
  std::unique_ptr<Slot[]> table_;
  std::unique_ptr<Shard[]> shards_;
  double rate_;
  double burst_;
  uint64_t interval_ns_;
  uint64_t tolerance_ns_;
};

uint64_t hash_key(std::string_view key);

}  // namespace fg::admission
