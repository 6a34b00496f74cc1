// A worker: one thread, one libuv loop, its own SO_REUSEPORT listeners, its own
// upstream pools and client connections. Everything it owns is created and destroyed on
// its loop; other threads talk to it only through request_stop() and post_snapshot()
// (each a uv_async), and read its gauges through atomics.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/log.h"
#include "cache/stage.h"
#include "idempotency/exchange.h"
#include "queue/queue_store.h"
#include "queue/ticket_service.h"
#include "redis/redis_client.h"
#include "net/lifetime.h"
#include "net/reaper.h"
#include "net/snapshot.h"
#include "proxy/upstream_pool.h"

namespace fg::gateway {
class InstanceDuties;
}

namespace fg::proxy {
class ClientConn;
class Dispatcher;
class HealthChecker;
}

namespace fg::net {

// Process-wide state shared by the workers: atomics only.
struct Instance {
  // Client connections open across all workers. Relaxed: the max_connections check may
  // admit up to workers-1 connections too many during a simultaneous burst.
  std::atomic<int64_t> connections{0};
  // Last measured loop lag per worker, in nanoseconds (written by that worker only).
  std::atomic<uint64_t> loop_lag_ns[metrics::kMaxWorkers] = {};
  std::atomic<int> workers{0};
  // Per worker: its Redis connection is up (written by that worker only).
  std::atomic<bool> redis_up[metrics::kMaxWorkers] = {};
  // Upstream requests in flight per route name are not tracked here; see /status.
};

class Listener;

class Worker {
 public:
  Worker(int id, Instance* instance, std::shared_ptr<const Snapshot> snapshot);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Starts the thread and waits until its listeners are bound. Any thread.
  Status start();
  // Begins a graceful drain (stop accepting, finish in-flight requests up to
  // server.drain_timeout, then close everything). Any thread; idempotent.
  void request_stop();
  // Hands a new snapshot to the worker; it switches between requests. Any thread.
  void post_snapshot(std::shared_ptr<const Snapshot> snapshot);
  // Waits for the thread to end. Any thread but this worker's.
  void join();

  // Loop-thread only below.
  int id() const { return id_; }
  uv_loop_t* loop() { return &loop_; }
  const Config& config() const { return *snapshot_->config; }
  const std::shared_ptr<const Snapshot>& snapshot() const { return snapshot_; }
  Instance& instance() { return *instance_; }
  proxy::UpstreamPool& pool(size_t upstream_index) { return *pools_[upstream_index]; }
  log::LogBuffer& access_log() { return access_log_; }
  bool draining() const { return draining_; }
  // True while a [pressure] condition holds (evaluated on the worker's tick).
  bool under_pressure() const { return pressure_; }
  uint64_t now_ms() const { return uv_now(const_cast<uv_loop_t*>(&loop_)); }

  // This worker's Redis connection (null without [redis]) and the idempotency stage's
  // view of it.
  redis::Client* redis() { return redis_.get(); }
  idempotency::Link& idem_link() { return idem_link_; }
  queue::Scripts& queue_scripts() { return queue_scripts_; }
  // Counts a Redis write whose loss would break a promise made to a client (an
  // idempotency record, a ticket's final state). At shutdown the Redis connection is
  // closed only once every such write has been answered (or drain_timeout passed).
  // Call the returned function exactly once, from the write's callback.
  std::function<void()> hold_redis();
  // The dispatcher of a queued route on this worker, or null.
  proxy::Dispatcher* dispatcher(const std::string& route);

  // Ticket long-polls of this worker, woken by the notification connection and the tick.
  queue::TicketService& tickets() { return tickets_; }

  // 128 random bits as 32 hex chars (owner tokens).
  std::string random_token();

  // This worker's response caches, with the coalescing of concurrent misses.
  cache::Stage& cache_stage() { return cache_stage_; }

  // Retry budget: live retries stay under 20% of requests (per worker, over a rolling
  // ten-second period, with a floor of 10 so a quiet worker can still retry).
  void note_request() { budget_requests_++; }
  bool retry_allowed() const { return budget_retries_ < 10 + budget_requests_ / 5; }
  void note_retry() { budget_retries_++; }

  // A fresh request id: this worker's random prefix and a counter.
  void next_request_id(std::string& out);

  // The worker's shared read buffer: every read callback consumes it fully before
  // returning, so one buffer serves all streams of the loop.
  static constexpr size_t kReadBufferSize = 64 * 1024;
  char* read_buffer() { return read_buffer_.get(); }

  // Frees objects outside of callbacks (net/lifetime.h).
  Reaper& reaper() { return *reaper_; }
  // Keeps a pool that its owner let go until nothing uses it any more: no other
  // reference and no open connection (checked on the tick).
  void keep_pool(std::shared_ptr<proxy::UpstreamPool> pool);

  void accept_from(uv_stream_t* server);
  void conn_closed(proxy::ClientConn* conn);

 private:
  void run(std::promise<Status>* started);
  void begin_drain();
  void maybe_finish();
  void apply_snapshot(std::shared_ptr<const Snapshot> next);
  void open_redis();
  void close_redis();
  Status sync_listeners();
  static void on_stop_async(uv_async_t* a);
  static void on_snapshot_async(uv_async_t* a);
  static void on_drain_timer(uv_timer_t* t);
  static void on_tick(uv_timer_t* t);

  int id_;
  Instance* instance_;
  std::shared_ptr<const Snapshot> snapshot_;
  std::thread thread_;
  uv_loop_t loop_;
  uv_async_t stop_async_;
  uv_async_t snapshot_async_;
  uv_timer_t drain_timer_;
  uv_timer_t tick_timer_;  // log flush, pool sweep, loop lag
  std::atomic<bool> stop_requested_{false};
  std::mutex mailbox_mu_;
  std::shared_ptr<const Snapshot> mailbox_;  // the newest posted snapshot, if any
  bool draining_ = false;
  bool finished_ = false;
  bool pressure_ = false;
  uint64_t next_tick_ns_ = 0;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::unique_ptr<Listener>> closed_listeners_;  // kept until the loop ends
  std::vector<std::unique_ptr<proxy::UpstreamPool>> pools_;
  std::vector<std::unique_ptr<proxy::UpstreamPool>> retired_pools_;
  std::vector<std::shared_ptr<proxy::UpstreamPool>> kept_pools_;
  std::unique_ptr<Reaper> reaper_;
  std::vector<proxy::ClientConn*> conns_;  // open client connections (index kept in conn)
  log::LogBuffer access_log_;
  std::unique_ptr<redis::Client> redis_;
  std::unique_ptr<redis::Client> subscriber_;  // ticket change notifications
  // Queue dispatch, breaker evaluation, health checks: once per instance, on worker 0.
  std::unique_ptr<gateway::InstanceDuties> duties_;
  idempotency::Link idem_link_;
  queue::Scripts queue_scripts_;
  size_t redis_holds_ = 0;
  uint64_t budget_requests_ = 0;
  uint64_t budget_retries_ = 0;
  uint64_t budget_reset_ms_ = 0;
  bool drain_expired_ = false;  // stopped dispatchers still finishing deliveries
  queue::TicketService tickets_;
  cache::Stage cache_stage_;
  std::unique_ptr<char[]> read_buffer_;
  std::string id_prefix_;
  uint64_t id_counter_ = 0;
  uint64_t accept_errors_logged_ms_ = 0;
};

}  // namespace fg::net
