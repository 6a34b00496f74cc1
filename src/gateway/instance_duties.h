// What one instance does once rather than once per worker: queue dispatch (one
// dispatcher per queued route, reading only while this instance holds the route's
// dispatch lease in Redis, so that deliveries leave in queue order cluster-wide), circuit
// breaker evaluation (every breaker of the instance moves through its states in one
// place), active health checks, and the pressure_on/pressure_off log line. They run on one worker's loop (worker 0, chosen
// in net/worker.cc where this object is created); this class is their one home, so
// that making some of them cluster-wide changes this class and not the worker.
// Loop-thread only (the home worker's).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "breaker/breaker.h"

namespace fg::cluster {
class LeaderLease;
}

namespace fg::proxy {
class Dispatcher;
class WorkerState;
class HealthChecker;
}

namespace fg::gateway {

class InstanceDuties {
 public:
  // `on_idle` runs when a stopped dispatcher has finished its deliveries (the home
  // worker may be able to end its drain then).
  InstanceDuties(proxy::WorkerState* home, std::function<void()> on_idle);
  ~InstanceDuties();
  InstanceDuties(const InstanceDuties&) = delete;
  InstanceDuties& operator=(const InstanceDuties&) = delete;

  // Once the home worker's Redis connection is opened.
  void start();
  // The home worker switched to a new snapshot.
  void config_changed();
  // Every worker tick (100 ms).
  void tick();
  // The home worker's [pressure] condition turned on or off: logged once for the
  // instance (every worker evaluates it for its own requests).
  void pressure_changed(bool on, const char* condition);
  // The worker drains: dispatchers stop taking tickets, deliveries on the wire finish.
  void drain();
  // The drain timeout passed: deliveries still on the wire are given up (they stay
  // pending in Redis and are delivered again after processing_timeout).
  void drain_expired();
  // End of the drain: health checks stop.
  void stop();
  // Stopped dispatchers still finishing deliveries.
  bool busy() const { return dispatchers_busy_ > 0; }

  // The dispatcher of a queued route, or null (also while another instance leads it).
  proxy::Dispatcher* dispatcher(const std::string& route);
  // Whether this instance holds the route's dispatch lease (any thread).
  bool leads(const std::string& route) const;

 private:
  void sync_dispatchers();
  void leadership_changed(const std::string& route, bool leader, uint64_t token);
  void release_leases();
  void stop_dispatcher(std::unique_ptr<proxy::Dispatcher> d);
  void dispatcher_idle(proxy::Dispatcher* d);
  void evaluate_breakers();

  proxy::WorkerState* home_;
  std::function<void()> on_idle_;
  bool draining_ = false;
  std::vector<std::unique_ptr<proxy::Dispatcher>> dispatchers_;
  // Stopped, waiting for their deliveries on the wire; retired to the reaper when idle.
  std::vector<std::unique_ptr<proxy::Dispatcher>> stopping_dispatchers_;
  size_t dispatchers_busy_ = 0;
  // One lease per queued route, in Redis: only the holder in the whole cluster runs the
  // route's dispatcher, so tickets leave in queue order whichever instance stored them.
  std::string instance_id_;
  bool redis_was_up_ = false;
  std::unordered_map<std::string, std::unique_ptr<cluster::LeaderLease>> leases_;
  std::unique_ptr<proxy::HealthChecker> health_;
  std::unordered_map<const breaker::Breaker*, breaker::State> breaker_seen_;  // last logged state
};

}  // namespace fg::gateway
