// The response cache of a route (SPEC §7): Cache-Control parsing, the storability rules,
// a byte-bounded LRU of complete responses, and the table that coalesces concurrent misses.
// No libuv: callers pass the time in milliseconds (any monotonic origin, used consistently).
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace fg::cache {

// A complete upstream answer as it is replayed to clients. The body is already de-chunked;
// the serializer adds Content-Length (and Age) when it sends the entry.
struct CachedResponse {
  int status = 0;
  std::string reason;
  std::string header_lines;  // "Name: value\r\n" end-to-end headers, without Content-Length
  std::string body;
  uint64_t stored_ms = 0;       // when the upstream answer was received
  uint64_t fresh_until_ms = 0;  // served without asking the upstream while now < this
  uint64_t stale_until_ms = 0;  // served while the upstream fails while now < this
};

// The response directives the gateway acts on. A shared cache reads s-maxage first:
// when both are present, max_age holds the s-maxage value.
struct Directives {
  bool no_store = false;
  bool private_ = false;
  bool no_cache = false;
  int64_t max_age = -1;  // seconds; -1: absent (or only invalid values were given)
};

// Parses a Cache-Control field value; several field lines are joined with "," first.
// Directive names are case-insensitive; values may be tokens or quoted strings (quoted
// commas do not split). Unknown directives and malformed values are ignored, never an
// error: "max-age=abc" or "max-age=-1" leaves max_age absent. The first valid max-age
// (and the first valid s-maxage) counts; values above 2^31 are clamped to 2^31 seconds
// (RFC 9111 §1.2.2). `private="field"` and `no-cache="field"` are treated as their
// unqualified forms: the gateway does not strip single fields, so it does not store.
Directives parse_cache_control(std::string_view value);

// Whether a response may enter a shared cache: status 200, 203, 204, 301, 404 or 410;
// not no-store, private or no-cache (the gateway never revalidates, so a no-cache answer
// could never be reused); not when the response sets a cookie (Set-Cookie is per user);
// not when the request carried Authorization (RFC 9111 §3.5: a shared cache stores such
// an answer only with public/s-maxage/must-revalidate, and the gateway keeps it simple).
bool storable(int status, const Directives& d, bool has_set_cookie, bool has_authorization_request);

// Freshness lifetime in milliseconds: the (s-)max-age when given, else the route's ttl.
uint64_t freshness_ms(const Directives& d, uint64_t route_ttl_ms);

// Sets stored_ms, fresh_until_ms = now + freshness_ms(), stale_until_ms = fresh_until_ms
// + stale_if_error_ms. Sums saturate at UINT64_MAX.
void set_freshness(CachedResponse& r, const Directives& d, uint64_t now_ms, uint64_t route_ttl_ms,
                   uint64_t stale_if_error_ms);

// Fresh: may answer a request without contacting the upstream.
inline bool is_fresh(const CachedResponse& r, uint64_t now_ms) { return now_ms < r.fresh_until_ms; }
// Usable stale: may answer while the upstream is unavailable (on_unavailable = "cache").
inline bool is_usable_stale(const CachedResponse& r, uint64_t now_ms) { return now_ms < r.stale_until_ms; }
// Whole seconds since the entry was stored, for the Age header.
inline uint64_t age_seconds(const CachedResponse& r, uint64_t now_ms) {
  return now_ms > r.stored_ms ? (now_ms - r.stored_ms) / 1000 : 0;
}

// "GET\n/path?query": the method and the full request target, unnormalised (two spellings of
// one URL are two entries, which costs memory but never serves the wrong answer).
std::string cache_key(std::string_view method, std::string_view target);
// The same, written over `*out` (whose capacity is reused from one request to the next).
void cache_key(std::string_view method, std::string_view target, std::string* out);

// A byte-bounded LRU of responses, single-threaded: one shard of a route's SharedCache
// (shared_cache.h), used under that shard's lock. Entries are immutable once stored and
// held by shared_ptr, so a reader keeps an entry it was handed after it is replaced or
// evicted. Memory accounting per entry is entry_bytes() below; the sum never exceeds
// max_bytes after put() or set_limits() returns.
class ResponseCache {
 public:
  // Covers the list node, the hash-table slot and the fixed fields of CachedResponse.
  static constexpr size_t kEntryOverhead = 128;

  ResponseCache(uint64_t max_bytes, uint64_t max_entry_bytes);

  ResponseCache(const ResponseCache&) = delete;
  ResponseCache& operator=(const ResponseCache&) = delete;

  // The bytes an entry is charged: key + reason + header_lines + body + kEntryOverhead.
  static size_t entry_bytes(std::string_view key, const CachedResponse& r);

  // The entry for `key`, fresh or stale (the caller compares the timestamps), or nullptr.
  // A hit becomes the most recently used entry. The pointer stays valid until the next
  // put(), erase(), clear() or set_limits() on this cache.
  const CachedResponse* get(const std::string& key);
  // The same, as a shared reference that outlives any later change of the cache, and
  // `now_ms` recorded as the entry's last use (see lru_stamp()).
  std::shared_ptr<const CachedResponse> share(const std::string& key, uint64_t now_ms);

  // Stores `r` under `key` as the most recently used entry (last used at `now_ms`),
  // replacing any entry of that key, then evicts least recently used entries until
  // bytes() <= max_bytes. Returns false, and stores nothing, when the entry alone is over
  // max_entry_bytes or max_bytes; an older entry of the same key is dropped in that case
  // too, since it no longer matches the upstream.
  bool put(const std::string& key, CachedResponse r, uint64_t now_ms = 0);

  // Removes the entry if present; returns whether it was.
  bool erase(const std::string& key);
  void clear();

  // For a reload: applies new limits at once, dropping entries now over max_entry_bytes and
  // then least recently used entries until bytes() <= max_bytes.
  void set_limits(uint64_t max_bytes, uint64_t max_entry_bytes);

  // When the least recently used entry was last used (UINT64_MAX when empty), and its
  // eviction (false when empty). A SharedCache evicts across its shards with these.
  uint64_t lru_stamp() const;
  bool evict_lru();

  size_t bytes() const { return bytes_; }
  size_t entries() const { return lru_.size(); }
  uint64_t max_bytes() const { return max_bytes_; }
  uint64_t max_entry_bytes() const { return max_entry_bytes_; }
  // Entries dropped to make room (not replacements, erase() or oversized refusals).
  uint64_t evictions() const { return evictions_; }

 private:
  struct Node {
    std::string key;
    std::shared_ptr<const CachedResponse> response;
    size_t bytes;
    uint64_t used_ms;
  };
  using List = std::list<Node>;  // front = most recently used

  void remove(List::iterator it);
  void evict_to(uint64_t limit);

  uint64_t max_bytes_;
  uint64_t max_entry_bytes_;
  size_t bytes_ = 0;
  uint64_t evictions_ = 0;
  List lru_;
  // Keys view the string inside their list node: list nodes never move, so one copy suffices.
  std::unordered_map<std::string_view, List::iterator> index_;
};

// Request coalescing: while one request (the leader) fetches a key from the upstream, later
// requests for the same key wait instead of fetching too, and are woken when it finishes.
// Single-threaded like ResponseCache (a SharedCache keeps one per shard, under its lock);
// waiters are opaque to it (a connection id, say, or a worker's inbox and an id).
template <typename W>
class BasicPendingMap {
 public:
  static constexpr size_t kDefaultMaxWaiters = 10000;

  enum class Join {
    kLeader,    // nothing in flight: the caller fetches and must call finish(key) afterwards
    kWaiter,    // a fetch is in flight: the caller waits to be returned by finish(key)
    kOverflow,  // a fetch is in flight but max_waiters already wait: the caller fetches on its
                // own, uncoalesced, and must not call finish(key) (the leader still owns it)
  };

  explicit BasicPendingMap(size_t max_waiters_per_key = kDefaultMaxWaiters) : max_waiters_(max_waiters_per_key) {}

  Join join(const std::string& key, W waiter) {
    auto [it, inserted] = pending_.try_emplace(key);
    if (inserted) return Join::kLeader;
    if (it->second.size() >= max_waiters_) return Join::kOverflow;
    it->second.push_back(std::move(waiter));
    return Join::kWaiter;
  }

  // Called by the leader when its fetch ends, successfully or not. Returns the waiters in
  // join order and forgets the key; the waiters then look the key up in the cache again (on
  // a failed fetch, one of them becomes the next leader). Empty if the key is not in flight.
  std::vector<W> finish(const std::string& key) {
    auto it = pending_.find(key);
    if (it == pending_.end()) return {};
    std::vector<W> waiters = std::move(it->second);
    pending_.erase(it);
    return waiters;
  }

  // A waiter that gives up (client gone, deadline) leaves; returns whether it was waiting.
  bool leave(const std::string& key, const W& waiter) {
    auto it = pending_.find(key);
    if (it == pending_.end()) return false;
    auto& waiters = it->second;
    for (auto w = waiters.begin(); w != waiters.end(); ++w) {
      if (*w == waiter) {
        // Order matters (waiters are woken in join order), so erase rather than swap-and-pop.
        waiters.erase(w);
        return true;
      }
    }
    return false;
  }

  bool in_flight(const std::string& key) const { return pending_.count(key) != 0; }
  // Waiters of `key`, not counting the leader.
  size_t waiting(const std::string& key) const {
    auto it = pending_.find(key);
    return it == pending_.end() ? 0 : it->second.size();
  }
  // Keys in flight.
  size_t keys() const { return pending_.size(); }
  size_t max_waiters() const { return max_waiters_; }

 private:
  size_t max_waiters_;
  std::unordered_map<std::string, std::vector<W>> pending_;
};

using PendingMap = BasicPendingMap<uint64_t>;

}  // namespace fg::cache
