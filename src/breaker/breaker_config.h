// [upstreams.X.breaker]: the typed settings of the per-server circuit breaker and
// their validation (breaker_config.cc; the breaker itself is breaker.h).
#pragma once

#include <cstdint>

#include "config/reader_fwd.h"

namespace fg {

// [upstreams.X.breaker]: one circuit breaker per server, per instance (SPEC §7).
struct BreakerConfig {
  bool enabled = true;
  uint64_t window_ms = 10000;     // rolling window of 1 s buckets
  uint64_t min_requests = 20;     // fewer requests in the window never open it
  double error_rate = 0.5;        // 5xx answers + connect errors / requests
  double timeout_rate = 0.4;      // timeouts / requests
  uint64_t open_for_ms = 5000;    // then half-open (with up to 20% jitter)
  uint64_t half_open_probes = 3;  // probes let through while half-open; all must succeed
};

namespace breaker {
// Reads the table into `out`, reporting problems through `reader`. Config loading only.
void load_config(config::Reader& reader, const config::Table& table, BreakerConfig& out);
}  // namespace breaker

}  // namespace fg
