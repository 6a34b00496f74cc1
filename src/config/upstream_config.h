// [upstreams.NAME]: servers, balancing, timeouts, retries of queued deliveries, the
// breaker and active health checks; validation in upstream_config.cc.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "breaker/breaker_config.h"
#include "config/host_port.h"
#include "config/reader_fwd.h"
#include "config/tls_config.h"

namespace fg {

enum class Balance { kRoundRobin, kLeastConn };

struct RetryConfig {
  uint64_t attempts = 3;              // total tries of a queued delivery
  uint64_t backoff_ms = 1000;         // first wait; doubles, with full jitter
  uint64_t max_backoff_ms = 30000;
  bool on_connect = true;
  bool on_timeout = true;
  std::vector<int> on_status = {502, 503, 504};
};

// [upstreams.X] health = { path, interval, timeout }: active checks, once per instance.
struct HealthConfig {
  bool enabled = false;
  std::string path = "/healthz";
  uint64_t interval_ms = 2000;
  uint64_t timeout_ms = 1000;
  uint64_t rise = 2;   // consecutive successes to mark a server up again
  uint64_t fall = 2;   // consecutive failures to mark it down
};

struct UpstreamConfig {
  std::string name;
  std::vector<HostPort> servers;  // at least one
  Balance balance = Balance::kRoundRobin;
  uint64_t connect_timeout_ms = 1000;
  uint64_t timeout_ms = 5000;            // time to first response byte (and max gap after)
  uint64_t max_connections = 512;        // per server, per instance
  uint64_t keepalive = 64;               // idle pooled connections per server, per worker
  uint64_t keepalive_timeout_ms = 60000; // an idle pooled connection is closed after this
  RetryConfig retry;                     // [upstreams.X.retry]: queued deliveries only
  std::vector<HostPort> backup;          // used only while every primary is unavailable
  bool adaptive_timeout = false;         // timeout = "adaptive": clamp(3 x p99, timeout_min, timeout_max)
  uint64_t timeout_min_ms = 200;
  uint64_t timeout_max_ms = 10000;
  BreakerConfig breaker;
  HealthConfig health;
  UpstreamTlsConfig tls;                 // tls = true: HTTPS to every server
  // Server host names are looked up again this often (or on the record's TTL when the
  // c-ares resolver reports one); a failed lookup keeps the last good address.
  uint64_t resolve_every_ms = 30000;
  // Name servers ("IP:port") asked through c-ares; empty: the system resolver
  // (getaddrinfo on libuv's thread pool, /etc/hosts and nsswitch included).
  std::vector<HostPort> resolver;
};

namespace config {
// The [upstreams] table: one UpstreamConfig per entry, in file order. Config loading only.
void load_upstreams(Reader& reader, const Table& table, std::vector<UpstreamConfig>& out);
}  // namespace config

}  // namespace fg
