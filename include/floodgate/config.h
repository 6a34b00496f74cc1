// The typed configuration snapshot. Built and validated by fg::config::load_file()
// off the event loops; immutable once built and shared by workers through
// std::shared_ptr<const Config>.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "floodgate/status.h"

namespace fg {

struct HostPort {
  std::string host;  // literal IPv4 or IPv6 address (no brackets) or a host name
  uint16_t port = 0;
  std::string text;  // as written in the config, e.g. "[::1]:8080"
};

struct ServerConfig {
  std::vector<HostPort> listen;  // at least one
  int workers = 1;               // resolved: "auto" becomes the number of cores
  bool workers_auto = false;
  uint64_t max_connections = 20000;
  uint64_t header_timeout_ms = 10000;
  uint64_t body_timeout_ms = 30000;
  uint64_t idle_timeout_ms = 60000;
  uint64_t send_timeout_ms = 30000;
  uint64_t drain_timeout_ms = 15000;
  uint64_t max_header_bytes = 16 * 1024;
  uint64_t max_uri_bytes = 8 * 1024;
  uint64_t max_body_bytes = 1024 * 1024;
  std::string tickets_path = "/_floodgate/tickets/";  // starts and ends with '/'
};

enum class Balance { kRoundRobin, kLeastConn };

struct RetryConfig {
  uint64_t attempts = 3;              // total tries of a queued delivery
  uint64_t backoff_ms = 1000;         // first wait; doubles, with full jitter
  uint64_t max_backoff_ms = 30000;
  bool on_connect = true;
  bool on_timeout = true;
  std::vector<int> on_status = {502, 503, 504};
};

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
};

struct RouteMatch {
  std::vector<std::string> methods;  // empty: any method; upper-case
  std::string path;                  // exact match when !is_prefix
  bool is_prefix = false;
};

enum class Overflow { kReject, kDegrade, kQueue };

// What a route answers when no server of its upstream can take the request (every
// primary and backup is open, down or at max_connections).
enum class OnUnavailable { kError, kQueue, kCache, kDegrade };

// Route response cache for GET/HEAD (SPEC §7): per worker, byte-capped LRU.
struct CacheConfig {
  bool enabled = false;
  uint64_t ttl_ms = 0;              // freshness when the upstream gives no max-age
  uint64_t stale_if_error_ms = 0;   // how long a stale entry may serve while the upstream fails
  uint64_t max_bytes = 64ULL * 1024 * 1024;   // per worker, per route
  uint64_t max_entry_bytes = 1024 * 1024;     // larger responses are not cached
};

// Route idempotency (SPEC §5). Key sources are kept as written ("header:Idempotency-Key",
// "json:out_trade_no", ...); the loader has checked their syntax.
struct IdempotencyConfig {
  bool enabled = false;
  std::vector<std::string> key;            // sources, first present wins
  bool required = false;                   // 400 idempotency_key_missing without a key
  bool per_client = false;                 // scope keys by client key too
  uint64_t ttl_ms = 24ULL * 3600 * 1000;   // how long a completed answer is replayed
  uint64_t max_response_bytes = 1024 * 1024;  // larger answers are forwarded, not stored
};

struct ClientKey {
  bool by_header = false;  // false: the client's IP address
  std::string header;      // header name when by_header ("header:X-User-Id")
};

// The durable queue of a route (SPEC §6): used by overflow = "queue" and by
// mode = "store_and_forward".
struct QueueConfig {
  uint64_t max_depth = 200000;             // 503 queue_full beyond
  uint64_t max_wait_ms = 10 * 60 * 1000;   // not dispatched by then: failed, reason "expired"
  uint64_t processing_timeout_ms = 30000;  // a delivery idle this long is reclaimed
  uint64_t ticket_ttl_ms = 3600 * 1000;    // a finished ticket stays readable this long
  uint64_t concurrency = 64;               // deliveries in flight per worker for this route
};

struct AckConfig {
  int status = 200;
  std::string body = "success";
  std::string content_type = "text/plain";
};

