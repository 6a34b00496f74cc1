// Per-client limits counted across instances (a route with scope = "cluster" and
// client_rate): the instance's own ClientLimiter keeps judging every request locally;
// every sync_ms this object reports the admissions the instance made per client since
// the last sync into Redis (one script per route per sync) and charges the admissions
// the other instances made for those clients into the local limiter. No request waits
// for Redis. When Redis does not answer, the limit is per instance until it does again.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "admission/client_limiter.h"
#include "loop/handles.h"
#include "loop/lifetime.h"
#include "redis/redis_client.h"

namespace fg::cluster {

struct ClientSyncOptions {
  std::string prefix = "fg:";  // the state is <prefix>cl:{<route>} and <prefix>cl:{<route>}:seen
  std::string route;
  uint64_t sync_ms = 100;
  // Clients reported per sync, the most active first (the counts of the others since
  // the last sync are dropped), and clients per script call in all (reported plus
  // followed).
  size_t max_reported = 512;
  size_t max_clients = 1024;
  // A client this instance reported is followed (the others' admissions for it are
  // fetched and charged) for follow_ms after its last report here.
  uint64_t follow_ms = 2000;
  // A client no instance reported nor followed for forget_ms is deleted from Redis.
  // Must exceed follow_ms: a counter an instance follows is never deleted under it.
  uint64_t forget_ms = 10000;
};

struct ClientSyncStats {
  uint64_t syncs = 0;          // script calls answered by Redis
  uint64_t failures = 0;       // script calls that failed (timeout, Redis down, error)
  uint64_t reported = 0;       // local admissions reported
  uint64_t charged = 0;        // admissions of other instances charged here
  uint64_t followed = 0;       // clients followed now
};

// Owner loop only (the loop of `redis`), which must outlive it. The limiter is shared
// with the workers; its collect() and charge() are thread-safe.
class ClientSync {
 public:
  ClientSync(uv_loop_t* loop, redis::Client* redis, std::shared_ptr<admission::ClientLimiter> limiter,
             ClientSyncOptions options);
  ~ClientSync();  // stop() if still running
  ClientSync(const ClientSync&) = delete;
  ClientSync& operator=(const ClientSync&) = delete;

  void start();
  void stop();
  // A reload replaced the route's limiter (a new table size): follow that one.
  void set_limiter(std::shared_ptr<admission::ClientLimiter> limiter);
  const std::shared_ptr<admission::ClientLimiter>& limiter() const { return limiter_; }
  // One sync now (the timer calls it); nothing when one is still in flight.
  void sync();

  ClientSyncStats stats() const;
  const std::string& key() const { return key_; }

 private:
  struct Follow {
    int64_t total = 0;       // the cluster-wide count last seen
    uint64_t reported_ms = 0;  // when this instance last reported the client
    uint64_t round = 0;      // the sync that listed it last
    bool known = false;      // `total` was seen
  };
  struct Sent {
    uint64_t key;
    int64_t mine;  // 0 for a followed client
  };
  void on_reply(redis::Failure failure, const redis::Reply& reply, const std::vector<Sent>& sent);

  redis::Client* redis_;
  std::shared_ptr<admission::ClientLimiter> limiter_;
  ClientSyncOptions options_;
  std::string key_;
  std::string seen_key_;
  std::unique_ptr<loop::Timer> timer_;
  bool running_ = false;  // between start() and stop()
  loop::Anchor<ClientSync> anchor_{this};  // Redis replies reach this object through it
  bool in_flight_ = false;
  uint64_t round_ = 0;
  std::unordered_map<uint64_t, Follow> follow_;

  std::atomic<uint64_t> syncs_{0};
  std::atomic<uint64_t> failures_{0};
  std::atomic<uint64_t> reported_{0};
  std::atomic<uint64_t> charged_{0};
  std::atomic<uint64_t> followed_{0};
};

}  // namespace fg::cluster
