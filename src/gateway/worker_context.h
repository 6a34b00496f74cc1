// What one worker runs, assembled in one place: the per-worker state for requests
// (proxy::WorkerState: pools, connections, Redis, caches, long-polls) plus, on the
// instance's home worker (worker 0), the instance duties (gateway/instance_duties.h).
// make_worker_context is the net::ServiceFactory the controller gives each worker.
// Loop thread only.
#pragma once

#include <memory>
#include <string>

#include "gateway/instance_duties.h"
#include "net/service.h"
#include "proxy/worker_state.h"

namespace fg::gateway {

class WorkerContext final : public proxy::WorkerState {
 public:
  explicit WorkerContext(net::Worker& worker);
  ~WorkerContext() override;

  proxy::Dispatcher* dispatcher(const std::string& route) override;

  void on_start() override;
  void on_snapshot(const net::Snapshot& old) override;
  void on_tick(uint64_t now_ms) override;
  void on_pressure(bool on, const char* condition) override;
  void on_drain() override;
  void on_drain_expired() override;
  bool busy() const override;
  void on_stop() override;

 private:
  // Queue dispatch, breaker evaluation, health checks, the pressure log line: once
  // per instance, on worker 0.
  std::unique_ptr<InstanceDuties> duties_;
};

std::unique_ptr<net::Service> make_worker_context(net::Worker& worker);

}  // namespace fg::gateway
