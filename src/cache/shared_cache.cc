// The instance's response cache of a route: shards, the instance-wide byte bound,
// coalescing across workers.
#include "cache/shared_cache.h"

#include <limits>

namespace fg::cache {

void Inbox::post(uint64_t waiter) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!signal_) return;  // the owner has stopped: nobody is left to wake
  posted_.push_back(waiter);
  // One signal per batch: the owner takes everything posted when it wakes.
  if (posted_.size() == 1) signal_();
}

std::vector<uint64_t> Inbox::take() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::move(posted_);
}

void Inbox::close() {
  std::lock_guard<std::mutex> lock(mu_);
  signal_ = nullptr;
  posted_.clear();
}

SharedCache::SharedCache(uint64_t max_bytes, uint64_t max_entry_bytes, size_t max_waiters_per_key)
    : max_bytes_(max_bytes), max_entry_bytes_(max_entry_bytes) {
  shards_.reserve(kShards);
  // Each shard may hold up to the whole bound; the atomic total keeps their sum under it.
  for (size_t i = 0; i < kShards; i++)
    shards_.push_back(std::make_unique<Shard>(max_bytes, max_entry_bytes, max_waiters_per_key));
}

SharedCache::Shard& SharedCache::shard_of(const std::string& key) {
  return *shards_[std::hash<std::string>{}(key) % kShards];
}

SharedCache::Entry SharedCache::get(const std::string& key, uint64_t now_ms) {
  Shard& s = shard_of(key);
  std::lock_guard<std::mutex> lock(s.mu);
  return s.lru.share(key, now_ms);
}

bool SharedCache::put(const std::string& key, CachedResponse r, uint64_t now_ms) {
  Shard& s = shard_of(key);
  bool stored;
  {
    // The body's bytes were made by the caller: only pointers move under the lock.
    std::lock_guard<std::mutex> lock(s.mu);
    size_t before = s.lru.bytes();
    stored = s.lru.put(key, std::move(r), now_ms);
    bytes_.fetch_add(s.lru.bytes() - before, std::memory_order_relaxed);  // modular: a drop works too
  }
  if (stored) evict_over_limit(&s);
  return stored;
}

bool SharedCache::erase(const std::string& key) {
  Shard& s = shard_of(key);
  std::lock_guard<std::mutex> lock(s.mu);
  size_t before = s.lru.bytes();
  bool erased = s.lru.erase(key);
  bytes_.fetch_sub(before - s.lru.bytes(), std::memory_order_relaxed);
  return erased;
}

void SharedCache::clear() {
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> lock(s->mu);
    bytes_.fetch_sub(s->lru.bytes(), std::memory_order_relaxed);
    s->lru.clear();
  }
}

void SharedCache::set_limits(uint64_t max_bytes, uint64_t max_entry_bytes) {
  std::lock_guard<std::mutex> limits(limits_mu_);
  max_bytes_.store(max_bytes, std::memory_order_relaxed);
  max_entry_bytes_.store(max_entry_bytes, std::memory_order_relaxed);
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> lock(s->mu);
    size_t before = s->lru.bytes();
    s->lru.set_limits(max_bytes, max_entry_bytes);
    bytes_.fetch_sub(before - s->lru.bytes(), std::memory_order_relaxed);
  }
  evict_over_limit(nullptr);
}

void SharedCache::evict_over_limit(const Shard* stored_in) {
  while (bytes() > max_bytes()) {
    // The shard whose least recently used entry was used longest ago. One lock at a
    // time, never two: the stamps may move meanwhile, which costs only precision.
    Shard* oldest = nullptr;
    uint64_t stamp = std::numeric_limits<uint64_t>::max();
    for (auto& s : shards_) {
      std::lock_guard<std::mutex> lock(s->mu);
      // The entry just stored fits on its own: a shard holding only it is passed over.
      if (s->lru.entries() == 0 || (s.get() == stored_in && s->lru.entries() == 1)) continue;
      uint64_t t = s->lru.lru_stamp();
      if (oldest == nullptr || t < stamp) {
        oldest = s.get();
        stamp = t;
      }
    }
    if (oldest == nullptr) return;  // nothing left to evict
    std::lock_guard<std::mutex> lock(oldest->mu);
    if (bytes() <= max_bytes()) return;  // another store evicted meanwhile
    size_t before = oldest->lru.bytes();
    oldest->lru.evict_lru();
    bytes_.fetch_sub(before - oldest->lru.bytes(), std::memory_order_relaxed);
  }
}

SharedCache::Join SharedCache::join(const std::string& key, const Waiter& waiter) {
  Shard& s = shard_of(key);
  std::lock_guard<std::mutex> lock(s.mu);
  return s.pending.join(key, waiter);
}

std::vector<Waiter> SharedCache::finish(const std::string& key) {
  Shard& s = shard_of(key);
  std::lock_guard<std::mutex> lock(s.mu);
  return s.pending.finish(key);
}

bool SharedCache::leave(const std::string& key, const Waiter& waiter) {
  Shard& s = shard_of(key);
  std::lock_guard<std::mutex> lock(s.mu);
  return s.pending.leave(key, waiter);
}

size_t SharedCache::entries() const {
  return sum_over([](const Shard& s) { return s.lru.entries(); });
}

uint64_t SharedCache::evictions() const {
  return sum_over([](const Shard& s) { return s.lru.evictions(); });
}

size_t SharedCache::in_flight() const {
  return sum_over([](const Shard& s) { return s.pending.keys(); });
}

}  // namespace fg::cache
