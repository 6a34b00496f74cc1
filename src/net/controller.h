// The main thread's view of a running instance: the workers, the current snapshot,
// reloads (SIGHUP, POST /reload, file watch), graceful stop, and the data behind the
// admin endpoints. Everything here runs on the main loop.
#pragma once

#include <uv.h>

#include <functional>
#include <thread>
#include <memory>
#include <string>
#include <vector>

#include "net/snapshot.h"
#include "net/service.h"
#include "net/worker.h"

namespace fg::cluster {
class Node;
}

namespace fg::net {

class Controller {
 public:
  // `make_service` builds what each worker runs (gateway::make_worker_context).
  // `tls` holds the contexts already built from `config` with `ticket_keys`
  // (build_tls_contexts), the ring every later reload keeps using.
  Controller(uv_loop_t* loop, std::string config_path, std::shared_ptr<const Config> config, TlsContexts tls,
             std::shared_ptr<tls::TicketKeyRing> ticket_keys, ServiceFactory make_service);
  ~Controller();

  // Starts every worker; on failure stops those already started.
  Status start();
  // Re-reads and validates the config file; on success every worker switches to it.
  // Returns the error message (file:line:col) on failure; the running config stays.
  Status reload(const char* trigger);
  // Graceful stop of every worker; returns at once. `on_stopped` runs on the main
  // loop once every worker has finished (the main loop keeps running meanwhile, so a
  // second signal can still be handled).
  void stop(std::function<void()> on_stopped = nullptr);
  void join();
  bool stopping() const { return stopping_; }

  // Called after every successful reload (main loop), e.g. to move the admin listener.
  std::function<void(const Config&)> on_reloaded;

  std::string metrics_text() const;
  // Ready for traffic (GET /readyz): not draining, and when some route cannot work
  // without Redis (idempotency, queues, callbacks with redis.on_failure = "closed"),
  // every worker's Redis connection is up. `why` says what is missing otherwise.
  bool ready(std::string* why) const;
  std::string status_json() const;
  // Counts `n` dead letters of `route` queued again from the admin listener
  // (floodgate_tickets_total{state="redelivered"}).
  void count_redelivered(const std::string& route, int64_t n);
  const Config& config() const { return *snapshot_->config; }

 private:
  void start_watch();
  void stop_watch();
  static void on_fs_event(uv_fs_event_t* h, const char* filename, int events, int status);
  static void on_debounce(uv_timer_t* t);
  static void on_rate_sample(uv_timer_t* t);
  // Creates the cluster node (main loop) once a config has a scope = "cluster" route.
  void ensure_cluster(const Config& config);
  static void on_ticket_rotation(uv_timer_t* t);
  void schedule_ticket_rotation();

  uv_loop_t* loop_;
  std::string config_path_;
  std::shared_ptr<const Snapshot> snapshot_;
  ServiceFactory make_service_;
  Instance instance_;
  std::vector<std::unique_ptr<Worker>> workers_;
  // The instance's membership and cluster budgets; null while no route needs them.
  std::unique_ptr<cluster::Node> cluster_;
  bool stopping_ = false;
  uv_async_t stopped_async_;
  std::thread joiner_;
  std::function<void()> on_stopped_;
  uint64_t loaded_at_ms_ = 0;
  metrics::CellId reloads_ok_ = 0;
  metrics::CellId reloads_failed_ = 0;
  // File watch (reload.watch): the directory is watched (editors replace files by
  // rename) and events are debounced.
  uv_fs_event_t* watch_ = nullptr;
  uv_timer_t debounce_;
  // Admitted rate per route, sampled once a second from the forwarded counters.
  uv_timer_t rate_timer_;
  std::vector<std::pair<std::string, uint64_t>> last_forwarded_;
  std::vector<std::pair<std::string, double>> admitted_rate_;
  // Session-ticket keys of every TLS listener, rotated every ticket_key_rotation.
  std::shared_ptr<tls::TicketKeyRing> ticket_keys_;
  uv_timer_t ticket_timer_;
  uint64_t ticket_rotation_ms_ = 0;
};

}  // namespace fg::net
