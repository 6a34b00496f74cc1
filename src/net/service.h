// What a worker runs. The worker (net/worker.h) owns the thread, the loop, the
// mailbox, the listeners, the timers, the drain and the reaper; everything a request
// needs per worker (pools, client connections, Redis, caches, long-polls, instance
// duties) belongs to its Service, assembled above net (gateway/worker_context.h).
// Every call below runs on the worker's loop thread.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "floodgate/status.h"

namespace fg::net {

struct Snapshot;
class Worker;

class Service {
 public:
  virtual ~Service() = default;
  // Before any listener opens. May turn the loop (uv_run) to wait for answers such as
  // name resolution; a failure fails the worker's start.
  virtual Status on_prepare() = 0;
  // The listeners are open: start what talks to the network on its own.
  virtual void on_start() = 0;
  // A listener has a connection for this worker.
  virtual void on_accept(uv_stream_t* server) = 0;
  // The worker switched from `old` to its current snapshot (between requests).
  virtual void on_snapshot(const Snapshot& old) = 0;
  // Every tick (100 ms), after the access log was flushed.
  virtual void on_tick(uint64_t now_ms) = 0;
  // The worker's [pressure] condition turned on or off.
  virtual void on_pressure(bool on, const char* condition) = 0;
  // The drain begins (listeners are closed), or its timeout passed.
  virtual void on_drain() = 0;
  virtual void on_drain_expired() = 0;
  // Open client connections (for the drain_timeout log line).
  virtual size_t connections() const = 0;
  // Something must still end before the loop may: the worker waits while true and is
  // told by Worker::service_idle() when it may look again.
  virtual bool busy() const = 0;
  // The drain is over: close what is left (Redis, idle pools, health checks).
  virtual void on_stop() = 0;
};

// Builds a worker's service on its loop thread, before on_prepare().
using ServiceFactory = std::function<std::unique_ptr<Service>(Worker&)>;

}  // namespace fg::net
