// The cache stage of a worker: the answers a hit (or, when the upstream fails, a stale
// entry within stale_if_error) gets, what may be stored, and the coalescing of
// concurrent misses (one request fetches, the others wait for it) in a route's
// SharedCache, which all the instance's workers share. The stage holds this worker's
// waiting requests and its Inbox: a fetch that ends on another worker posts the ids of
// this worker's waiters there, and deliver() (run on this loop when `signal` fires)
// wakes them. No socket and no loop: the caller passes the time and the wake function
// of a waiting request. Loop thread only (one Stage per worker).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "cache/shared_cache.h"

namespace fg::cache {

// A route's cache settings, as the stage needs them to store an answer.
struct RouteSettings {
  uint64_t ttl_ms = 0;
  uint64_t stale_if_error_ms = 0;
};

// A usable entry: fresh, or stale within stale_if_error.
struct Hit {
  SharedCache::Entry entry;  // shared: stays valid whatever happens to the cache
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
    kWait,   // another request (on any worker) fetches this key: call wait() with the id, and stop
    kFetch,  // too many already wait: fetch without coalescing
  };
  // `signal` wakes this worker's loop from any thread, which then calls deliver(). Empty:
  // waiters are woken only by fetches that end on this thread.
  explicit Stage(std::function<void()> signal = {});
  ~Stage();
  Stage(const Stage&) = delete;
  Stage& operator=(const Stage&) = delete;

  // A usable entry for `key`, fresh only unless `stale_ok`.
  bool find(SharedCache& cache, const std::string& key, uint64_t now_ms, bool stale_ok, Hit* hit);
  // A miss: lead the fetch, wait for it (`*waiter` names the wait), or fetch alone.
  Join join(SharedCache& cache, const std::string& key, uint64_t* waiter);
  // `wake` runs on this loop when the fetch of the key the waiter joined ends (well or not).
  void wait(uint64_t waiter, std::function<void()> wake);
  // Stores the leader's answer when the upstream allows it (Cache-Control, Set-Cookie,
  // Authorization, status); false when it was not stored.
  bool store(SharedCache& cache, const RouteSettings& route, const std::string& key, int status,
             std::string_view reason, std::string_view header_lines, std::string_view body, const Recorded& rec,
             bool authorization, uint64_t now_ms);
  // The leading fetch of `key` ended: wakes this worker's waiters now and posts the
  // others' to their workers.
  void finish(SharedCache& cache, const std::string& key);
  // Wakes the waiters that other workers' fetches have posted to this one.
  void deliver();
  // The worker stops: later posts are dropped (the loop that would run them is ending).
  void close();
  // Requests of this worker waiting for a fetch.
  size_t waiting() const { return waiters_.size(); }

 private:
  void wake(uint64_t waiter);

  std::shared_ptr<Inbox> inbox_;
  std::unordered_map<uint64_t, std::function<void()>> waiters_;
  uint64_t next_waiter_ = 1;
};

}  // namespace fg::cache
