// Queue dispatch: one Dispatcher per instance (gateway::InstanceDuties) and queued route,
// reading only on the instance that holds the route's dispatch lease in the cluster, feeds
// parked tickets to the upstream in queue order at the route budget's spare capacity
// (the same budget live requests draw from), with a concurrency cap; retries retryable failures with
// exponential backoff and full jitter, or, on a route with a retry_schedule, parks them
// in Redis and promotes them back when due (dead letters once the schedule ends); reclaims deliveries of dead workers or
// instances after processing_timeout; posts failed tickets to on_failure_webhook.
// Everything here runs on the worker's loop.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "floodgate/config.h"
#include "loop/lifetime.h"
#include "queue/queue_store.h"

namespace fg::proxy {

class WorkerState;

class Delivery;
class UpstreamPool;

// An on_failure_webhook URL, http://host[:port][/path], parsed once into typed parts.
struct WebhookUrl {
  std::string hostport;  // as written, for the Host header
  HostPort server;       // host without brackets, port (80 when absent)
  std::string path;      // "/" when absent
};
// False when `url` is not of that form (scheme, port 1-65535 in digits only, a host).
bool parse_webhook_url(const std::string& url, WebhookUrl* out);

class Dispatcher {
 public:
  Dispatcher(WorkerState* worker, std::string route);
  ~Dispatcher();

  void start();
  // Stops reading new tickets; deliveries in flight finish. `on_idle` runs when the
  // last one is done (at once if none). Handles are closed by then.
  void stop(std::function<void()> on_idle);
  // Drain timeout: give up on deliveries still on the wire too (their entries stay
  // pending in Redis and are delivered again after processing_timeout).
  void force_stop();
  // A ticket was just parked on this worker: read without waiting for the next poll.
  void nudge();
  // This instance just became the route's dispatcher in the cluster (leader lease): for
  // the next `window_ms`, entries another consumer left idle for `min_idle_ms` are
  // reclaimed (checked every min_idle_ms / 2), not only after processing_timeout.
  void take_over(uint64_t min_idle_ms, uint64_t window_ms);
  // Whether this dispatcher reads and reclaims tickets (true unless set otherwise): an
  // instance that does not hold the route's dispatch lease keeps its dispatcher for the
  // depth sampling only. Turning it off lets deliveries in flight finish.
  // `fence`: the lease's fence key and token, carried by every start and finish of the
  // deliveries begun from now on (a deposed leader's late writes are refused).
  void set_leading(bool leading, queue::Fence fence = {});
  bool leading() const { return leading_; }
  const queue::Fence& fence() const { return fence_; }

  const std::string& route() const { return route_; }
  size_t in_flight() const { return deliveries_.size(); }

  // ---- used by Delivery ----
  WorkerState* worker() const { return worker_; }
  const RouteConfig* route_config() const;  // null when the route is gone (reload)
  int route_index() const;
  void delivery_done(Delivery* d);
  void post_webhook(const std::string& url, std::string body);
  const std::string& consumer() const { return consumer_; }

 private:
  void read();
  void reclaim();
  void schedule_read(uint64_t ms);
  void ensure_group();
  void on_group_created(redis::Failure f, redis::Reply& r);
  void on_read(redis::Failure f, redis::Reply& r);
  void sample_depth();
  // Moves due tickets of the route's retry set back into the queue (queue::promote).
  void promote();
  void on_promoted(bool ok, int64_t moved, int64_t next_due_ms);
  static void on_promote_timer(uv_timer_t* t);
  void handle_entries(const void* entries_reply, bool reclaimed);
  static void on_read_timer(uv_timer_t* t);
  static void on_reclaim_timer(uv_timer_t* t);
  static void on_sample_timer(uv_timer_t* t);
  void maybe_idle();

  WorkerState* worker_;
  std::string route_;
  std::string consumer_;
  uv_timer_t* read_timer_;
  uv_timer_t* reclaim_timer_;
  uv_timer_t* sample_timer_;
  uv_timer_t* promote_timer_;
  bool promoting_ = false;
  bool reclaim_more_ = false;  // the last XAUTOCLAIM left idle entries behind
  bool reading_ = false;
  bool group_ready_ = false;
  bool leading_ = true;
  queue::Fence fence_;
  uint64_t takeover_idle_ms_ = 0;    // take_over(): reclaim sooner ...
  uint64_t takeover_until_ms_ = 0;   // ... until then (monotonic ms)
  bool stopping_ = false;
  bool closed_ = false;
  std::function<void()> on_idle_;
  std::unordered_set<Delivery*> deliveries_;
  std::unordered_set<std::string> active_entries_;  // entry ids being delivered here
  // Shared with the webhook posts in flight; handed to the worker when replaced or
  // when this dispatcher ends, so that a post retrying later still has its pool.
  std::shared_ptr<UpstreamPool> webhook_pool_;
  std::string webhook_url_;
  std::string webhook_host_;
  std::string webhook_path_;
  loop::Anchor<Dispatcher> anchor_{this};  // Redis replies reach this object through it
  friend class Delivery;
};

}  // namespace fg::proxy
