// The per-client table: sets of kWays slots; a set belongs to one shard mutex.
#include "admission/client_limiter.h"

#include <algorithm>
#include <cmath>

namespace fg::admission {

uint64_t hash_key(std::string_view key) {
  // FNV-1a then a final avalanche (splitmix64) so that set selection uses good bits.
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h == 0 ? 1 : h;
}

ClientLimiter::ClientLimiter(double rate, double burst, size_t slots) {
  size_t unit = kWays * kShards;
  slots_ = std::max(unit, (slots + unit - 1) / unit * unit);
  sets_ = slots_ / kWays;
  table_.reset(new Slot[slots_]);
  shards_.reset(new Shard[kShards]);
  set_rate(rate, burst);
}

void ClientLimiter::set_rate(double rate, double burst) {
  // Called on reload from the main thread while workers may judge: take every shard
  // so no decision sees half-updated parameters.
  for (size_t i = 0; i < kShards; i++) shards_[i].mu.lock();
  rate_ = rate;
  burst_ = burst;
  double ns = 1e9 / rate;
  interval_ns_ = ns < 1 ? 1 : static_cast<uint64_t>(std::llround(ns));
  // client_burst is the number of requests a client may send at once (the first one
  // included), unlike a route's burst which counts extra requests on top of one.
  double extra = std::max(0.0, burst - 1);
  tolerance_ns_ = static_cast<uint64_t>(std::llround(extra * static_cast<double>(interval_ns_)));
  for (size_t i = kShards; i-- > 0;) shards_[i].mu.unlock();
}

ClientLimiter::Slot* ClientLimiter::find_or_claim(Slot* ways, uint64_t h, uint64_t now_ns) {
  for (size_t i = 0; i < kWays; i++) {
    if (ways[i].key == h) return &ways[i];
  }
  // A free slot, else the one with the oldest arrival time: its client has the most
  // budget left, so forgetting it costs the least accuracy.
  Slot* slot = &ways[0];
  for (size_t i = 0; i < kWays; i++) {
    if (ways[i].key == 0 || ways[i].tat <= now_ns) {
      slot = &ways[i];
      break;
    }
    if (ways[i].tat < slot->tat) slot = &ways[i];
  }
  slot->key = h;
  slot->tat = now_ns;
  // The previous client's uncollected count goes with it; its entry in the dirty list
  // no longer matches the slot's key and is skipped by collect().
  if (pending_) pending_[static_cast<size_t>(slot - table_.get())] = 0;
  return slot;
}

void ClientLimiter::count_admission(Shard& shard, size_t index, uint64_t h) {
  if (!pending_) return;
  uint32_t& n = pending_[index];
  if (n == 0) {
    if (shard.dirty.size() >= kMaxDirtyPerShard) return;
    shard.dirty.emplace_back(static_cast<uint32_t>(index), h);
  }
  if (n != UINT32_MAX) n++;
}

Decision ClientLimiter::try_acquire(std::string_view key, uint64_t now_ns) {
  uint64_t h = hash_key(key);
  size_t set = static_cast<size_t>(h % sets_);
  Shard& shard = shards_[set % kShards];
  std::lock_guard<std::mutex> lock(shard.mu);
  Slot* slot = find_or_claim(&table_[set * kWays], h, now_ns);
  uint64_t base = std::max(slot->tat, now_ns);
  Decision d;
  if (base - now_ns > tolerance_ns_) {
    d.retry_after_ns = base - now_ns - tolerance_ns_;
    d.reset_ns = base - now_ns;
    return d;
  }
  slot->tat = base + interval_ns_;
  count_admission(shard, static_cast<size_t>(slot - table_.get()), h);
  d.admitted = true;
  uint64_t ahead = slot->tat - now_ns;
  uint64_t capacity = tolerance_ns_ + interval_ns_;
  d.remaining = ahead >= capacity ? 0 : (capacity - ahead) / interval_ns_;
  d.reset_ns = ahead;
  return d;
}

void ClientLimiter::enable_sync() {
  if (syncing()) return;
  // Workers read pending_ under their shard's lock: take every shard to publish it.
  for (size_t i = 0; i < kShards; i++) shards_[i].mu.lock();
  if (!pending_) {
    pending_.reset(new uint32_t[slots_]());
    for (size_t i = 0; i < kShards; i++) shards_[i].dirty.reserve(64);
  }
  syncing_.store(true, std::memory_order_release);
  for (size_t i = kShards; i-- > 0;) shards_[i].mu.unlock();
}

std::vector<ClientLimiter::Delta> ClientLimiter::collect(size_t max) {
  std::vector<Delta> out;
  if (!syncing()) return out;
  for (size_t i = 0; i < kShards; i++) {
    std::lock_guard<std::mutex> lock(shards_[i].mu);
    for (const auto& [index, key] : shards_[i].dirty) {
      uint32_t& n = pending_[index];
      if (table_[index].key != key || n == 0) continue;
      out.push_back(Delta{key, n});
      n = 0;
    }
    shards_[i].dirty.clear();
  }
  auto busier = [](const Delta& a, const Delta& b) { return a.count > b.count; };
  if (out.size() > max) {
    std::nth_element(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(max), out.end(), busier);
    out.resize(max);
  }
  std::sort(out.begin(), out.end(), busier);
  return out;
}

uint64_t ClientLimiter::charge(uint64_t key, uint64_t n, uint64_t now_ns) {
  if (n == 0 || key == 0) return 0;
  size_t set = static_cast<size_t>(key % sets_);
  Shard& shard = shards_[set % kShards];
  std::lock_guard<std::mutex> lock(shard.mu);
  Slot* slot = find_or_claim(&table_[set * kWays], key, now_ns);
  uint64_t base = std::max(slot->tat, now_ns);
  uint64_t limit = now_ns + charge_cap_ns();
  if (base >= limit) return 0;
  uint64_t room = (limit - base) / interval_ns_;
  uint64_t charged = std::min(n, room);
  slot->tat = base + charged * interval_ns_;
  return charged;
}

}  // namespace fg::admission
