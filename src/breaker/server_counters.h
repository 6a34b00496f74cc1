// Instance-wide state per upstream server, shared by every worker and carried across
// reloads by the snapshot: connections in use, the active health verdict and the
// circuit breaker. No libuv: pools (proxy/upstream_pool.h) and health checks read and
// write it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "breaker/breaker.h"  // also BreakerConfig

namespace fg::breaker {

enum class UpstreamError {
  kConnect,      // connect refused/failed: nothing of the request reached the server
  kTimeout,      // no (further) response byte within the upstream timeout
  kReset,        // the connection broke (EOF or reset) before the response completed
  kBadResponse,  // the upstream sent something that is not HTTP/1.x
};

inline const char* upstream_error_name(UpstreamError e) {
  switch (e) {
    case UpstreamError::kConnect: return "connect";
    case UpstreamError::kTimeout: return "timeout";
    case UpstreamError::kReset: return "reset";
    case UpstreamError::kBadResponse: return "bad_response";
  }
  return "unknown";
}

// Instance-wide state per upstream server (shared by workers): connections in use,
// the active health verdict and the circuit breaker. Servers are numbered primaries
// first, then backups. Relaxed atomics: a burst of simultaneous connects on several
// workers may overshoot max_connections by at most workers-1 connections.
struct ServerCounters {
  explicit ServerCounters(size_t n, const BreakerConfig* breaker = nullptr) : count(n), down(n) {
    for (auto& c : count) c.store(0);
    for (auto& d : down) d.store(false);
    if (breaker && breaker->enabled) {
      for (size_t i = 0; i < n; i++) breakers.push_back(std::make_unique<Breaker>(*breaker));
    }
  }
  std::vector<std::atomic<int64_t>> count;
  std::vector<std::atomic<bool>> down;                      // failed its active health checks
  std::vector<std::unique_ptr<Breaker>> breakers;  // empty: breakers disabled
  Breaker* breaker_of(size_t i) const { return i < breakers.size() ? breakers[i].get() : nullptr; }
};

}  // namespace fg::breaker
