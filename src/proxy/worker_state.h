// What a worker holds for requests (the proxy's view of its worker): upstream pools,
// client connections, the Redis connections (commands, ticket notifications) and
// their scripts, response caches, ticket long-polls, the retry budget and request
// ids. It is the worker's net::Service; gateway::WorkerContext adds the instance
// duties and is what a worker actually runs. Transport facts (loop, snapshot, drain,
// reaper, read buffer) are the worker's and are forwarded here for the proxy's code.
// Loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cache/stage.h"
#include "idempotency/exchange.h"
#include "net/service.h"
#include "net/worker.h"
#include "proxy/upstream_pool.h"
#include "queue/dead_letter.h"
#include "queue/queue_store.h"
#include "queue/ticket_memory.h"
#include "queue/ticket_service.h"
#include "redis/redis_client.h"

namespace fg::proxy {

class ClientConn;
class Dispatcher;

class WorkerState : public net::Service {
 public:
  explicit WorkerState(net::Worker& worker);
  ~WorkerState() override;

  // ---- the worker's transport ----
  net::Worker& worker() { return worker_; }
  int id() const { return worker_.id(); }
  uv_loop_t* loop() { return worker_.loop(); }
  const Config& config() const { return worker_.config(); }
  const std::shared_ptr<const net::Snapshot>& snapshot() const { return worker_.snapshot(); }
  net::Instance& instance() { return worker_.instance(); }
  log::LogBuffer& access_log() { return worker_.access_log(); }
  bool draining() const { return worker_.draining(); }
  bool under_pressure() const { return worker_.under_pressure(); }
  uint64_t now_ms() const { return worker_.now_ms(); }
  net::Reaper& reaper() { return worker_.reaper(); }
  char* read_buffer() { return worker_.read_buffer(); }

  // ---- per-worker state for requests ----
  // When a TLS error was last logged (ms): one line a second at most.
  uint64_t tls_error_logged_ms = 0;
  UpstreamPool& pool(size_t upstream_index) { return *pools_[upstream_index]; }
  // The current pool of the upstream named `name`, or null.
  UpstreamPool* pool_named(std::string_view name);
  // Keeps a pool that its owner let go until nothing uses it any more: no other
  // reference and no open connection (checked on the tick).
  void keep_pool(std::shared_ptr<UpstreamPool> pool);
  // This worker's Redis connection (null without [redis]) and the stages' views of it.
  redis::Client* redis() { return redis_.get(); }
  idempotency::Link& idem_link() { return idem_link_; }
  queue::Scripts& queue_scripts() { return queue_scripts_; }
  queue::RetryScripts& retry_scripts() { return retry_scripts_; }
  // Counts a Redis write whose loss would break a promise made to a client (an
  // idempotency record, a ticket's final state). At shutdown the Redis connection is
  // closed only once every such write has been answered (or drain_timeout passed).
  // Call the returned function exactly once, from the write's callback.
  std::function<void()> hold_redis();
  // The dispatcher of a queued route on this worker, or null (instance duties).
  virtual Dispatcher* dispatcher(const std::string& route);
  queue::TicketService& tickets() { return tickets_; }
  // Tickets whose state this worker has read, kept current by the change channel.
  queue::TicketMemory& ticket_memory() { return ticket_memory_; }
  // This worker's side of the routes' shared caches (the caches are in the snapshot).
  cache::Stage& cache_stage() { return cache_stage_; }
  // Retry budget: live retries stay under 20% of requests (per worker, over a rolling
  // ten-second period, with a floor of 10 so a quiet worker can still retry).
  void note_request() { budget_requests_++; }
  bool retry_allowed() const { return budget_retries_ < 10 + budget_requests_ / 5; }
  void note_retry() { budget_retries_++; }
  // A fresh request id: this worker's random prefix and a counter.
  void next_request_id(std::string& out);
  // 128 random bits as 32 hex chars (owner tokens).
  std::string random_token();
  // A connection was refused for its PROXY header: true when its log line may be
  // written (one a second per worker, so a flood of bad connections cannot flood the log).
  bool note_proxy_rejection() {
    if (now_ms() < proxy_log_ms_ + 1000 && proxy_log_ms_ != 0) return false;
    proxy_log_ms_ = now_ms();
    return true;
  }
  // A client connection closed (it leaves the list; the drain may end).
  void conn_closed(ClientConn* conn);
  // Response bytes queued towards this worker's clients changed by `delta`; the
  // instance total (server.response_buffering_total) follows.
  void note_queued(int64_t delta);

  // ---- net::Service ----
  Status on_prepare() override;
  void on_start() override;
  void on_accept(uv_stream_t* server) override;
  void on_snapshot(const net::Snapshot& old) override;
  void on_tick(uint64_t now_ms) override;
  void on_pressure(bool, const char*) override {}
  void on_drain() override;
  void on_drain_expired() override;
  size_t connections() const override { return conns_.size(); }
  bool busy() const override;
  void on_stop() override;

 private:
  void open_redis();
  void close_redis();

  net::Worker& worker_;
  std::vector<std::unique_ptr<UpstreamPool>> pools_;
  std::vector<std::unique_ptr<UpstreamPool>> retired_pools_;
  std::vector<std::shared_ptr<UpstreamPool>> kept_pools_;
  std::vector<ClientConn*> conns_;  // open client connections (index kept in conn)
  std::unique_ptr<redis::Client> redis_;
  std::unique_ptr<redis::Client> subscriber_;  // ticket change notifications
  idempotency::Link idem_link_;
  queue::Scripts queue_scripts_;
  queue::RetryScripts retry_scripts_;
  size_t redis_holds_ = 0;
  bool drain_expired_ = false;
  uint64_t budget_requests_ = 0;
  uint64_t budget_retries_ = 0;
  uint64_t budget_reset_ms_ = 0;
  int64_t queued_ = 0;       // response bytes queued towards this worker's clients
  int64_t queued_peak_ = 0;  // their highest total since memory was last handed back
  queue::TicketService tickets_;
  queue::TicketMemory ticket_memory_;
  // Wakes this loop when a fetch on another worker ends with waiters of this one.
  uv_async_t cache_async_{};
  bool cache_async_open_ = false;
  cache::Stage cache_stage_;
  std::string id_prefix_;
  uint64_t id_counter_ = 0;
  uint64_t proxy_log_ms_ = 0;
};

}  // namespace fg::proxy
