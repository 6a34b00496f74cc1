// A route's response cache for the whole instance (SPEC §7): every worker's requests
// find, store and coalesce in the same one, so a page is fetched once per instance and a
// stale answer is there whichever worker the client lands on. Thread-safe.
//
// The keys are spread over kShards shards by hash, each an LRU (ResponseCache) and a
// table of fetches in flight (BasicPendingMap) under its own mutex: requests for
// different keys rarely meet on a lock, and no lock is held while an answer is written,
// since an entry is immutable and handed out by shared_ptr (a hit copies a pointer under
// the lock, never a body). The byte bound is the instance's: one atomic total across
// the shards, and a store over it evicts the least recently used entry of whichever
// shard holds the oldest one (last use to the millisecond), so eviction follows LRU
// across shards too. No libuv: waiters on other threads are woken through their Inbox.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cache/response_cache.h"

namespace fg::cache {

// Where a worker collects the ids of its waiters that another worker's fetch has ended.
// post() may be called from any thread; it calls `signal` (which wakes the owner's loop,
// a uv_async_send say) while holding the inbox's lock, so close() is a clean cut: once it
// returns, no signal runs any more. take() and close() belong to the owner's thread.
class Inbox {
 public:
  explicit Inbox(std::function<void()> signal) : signal_(std::move(signal)) {}
  void post(uint64_t waiter);
  std::vector<uint64_t> take();
  void close();

 private:
  std::mutex mu_;
  std::vector<uint64_t> posted_;
  std::function<void()> signal_;  // empty once closed
};

// A request waiting for another's fetch: the inbox of its worker and its id there.
struct Waiter {
  std::shared_ptr<Inbox> inbox;
  uint64_t id = 0;
  bool operator==(const Waiter& o) const { return inbox == o.inbox && id == o.id; }
};

class SharedCache {
 public:
  static constexpr size_t kShards = 16;
  using Entry = std::shared_ptr<const CachedResponse>;
  using Join = BasicPendingMap<Waiter>::Join;

  SharedCache(uint64_t max_bytes, uint64_t max_entry_bytes,
              size_t max_waiters_per_key = BasicPendingMap<Waiter>::kDefaultMaxWaiters);
  SharedCache(const SharedCache&) = delete;
  SharedCache& operator=(const SharedCache&) = delete;

  // The entry for `key` (fresh or stale: the caller compares the timestamps) or null; a
  // hit is the shard's most recently used entry, last used at `now_ms`.
  Entry get(const std::string& key, uint64_t now_ms);
  // Stores `r` (replacing the key's entry), then evicts down to max_bytes. False, and
  // the key's older entry dropped, when the entry alone is over either limit.
  bool put(const std::string& key, CachedResponse r, uint64_t now_ms);
  bool erase(const std::string& key);
  void clear();
  // A reload changed the limits: applied at once, like ResponseCache::set_limits.
  void set_limits(uint64_t max_bytes, uint64_t max_entry_bytes);

  // A miss: lead the fetch, wait for the leader (returned by its finish()), or, with
  // max_waiters_per_key already waiting, fetch alone.
  Join join(const std::string& key, const Waiter& waiter);
  // The leader's fetch ended (stored or not): the key's waiters, in join order.
  std::vector<Waiter> finish(const std::string& key);
  // A waiter that gives up; whether it was waiting.
  bool leave(const std::string& key, const Waiter& waiter);

  uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  uint64_t max_bytes() const { return max_bytes_.load(std::memory_order_relaxed); }
  uint64_t max_entry_bytes() const { return max_entry_bytes_.load(std::memory_order_relaxed); }
  // Summed over the shards (each under its lock): for tests and reports, not per request.
  size_t entries() const;
  uint64_t evictions() const;
  size_t in_flight() const;

 private:
  struct Shard {
    explicit Shard(uint64_t max_bytes, uint64_t max_entry_bytes, size_t max_waiters)
        : lru(max_bytes, max_entry_bytes), pending(max_waiters) {}
    mutable std::mutex mu;
    ResponseCache lru;
    BasicPendingMap<Waiter> pending;
  };

  Shard& shard_of(const std::string& key);
  // Adds up `count(shard)` over the shards, each read under its lock.
  template <typename F>
  uint64_t sum_over(F count) const {
    uint64_t n = 0;
    for (const auto& s : shards_) {
      std::lock_guard<std::mutex> lock(s->mu);
      n += count(*s);
    }
    return n;
  }
  // Evicts the globally least recently used entries while bytes() > max_bytes(), sparing
  // the entry a put() just stored in `stored_in` (null: none).
  void evict_over_limit(const Shard* stored_in);

  std::atomic<uint64_t> max_bytes_;
  std::atomic<uint64_t> max_entry_bytes_;
  std::atomic<uint64_t> bytes_{0};
  std::mutex limits_mu_;  // set_limits() against itself (reloads are rare)
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace fg::cache
