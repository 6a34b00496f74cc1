// The cache stage of a worker: per route, an LRU of stored answers and the coalescing
// of concurrent misses (one request fetches, the others wait for it), the answers a
// hit (or, when the upstream fails, a stale entry within stale_if_error) gets, and
// what may be stored. No socket and no loop: the caller passes the time and the wake
// function of a waiting request. Loop thread only (one Stage per worker).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cache/response_cache.h"

namespace fg::cache {

// A route's cache settings, as the stage needs them.
struct RouteSettings {
  std::string_view name;  // the route (one cache per route name, kept across reloads)
  uint64_t max_bytes = 0;
  uint64_t max_entry_bytes = 0;
  uint64_t ttl_ms = 0;
  uint64_t stale_if_error_ms = 0;
};

// A usable entry: fresh, or stale within stale_if_error.
struct Hit {
  const CachedResponse* entry = nullptr;  // valid until the route's cache changes
  bool fresh = false;
  // "Age: N\r\nX-Cache: HIT|STALE\r\n"
  std::string header_lines;
};

// The response headers of a fetch that the store decision needs.
struct Recorded {
  std::string cache_control;  // every Cache-Control value, joined with ","
  bool set_cookie = false;
  void note(std::string_view name, std::string_view value);
};

class Stage {
 public:
  enum class Join {
    kLead,   // nothing in flight: fetch, then store() (if storable) and finish()
    kWait,   // another request fetches this key: call wait() with the id, and stop
    kFetch,  // too many already wait: fetch without coalescing
  };
  // A usable entry for `key`, fresh only unless `stale_ok`.
  bool find(const RouteSettings& route, const std::string& key, uint64_t now_ms, bool stale_ok, Hit* hit);
  // A miss: lead the fetch, wait for it (`*waiter` names the wait), or fetch alone.
  Join join(const RouteSettings& route, const std::string& key, uint64_t* waiter);
  // `wake` runs when the fetch of the key the waiter joined ends (well or not).
  void wait(const RouteSettings& route, uint64_t waiter, std::function<void()> wake);
  // Stores the leader's answer when the upstream allows it (Cache-Control, Set-Cookie,
  // Authorization, status); false when it was not stored.
  bool store(const RouteSettings& route, const std::string& key, int status, std::string_view reason,
             std::string_view header_lines, std::string_view body, const Recorded& rec, bool authorization,
             uint64_t now_ms);
  // The leading fetch of `key` ended: wakes its waiters.
  void finish(const RouteSettings& route, const std::string& key);
  // The route's cache (created on first use; limits follow the settings).
  ResponseCache& cache(const RouteSettings& route);

 private:
  struct RouteCache {
    std::unique_ptr<ResponseCache> cache;
    PendingMap pending;
    std::unordered_map<uint64_t, std::function<void()>> waiters;
    uint64_t next_waiter = 1;
  };
  RouteCache& route_cache(const RouteSettings& route);
  // Looked up by the route's name as a string_view: no key is built per request.
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::unique_ptr<RouteCache>, NameHash, std::equal_to<>> routes_;
};

}  // namespace fg::cache
