// A route budget shared by every instance of the cluster (`scope = "cluster"`): one
// GCRA state per route in Redis, from which each instance leases batches of tokens, so
// admitting a request is a local atomic take and Redis sees one call per lease, not per
// request. When Redis does not answer, the instance admits its share, rate / live
// instances, from a local budget until a lease succeeds again.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "admission/budget.h"
#include "admission/shared_budget.h"
#include "cluster/membership.h"
#include "loop/handles.h"
#include "loop/lifetime.h"
#include "redis/redis_client.h"

namespace fg::cluster {

struct ClusterBudgetOptions {
  std::string prefix = "fg:";  // the state is the hash <prefix>budget:{<route>}
  std::string route;
  double rate = 1;   // requests per second, for the whole cluster
  double burst = 0;  // for the whole cluster
  // A lease tops the instance up to about `horizon_ms` of its own recent demand
  // (at least 1 token, at most max_lease); a new lease is asked for when less than half
  // of that is left.
  uint64_t horizon_ms = 150;
  uint32_t max_lease = 0;  // 0: the route's rate over horizon_ms (at least 1)
  // Tokens not taken within lease_ttl_ms of their lease die (they were already charged
  // to the shared bucket): an idle instance holds nothing for long.
  uint64_t lease_ttl_ms = 500;
  // A request that finds no token may still be admitted, up to max_debt at a time,
  // and is charged to the shared bucket with the next lease: a cold instance does not
  // refuse its first requests while its first lease is on the way.
  uint32_t max_debt = 2;
  uint64_t tick_ms = 20;    // demand sampling, lease expiry, retries
  uint64_t min_retry_ms = 20;  // after a short lease, wait at least this before the next
  uint64_t probe_ms = 250;  // in fallback, try a lease this often
};

// Counters for metrics; any thread, each value read relaxed (a snapshot may mix values
// from a few microseconds apart).
struct ClusterBudgetStats {
  uint64_t tokens_leased = 0;   // granted by Redis, total
  uint64_t leases_taken = 0;    // lease calls answered by Redis, total
  uint64_t lease_failures = 0;  // lease calls that failed (timeout, down, error reply)
  int64_t lease_tokens_held = 0;  // tokens in the current lease now
  uint64_t tokens_expired = 0;  // leased tokens that died unused
  uint64_t fallbacks = 0;       // times the instance switched to its local share
  uint64_t admitted_on_debt = 0;  // admitted before their token was leased
  bool in_fallback = false;
};

// Owned by the instance (one per cluster-scope route), driven by the loop of `redis`;
// `redis` and `membership` must outlive it. try_take() may be called from any thread
// (every worker of the instance) until stop() starts; everything else on the owner loop.
class ClusterBudget : public admission::SharedBudget {
 public:
  ClusterBudget(uv_loop_t* loop, redis::Client* redis, const Membership* membership,
                ClusterBudgetOptions options);
  ~ClusterBudget() override;  // stop() if still running
  ClusterBudget(const ClusterBudget&) = delete;
  ClusterBudget& operator=(const ClusterBudget&) = delete;

  // Owner loop. start() begins sampling demand; the first lease is asked for by the
  // first request. stop() drops the lease (its tokens die) and the object may be
  // destroyed right after; callers must have stopped calling try_take().
  void start();
  void stop();

  // Any thread, never blocks, no Redis call: true when the request is admitted. One
  // compare-and-swap on the lease's counter when admitted from it; a counter is written
  // besides only on credit or refusal, and the loop is woken (uv_async_send, once until
  // it runs) only when the lease falls below its low-water mark.
  // `now_ns` is the monotonic clock (uv_hrtime), used by the local fallback budget.
  bool try_take(uint64_t now_ns) override;
  // Any thread: the tokens of the current lease (or of the local share in fallback).
  uint64_t available() const override;
  // Any thread: a refused request may retry when its instance's share of the rate has
  // a token again, live instances / rate seconds, and not before one second.
  uint64_t retry_after_ns() const override;

  // Owner loop: a reload changed the route's rate or burst. Applies to the next lease
  // and to the fallback share at once.
  void set_rate(double rate, double burst);

  ClusterBudgetStats stats() const;
  double rate() const { return rate_.load(std::memory_order_relaxed); }
  double burst() const { return burst_.load(std::memory_order_relaxed); }
  // The most tokens one instance holds at once, plus its debt and the relaxed-atomic
  // slack: the per-instance term of the overshoot bound (cluster_budget.cc).
  uint64_t per_instance_slack() const;
  bool in_fallback() const { return fallback_.load(std::memory_order_relaxed); }
  const std::string& key() const { return key_; }

 private:
  void tick();
  void maybe_lease();
  void on_lease(redis::Failure failure, const redis::Reply& reply, int64_t debt_sent);
  void enter_fallback();
  int64_t target() const;
  void publish_rate();
  void want_refill();
  bool take_local(uint64_t now_ns);
  uint64_t attempts() const;

  redis::Client* redis_;
  const Membership* membership_;
  ClusterBudgetOptions options_;
  std::string key_;
  std::unique_ptr<loop::Timer> timer_;
  std::unique_ptr<loop::Timer> retry_;  // the next lease after a short grant, on time
  std::unique_ptr<loop::Wakeup> wakeup_;
  bool running_ = false;  // between start() and stop()
  loop::Anchor<ClusterBudget> anchor_{this};  // Redis replies reach this object through it

  // Hot path, shared by the workers.
  std::atomic<int64_t> tokens_{0};     // left in the current lease
  std::atomic<int64_t> debt_{0};       // admitted on credit, not yet charged
  std::atomic<int64_t> low_water_{1};  // refill below this
  std::atomic<uint64_t> refused_{0};   // written only when a request is refused
  std::atomic<bool> refill_wanted_{false};
  std::atomic<bool> fallback_{false};
  std::atomic<bool> credit_{true};     // admitting on credit allowed (the last lease granted)
  admission::Budget local_;            // the fallback share
  std::atomic<double> rate_{0};        // options_.rate, for other threads
  std::atomic<double> burst_{0};
  std::atomic<uint32_t> max_lease_seen_{1};  // max_lease_, for other threads

  // Owner loop only.
  uint32_t max_lease_ = 1;  // options_.max_lease, or derived from the rate
  bool lease_in_flight_ = false;
  uint64_t lease_expires_ms_ = 0;
  uint64_t next_lease_ms_ = 0;  // no lease before this (short grant, or fallback probe)
  uint64_t last_tick_ms_ = 0;
  uint64_t last_attempts_ = 0;
  static constexpr size_t kDemandTicks = 5;
  uint64_t window_[kDemandTicks] = {};  // attempts per tick
  size_t window_pos_ = 0;
  uint64_t window_sum_ = 0;
  uint64_t window_span_ms_ = 0;
  double demand_per_s_ = 0;  // over the window
  uint32_t fallback_share_of_ = 0;  // live count the fallback budget was sized for

  // Counters (written by the owner loop; admitted_on_debt_ by the workers, on that path
  // only).
  std::atomic<uint64_t> tokens_leased_{0};
  std::atomic<uint64_t> leases_taken_{0};
  std::atomic<uint64_t> lease_failures_{0};
  std::atomic<uint64_t> tokens_expired_{0};
  std::atomic<uint64_t> fallbacks_{0};
  std::atomic<uint64_t> admitted_on_debt_{0};
};

}  // namespace fg::cluster