struct RouteConfig {
  std::string name;
  RouteMatch match;
  std::string upstream;          // name of an [upstreams.X] table
  size_t upstream_index = 0;     // index into Config::upstreams, resolved by the loader
  uint64_t max_body_bytes = 0;   // 0: server.max_body_bytes applies

  // Admission (all optional). rate == 0: no route budget.
  double rate = 0;               // requests/s admitted to the upstream
  double burst = 0;              // extra requests allowed at once; default 0
  double client_rate = 0;        // per client key; 0: no per-client limit
  double client_burst = 0;       // default: client_rate (one second's worth), at least 1
  ClientKey client_key;
  Overflow overflow = Overflow::kReject;
  bool dry_run = false;          // decide and count, but forward anyway
  bool core = true;              // false: shed first under [pressure]
  IdempotencyConfig idempotency;

  // Queueing. `queued` is true when overflow = "queue" or store_and_forward.
  bool store_and_forward = false;  // mode = "store_and_forward": every request queued, answered with `ack`
  AckConfig ack;
  QueueConfig queue;
  uint64_t client_max_tickets = 0;  // 0: unlimited
  std::string on_failure_webhook;   // "http://host:port/path"; empty: none
  // The route parks requests in its durable queue in some case (and so needs a
  // dispatcher): overflow = "queue", store_and_forward, or on_unavailable = "queue".
  bool queued() const {
    return store_and_forward || overflow == Overflow::kQueue || on_unavailable == OnUnavailable::kQueue;
  }

  CacheConfig cache;
  OnUnavailable on_unavailable = OnUnavailable::kError;
};

struct RedisConfig {
  bool enabled = false;          // a [redis] table is present
  std::string url = "redis://127.0.0.1:6379/0";
  std::string prefix = "fg:";
  uint64_t timeout_ms = 250;     // per command
  bool fail_open = false;        // on_failure = "open": forward without dedupe when Redis is down
  uint64_t wait_replicas = 0;    // >0: a ticket is acknowledged only after WAIT n replicas
  uint64_t wait_timeout_ms = 100; // how long WAIT may take before the enqueue counts as failed
};

struct AdminConfig {
  bool enabled = false;          // true when [admin] listen is set
  HostPort listen;
  std::string token;             // empty: no authentication
};

struct DegradeConfig {
  int status = 503;
  std::string body = "{\"error\":\"busy\",\"message\":\"the service is busy, please retry shortly\"}";
  std::string content_type = "application/json; charset=utf-8";
  uint64_t retry_after_ms = 1000; // sent as Retry-After (seconds, rounded up)
};

struct PressureConfig {
  uint64_t loop_lag_ms = 0;      // 0: this condition is off
  uint64_t queue_depth = 0;      // 0: off; else shed while any route's queue is deeper
};

struct ReloadConfig {
  bool watch = false;            // reload when the config file is saved
};

struct LogConfig {
  std::string file;     // empty: stderr
  bool access = true;   // one JSON line per request
};

struct Config {
  std::string source_path;
  std::string hash;  // hex digest of the file's bytes, for /status and logs
  ServerConfig server;
  std::vector<UpstreamConfig> upstreams;
  std::vector<RouteConfig> routes;  // in file order; first match wins
  LogConfig log;
  AdminConfig admin;
  RedisConfig redis;
  DegradeConfig degrade;
  PressureConfig pressure;
  ReloadConfig reload;
  uint64_t client_table_size = 65536;  // per-client limiter slots per route (server.client_table_size)

  // Index of the first route matching method and path (path without query), or -1.
  int match_route(std::string_view method, std::string_view path) const;
};

namespace config {

// Reads, parses and validates a config file. On failure the message has the form
// "FILE:LINE:COL: message" (syntax or typed-value errors) or "FILE: key.path: message"
// (semantic errors without a position). Never throws. Safe on any thread.
Result<std::shared_ptr<const Config>> load_file(const std::string& path);

// Same, from text already in memory; `name` is used in messages.
Result<std::shared_ptr<const Config>> load_string(const std::string& text, const std::string& name);

}  // namespace config
}  // namespace fg
