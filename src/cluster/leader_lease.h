// One holder per name in the whole cluster (e.g. the dispatcher of a queued route): a
// Redis key set with NX and a TTL, carrying a fencing token from an INCR counter,
// extended by its holder every third of the TTL. Writes made on behalf of the holder
// carry the token and are refused by Redis once a newer token exists (fenced scripts).
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "loop/handles.h"
#include "loop/lifetime.h"
#include "redis/redis_client.h"

namespace fg::cluster {

struct LeaderLeaseOptions {
  std::string prefix = "fg:";
  std::string name;       // what is led, e.g. "queue:orders"
  // The hash tag of the keys; empty: the name. The dispatcher's lease of a queued route
  // is tagged with the route, so that its fence key shares the queue's hash slot
  // (queue/queue_store.h Keys) and a fenced queue script touches one slot.
  std::string tag;
  std::string holder_id;  // this instance's id (the Membership id)
  uint64_t ttl_ms = 3000;
  // Owner loop: leadership gained (true, token) or lost (false, the old token).
  std::function<void(bool leader, uint64_t token)> on_change;
};

// Keys of one name; every key carries the hash tag {name}, or {tag} when one is given
// ("<prefix>leader:{<tag>}:<name>"), so that Redis Cluster keeps them (and a fenced
// write's own keys, when they use the same tag) in one slot.
struct LeaderKeys {
  LeaderKeys(const std::string& prefix, const std::string& name, const std::string& tag = "");
  std::string lock;   // "<holder>:<token>", with the TTL
  std::string epoch;  // INCR counter of tokens
  std::string fence;  // the highest token that wrote or took the lead
};

// Owned by the instance (one per led name), driven by the loop of `redis`, which must
// outlive it.
//
// Timing: the holder renews every ttl/3; a candidate tries to acquire every ttl/3. When
// the holder dies, its key expires at most ttl after its last renewal and a candidate
// takes over at its next attempt: within ttl + ttl/3. A holder that cannot renew (Redis
// slow or partitioned) stops calling itself leader at `sent + ttl - ttl/10` of its last
// successful renewal, before its key can expire in Redis, so two holders never both
// believe they lead (their clocks only need to run at the same rate). Writes are fenced
// anyway: the new holder's acquisition raises the fence, so a late write of the old one
// is refused.
class LeaderLease {
 public:
  LeaderLease(uv_loop_t* loop, redis::Client* redis, LeaderLeaseOptions options);
  ~LeaderLease();  // stop(false) if running
  LeaderLease(const LeaderLease&) = delete;
  LeaderLease& operator=(const LeaderLease&) = delete;

  // Owner loop. start() tries at once, then every ttl/3. stop(release) ends renewing;
  // with release a held key is deleted (compare-and-delete) so another instance takes
  // over at its next attempt. on_change(false) runs from stop() when leading; nothing
  // runs after stop(); the object may be destroyed right after.
  void start();
  void stop(bool release);
  // Owner loop: an attempt now instead of at the next ttl/3 tick (e.g. the connection
  // just came up, so the first attempt, made before it was up, failed).
  void try_now();

  // Any thread. The fencing token while this instance leads (and its local deadline has
  // not passed), else 0.
  uint64_t token() const;
  bool is_leader() const { return token() != 0; }
  const LeaderKeys& keys() const { return keys_; }
  uint64_t acquisitions() const { return acquisitions_.load(std::memory_order_relaxed); }

 private:
  void attempt();
  void lose();

  redis::Client* redis_;
  LeaderLeaseOptions options_;
  LeaderKeys keys_;
  std::unique_ptr<loop::Timer> timer_;
  bool running_ = false;  // between start() and stop()
  loop::Anchor<LeaderLease> anchor_{this};  // Redis replies reach this object through it
  bool in_flight_ = false;
  std::atomic<uint64_t> token_{0};
  std::atomic<uint64_t> valid_until_ms_{0};  // monotonic ms
  std::atomic<uint64_t> acquisitions_{0};
};

// Fenced writes. A fenced script starts with kFenceLua: KEYS[1] is the fence key
// (LeaderKeys::fence) and ARGV[1] the writer's token; the script's own keys and
// arguments follow from KEYS[2] and ARGV[2]. A token lower than the fence makes the
// script return the error "FENCED" before it writes anything; a higher one raises it.
extern const std::string_view kFenceLua;
// kFenceLua followed by `body`, ready for redis::Client::eval.
redis::Script fenced_script(std::string_view body);
// True for the reply of a fenced script that refused a stale token.
bool is_fenced(const redis::Reply& reply);
// An example, used by tests: SET KEYS[2] ARGV[2] under the fence; returns "OK".
redis::Script fenced_set_script();

}  // namespace fg::cluster
