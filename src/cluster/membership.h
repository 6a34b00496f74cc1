// Which instances of the gateway are alive: each one writes a heartbeat into one sorted
// set per key prefix (member = instance id, score = the Redis time at which it expires)
// and reads back how many members have not expired. Cluster budgets divide their rate by
// this count when Redis is unreachable.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "loop/handles.h"
#include "loop/lifetime.h"
#include "redis/redis_client.h"

namespace fg::cluster {

struct MembershipOptions {
  std::string prefix = "fg:";   // the key is <prefix>cluster:members
  std::string instance_id;      // unique per instance (e.g. host:pid:start time)
  uint64_t heartbeat_ms = 1000;  // one Lua call per heartbeat
  uint64_t ttl_ms = 3000;        // a member that stops beating expires after this
  uint32_t expected_instances = 1;  // the count until a heartbeat was answered once
};

// Owned by the instance (one per process), driven by the loop of `redis`, which must
// outlive it. An instance that dies without leaving stops counting for every other
// instance at their first heartbeat after its TTL ran out: within ttl_ms + heartbeat_ms.
class Membership {
 public:
  Membership(uv_loop_t* loop, redis::Client* redis, MembershipOptions options);
  ~Membership();  // stop(false) if still running
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  // Loop thread. start() beats at once, then every heartbeat_ms. stop(leave) ends the
  // heartbeat; with leave the member is removed at once (clean shutdown), without it
  // the member expires by TTL like a crashed instance. No callback touches the object
  // after stop(); it may be destroyed right after. `on_left` (optional) runs once the
  // removal was answered or failed (at once without leave): close the client after it,
  // or the removal may never leave the process.
  void start();
  void stop(bool leave, std::function<void()> on_left = nullptr);

  // Any thread. The live count of the last answered heartbeat (at least 1: this
  // instance), or expected_instances while none was ever answered. When Redis stops
  // answering the last count stays: that is the best knowledge of the share.
  uint32_t live_instances() const;
  bool seen() const { return seen_.load(std::memory_order_relaxed); }
  uint64_t heartbeats() const { return heartbeats_.load(std::memory_order_relaxed); }
  uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }
  const std::string& key() const { return key_; }

 private:
  void beat();

  redis::Client* redis_;
  MembershipOptions options_;
  std::string key_;
  std::unique_ptr<loop::Timer> timer_;
  bool running_ = false;  // between start() and stop()
  loop::Anchor<Membership> anchor_{this};  // Redis replies reach this object through it
  std::atomic<uint32_t> live_{0};
  std::atomic<bool> seen_{false};
  std::atomic<uint64_t> heartbeats_{0};
  std::atomic<uint64_t> failures_{0};
};

}  // namespace fg::cluster
