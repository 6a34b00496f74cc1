// A config snapshot plus the runtime objects that must survive reloads: route budgets,
// per-client limiters and per-server connection counters (carried over by name), and
// the metric cells of every route and upstream. Built on the main thread, immutable
// afterwards, shared by workers; the last reference frees it.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "admission/budget.h"
#include "core/clock.h"
#include "admission/client_limiter.h"
#include "admission/shared_budget.h"
#include "breaker/latency_window.h"
#include "cache/shared_cache.h"
#include "floodgate/config.h"
#include "idempotency/exchange.h"
#include "metrics/registry.h"
#include "breaker/server_counters.h"
#include "net/tls_contexts.h"

namespace fg::cluster {
class Node;
}

namespace fg::net {

enum Outcome : int {
  kForwarded = 0,
  kQueued,
  kRejected,
  kReplayed,
  kConflict,
  kDegraded,
  kCached,
  kError,
  kOutcomeCount
};
const char* outcome_name(int outcome);

// Ticket counters, for floodgate_tickets_total{route,state}.
enum TicketState : int {
  kTicketQueued = 0, kTicketDone, kTicketFailed, kTicketExpired, kTicketCancelled, kTicketReclaimed,
  kTicketParked,       // a failed delivery waits in the retry set for its next attempt
  kTicketDead,         // the retry schedule is exhausted: a dead letter (kept)
  kTicketRedelivered,  // a dead letter queued again from the admin listener
  kTicketStateCount
};
const char* ticket_state_name(int s);

// A queued route's shared view of its queue, for the FIFO rule, /status, the depth
// gauge and wait estimates. Written by worker 0's sampler (once a second) and by local
// enqueues; read by every worker. Relaxed atomics: a stale depth by up to a second only
// delays when new arrivals stop queueing behind tickets.
struct QueueState {
  std::atomic<int64_t> depth{0};
  std::atomic<double> rate{0};  // tickets leaving the queue per second, smoothed
  // The fencing token of the route's dispatch lease while this instance holds it, else
  // 0 (written by the instance duties, read by /metrics).
  std::atomic<uint64_t> leader_token{0};
  std::atomic<int64_t> dead{0};    // dead letters of the route (cluster-wide), sampled
  std::atomic<int64_t> parked{0};  // tickets in the route's retry set, sampled
  int64_t last_taken = -1;      // sampler only
  uint64_t last_ns = 0;         // sampler only
  void observe(int64_t enq, int64_t taken, uint64_t now_ns);
  // Raises the depth after a local enqueue reported `depth` (never lowers it).
  void raise_depth(int64_t d);
  // Milliseconds until `ahead` tickets have left at the measured rate (or `fallback_rate`).
  int64_t estimate_ms(int64_t ahead, double fallback_rate) const;
};

// TLS handshakes on client connections, for floodgate_tls_handshakes_total{result}.
enum TlsHandshake : int { kTlsFull = 0, kTlsResumed, kTlsFailed, kTlsHandshakeCount };
// floodgate_tls_errors_total{kind}: one cell per tls::Error but kNone.
constexpr size_t kTlsErrorKinds = 3;

// What a dry-run route would have done.
enum DryRun : int { kWouldReject = 0, kWouldDegrade, kWouldClientLimit, kWouldShed, kDryRunCount };

struct RouteRuntime {
  std::shared_ptr<admission::Budget> budget;          // null: the route has no rate
  // scope = "cluster": the budget shared by every instance, which judges instead of
  // `budget`. Owned by the instance's cluster::Node, which outlives every snapshot's use
  // (it is closed after the workers stopped).
  admission::SharedBudget* shared = nullptr;
  std::shared_ptr<admission::ClientLimiter> clients;  // null: no client_rate
  std::array<metrics::CellId, kOutcomeCount> requests{};
  std::array<metrics::CellId, kDryRunCount> dry_run{};
  metrics::CellId duration = 0;
  std::string policy_header;  // "RateLimit-Policy: ..." line, empty without a rate
  std::vector<idempotency::KeySource> idem_sources;  // empty: no idempotency on the route
  std::array<metrics::CellId, idempotency::kResultCount> idem{};  // by idempotency::Result
  // The route's response cache, shared by every worker (null: no cache on the route).
  std::shared_ptr<cache::SharedCache> cache;
  std::shared_ptr<QueueState> queue;  // null unless the route is queued
  std::array<metrics::CellId, kTicketStateCount> tickets{};
  metrics::CellId ticket_wait = 0;
};

// Results of re-resolving an upstream's names: same addresses, new ones, failure.
enum ResolveResult : int { kResolveUnchanged = 0, kResolveChanged, kResolveFailed };
constexpr size_t kResolveResults = 3;

struct UpstreamRuntime {
  std::shared_ptr<breaker::ServerCounters> counters;  // primaries then backups
  std::shared_ptr<breaker::LatencyWindow> latency;  // for timeout = "adaptive"
  // The first-byte timeout to use now (adaptive or fixed).
  uint64_t timeout_ms(const UpstreamConfig& u, uint64_t now_ms) const {
    return u.adaptive_timeout && latency ? latency->adaptive_timeout_ms(now_ms, u.timeout_min_ms, u.timeout_max_ms)
                                         : u.timeout_ms;
  }
  metrics::CellId duration = 0;
  std::array<metrics::CellId, kResolveResults> resolutions{};  // by ResolveResult
  // errors[server][kind], kind = proxy::UpstreamError, and [4] = a 5xx answer
  std::vector<std::array<metrics::CellId, 5>> errors;
};

// http::ProxyHeaderError values (kNone included, so the index is the enum value).
constexpr size_t kProxyRejectReasons = 6;

struct Snapshot {
  std::shared_ptr<const Config> config;
  std::vector<RouteRuntime> routes;
  std::vector<UpstreamRuntime> upstreams;
  uint64_t loaded_at_ms = 0;  // wall clock
  // Certificates and trust of this config (net/tls_contexts.h); empty vectors: no TLS.
  TlsContexts tls;
  std::array<metrics::CellId, kTlsHandshakeCount> tls_handshakes{};
  std::array<metrics::CellId, kTlsErrorKinds> tls_errors{};  // by tls::Error - 1
  // floodgate_proxy_protocol_rejected_total{reason}, by http::ProxyHeaderError.
  std::array<metrics::CellId, kProxyRejectReasons> proxy_protocol_rejected{};

  // Main thread. Carries budgets (keeping their fill ratio), limiters and counters over
  // from `prev` by route/upstream name when their shape allows it. `cluster` (main loop)
  // provides the budgets of scope = "cluster" routes; without it they judge locally.
  static std::shared_ptr<const Snapshot> build(std::shared_ptr<const Config> config, const Snapshot* prev,
                                               uint64_t now_ns, TlsContexts tls = {},
                                               cluster::Node* cluster = nullptr);
  // The TLS context of listener `i` (server.listen order), or null for plain HTTP.
  std::shared_ptr<const tls::ServerContext> listener_tls(size_t i) const {
    return i < tls.listeners.size() ? tls.listeners[i] : nullptr;
  }
  // The client context of upstream `i`, or null for plain HTTP to it.
  std::shared_ptr<const tls::ClientContext> upstream_tls(size_t i) const {
    return i < tls.upstreams.size() ? tls.upstreams[i] : nullptr;
  }
};

// Monotonic nanoseconds (the clock every budget uses).
using clock::mono_ns;

}  // namespace fg::net
