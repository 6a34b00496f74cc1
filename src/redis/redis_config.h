// [redis]: where Redis is and how the gateway uses it, with the URL parsed once at
// load time (endpoint.h). Validation in redis_config.cc; no hiredis here.
#pragma once

#include <cstdint>
#include <string>

#include "config/reader_fwd.h"
#include "redis/endpoint.h"

namespace fg {

struct RedisConfig {
  bool enabled = false;          // a [redis] table is present
  std::string url = "redis://127.0.0.1:6379/0";  // as written (may hold a password)
  redis::Endpoint endpoint;      // url, parsed
  std::string prefix = "fg:";
  uint64_t timeout_ms = 250;     // per command
  bool fail_open = false;        // on_failure = "open": forward without dedupe when Redis is down
  uint64_t wait_replicas = 0;    // >0: a ticket is acknowledged only after WAIT n replicas
  uint64_t wait_timeout_ms = 100; // how long WAIT may take before the enqueue counts as failed
  // Cluster-scope budgets divide their rate by the live instance count (heartbeats in
  // Redis) when Redis is unreachable; this is the count until a heartbeat was answered.
  uint64_t expected_instances = 1;
};

namespace redis {
// Reads [redis] into `out` (and sets enabled). Config loading only.
void load_config(config::Reader& reader, const config::Table& table, RedisConfig& out);
}  // namespace redis

}  // namespace fg
