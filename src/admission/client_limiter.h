// Per-client rate limits with a fixed memory cap: a set-associative table of GCRA
// slots keyed by a 64-bit hash of the client key. A million distinct clients cannot
// grow it; when a set is full the slot whose client is furthest under its limit is
// reused (that client merely starts again with a full bucket).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

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

  // Sharing the limit with other instances (scope = "cluster"). Once enable_sync() ran
  // (any thread, idempotent), every admission is also counted per client until
  // collect() takes the counts: each shard keeps a list of the slots admitted since the
  // last collect, so collect() does not walk the table. A shard lists at most
  // kMaxDirtyPerShard clients between two collects; admissions of further clients are
  // not counted (they are still judged). Memory: 4 more bytes per slot.
  static constexpr size_t kMaxDirtyPerShard = 1024;
  struct Delta {
    uint64_t key = 0;    // hash_key() of the client
    uint32_t count = 0;  // admissions since the last collect
  };
  void enable_sync();
  bool syncing() const { return syncing_.load(std::memory_order_acquire); }
  // Any thread: the counts since the last collect, most active client first, at most
  // `max` of them (the others' counts are dropped), and resets them.
  std::vector<Delta> collect(size_t max);
  // Any thread: `n` admissions of the client made elsewhere. Its arrival time moves
  // n intervals later (the slot is created if absent), but never further than
  // charge_cap_ns() ahead of now_ns. Returns the intervals actually charged.
  uint64_t charge(uint64_t key, uint64_t n, uint64_t now_ns);
  // client_burst plus one second of client_rate: a client charged this far is refused
  // for at least a second, so charging more would only delay its recovery.
  uint64_t charge_cap_ns() const { return tolerance_ns_ + interval_ns_ + 1000000000ULL; }
  size_t slots() const { return slots_; }
  size_t memory_bytes() const { return slots_ * (kBytesPerSlot + (syncing() ? sizeof(uint32_t) : 0)); }
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
    std::vector<std::pair<uint32_t, uint64_t>> dirty;  // slot index, key when listed
  };
  // The slot of `h` in its set (shard lock held), claimed for it when absent.
  Slot* find_or_claim(Slot* ways, uint64_t h, uint64_t now_ns);
  void count_admission(Shard& shard, size_t index, uint64_t h);
  size_t slots_;
  size_t sets_;
  std::unique_ptr<Slot[]> table_;
  std::unique_ptr<Shard[]> shards_;
  std::unique_ptr<uint32_t[]> pending_;  // per slot, admissions since collect(); syncing only
  std::atomic<bool> syncing_{false};
  double rate_;
  double burst_;
  uint64_t interval_ns_;
  uint64_t tolerance_ns_;
};

uint64_t hash_key(std::string_view key);

}  // namespace fg::admission
