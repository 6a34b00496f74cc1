// Active health checks (SPEC §7): once per instance (run on worker 0), every server of
// every upstream with `health` gets a GET of its health path each interval. `fall`
// consecutive failures mark it down (no client traffic goes there), `rise` consecutive
// successes bring it back. A 2xx or 3xx answer within the timeout is a success.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "breaker/server_counters.h"
#include "floodgate/config.h"

namespace fg::proxy {

class WorkerState;

class HealthChecker {
 public:
  explicit HealthChecker(WorkerState* worker);
  ~HealthChecker();
  // Starts probes for the worker's current snapshot (and again after a reload).
  void sync();
  // Stops every probe; handles close asynchronously before the loop ends.
  void stop();

 private:
  class Probe;
  WorkerState* worker_;
  std::vector<Probe*> probes_;
};

}  // namespace fg::proxy
