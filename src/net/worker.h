// A worker: one thread, one libuv loop, its own SO_REUSEPORT listeners, timers, the
// drain and the reaper; what requests need per worker is its Service (net/service.h).
// Everything it owns is created and destroyed on its loop; other threads talk to it
// only through request_stop() and post_snapshot() (each a uv_async), and read its
// gauges through atomics.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/log.h"
#include "net/reaper.h"
#include "net/service.h"
#include "net/snapshot.h"

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

  // Open connections per client address (server.max_connections_per_client), in a
  // fixed table indexed by a hash of the address, so a flood of addresses cannot grow
  // it. Approximation: two addresses that share a slot (1 in 65,536 for a pair) share
  // one cap; relaxed increments may admit up to workers-1 connections too many for one
  // address during a simultaneous burst, as for `connections`.
  static constexpr size_t kClientSlots = 65536;
  std::unique_ptr<std::atomic<uint32_t>[]> client_connections{new std::atomic<uint32_t>[kClientSlots]()};
  // Connections closed at once because their address was at max_connections_per_client.
  std::atomic<uint64_t> refused_per_client{0};
  // Response bytes queued towards clients, every worker together (server.response_buffering_total).
  // Relaxed: a worker may read a value a few writes old and let one more read through.
  std::atomic<int64_t> response_buffered{0};
  // Request body bytes read ahead under server.request_buffering, every worker together.
  std::atomic<int64_t> request_buffered{0};
};

class Listener;

class Worker {
 public:
  Worker(int id, Instance* instance, std::shared_ptr<const Snapshot> snapshot, ServiceFactory make_service);
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
  log::LogBuffer& access_log() { return access_log_; }
  bool draining() const { return draining_; }
  // True while a [pressure] condition holds (evaluated on the worker's tick).
  bool under_pressure() const { return pressure_; }
  uint64_t now_ms() const { return uv_now(const_cast<uv_loop_t*>(&loop_)); }
  Service& service() { return *service_; }
  // The service is no longer busy, perhaps: the drain may end.
  void service_idle() { maybe_finish(); }

  // The worker's shared read buffer: every read callback consumes it fully before
  // returning, so one buffer serves all streams of the loop.
  static constexpr size_t kReadBufferSize = 64 * 1024;
  char* read_buffer() { return read_buffer_.get(); }

  // Frees objects outside of callbacks (loop/lifetime.h).
  Reaper& reaper() { return *reaper_; }

  // A listener has a connection (null: accepting failed, e.g. out of descriptors).
  void accept_from(uv_stream_t* server);

 private:
  void run(std::promise<Status>* started);
  void begin_drain();
  void maybe_finish();
  void apply_snapshot(std::shared_ptr<const Snapshot> next);
  Status sync_listeners();
  static void on_stop_async(uv_async_t* a);
  static void on_snapshot_async(uv_async_t* a);
  static void on_drain_timer(uv_timer_t* t);
  static void on_tick(uv_timer_t* t);

  int id_;
  Instance* instance_;
  std::shared_ptr<const Snapshot> snapshot_;
  ServiceFactory make_service_;
  std::thread thread_;
  uv_loop_t loop_;
  uv_async_t stop_async_;
  uv_async_t snapshot_async_;
  uv_timer_t drain_timer_;
  uv_timer_t tick_timer_;  // log flush, service tick, loop lag
  std::atomic<bool> stop_requested_{false};
  std::mutex mailbox_mu_;
  std::shared_ptr<const Snapshot> mailbox_;  // the newest posted snapshot, if any
  bool draining_ = false;
  bool finished_ = false;
  bool pressure_ = false;
  uint64_t next_tick_ns_ = 0;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::unique_ptr<Listener>> closed_listeners_;  // kept until the loop ends
  std::unique_ptr<Reaper> reaper_;
  std::unique_ptr<Service> service_;
  log::LogBuffer access_log_;
  std::unique_ptr<char[]> read_buffer_;
  uint64_t accept_errors_logged_ms_ = 0;
};

}  // namespace fg::net
