// Building snapshots and carrying runtime state across reloads.
#include "net/snapshot.h"

#include <time.h>

#include <cmath>
#include <cstdio>

#include "cluster/node.h"
#include "core/log.h"
#include "http/proxy_protocol.h"
#include "tls/session.h"

namespace fg::net {

const char* outcome_name(int outcome) {
  static const char* kNames[kOutcomeCount] = {"forwarded", "queued",   "rejected", "replayed",
                                              "conflict",  "degraded", "cached",   "error"};
  return outcome >= 0 && outcome < kOutcomeCount ? kNames[outcome] : "error";
}

const char* ticket_state_name(int s) {
  static const char* kNames[kTicketStateCount] = {"queued",    "done", "failed", "expired", "cancelled",
                                                    "reclaimed", "parked", "dead", "redelivered"};
  return s >= 0 && s < kTicketStateCount ? kNames[s] : "unknown";
}

void QueueState::observe(int64_t enq, int64_t taken, uint64_t now_ns) {
  int64_t before = depth.load(std::memory_order_relaxed);
  depth.store(enq - taken > 0 ? enq - taken : 0, std::memory_order_relaxed);
  // A second in which the queue was empty says nothing about how fast it drains:
  // only seconds with tickets waiting feed the rate.
  bool informative = before > 0 || taken != last_taken;
  if (last_taken >= 0 && now_ns > last_ns && taken >= last_taken && informative) {
    double secs = static_cast<double>(now_ns - last_ns) / 1e9;
    double sample = static_cast<double>(taken - last_taken) / secs;
    double old = rate.load(std::memory_order_relaxed);
    // Smoothed so one slow second does not make every estimate jump up at once.
    rate.store(old == 0 ? sample : 0.7 * old + 0.3 * sample, std::memory_order_relaxed);
  }
  last_taken = taken;
  last_ns = now_ns;
}

void QueueState::raise_depth(int64_t d) {
  int64_t cur = depth.load(std::memory_order_relaxed);
  while (d > cur && !depth.compare_exchange_weak(cur, d, std::memory_order_relaxed)) {
  }
}

int64_t QueueState::estimate_ms(int64_t ahead, double fallback_rate) const {
  if (ahead <= 0) return 0;
  double r = rate.load(std::memory_order_relaxed);
  if (r < 1e-3) r = fallback_rate;
  if (r < 1e-3) r = 1;
  return static_cast<int64_t>(static_cast<double>(ahead) * 1000.0 / r);
}

namespace {

bool same_servers(const UpstreamConfig& a, const UpstreamConfig& b) {
  if (a.servers.size() != b.servers.size() || a.backup.size() != b.backup.size()) return false;
  for (size_t i = 0; i < a.servers.size(); i++)
    if (a.servers[i].text != b.servers[i].text) return false;
  for (size_t i = 0; i < a.backup.size(); i++)
    if (a.backup[i].text != b.backup[i].text) return false;
  return a.breaker.enabled == b.breaker.enabled;
}

std::string format_number(double v) {
  char buf[32];
  if (v == std::floor(v)) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

std::shared_ptr<const Snapshot> Snapshot::build(std::shared_ptr<const Config> config, const Snapshot* prev,
                                                uint64_t now_ns, TlsContexts tls, cluster::Node* cluster) {
  auto snap = std::make_shared<Snapshot>();
  snap->tls = std::move(tls);
  {
    auto& r = metrics::Registry::get();
    const char* hs = "floodgate_tls_handshakes_total";
    const char* hs_help = "TLS handshakes on client connections by result.";
    const char* results[kTlsHandshakeCount] = {"full", "resumed", "failed"};
    for (int k = 0; k < kTlsHandshakeCount; k++)
      snap->tls_handshakes[static_cast<size_t>(k)] = r.counter(hs, hs_help, metrics::label("result", results[k]));
    for (size_t k = 0; k < kTlsErrorKinds; k++) {
      snap->tls_errors[k] = r.counter("floodgate_tls_errors_total",
                                      "TLS sessions of client connections that ended in an error, by kind.",
                                      metrics::label("kind", tls::error_name(static_cast<tls::Error>(k + 1))));
    }
  }
  snap->config = config;
  snap->loaded_at_ms = log::wall_ms();
  auto& reg = metrics::Registry::get();
  static_assert(kProxyRejectReasons == static_cast<size_t>(http::ProxyHeaderError::kCount));
  for (size_t k = 1; k < kProxyRejectReasons; k++) {
    snap->proxy_protocol_rejected[k] = reg.counter(
        "floodgate_proxy_protocol_rejected_total",
        "Connections closed for a missing, malformed, oversize or late PROXY protocol header.",
        metrics::label("reason", http::proxy_header_error_name(static_cast<http::ProxyHeaderError>(k))));
  }

  for (const auto& r : config->routes) {
    RouteRuntime rt;
    const RouteRuntime* old = nullptr;
    const RouteConfig* old_cfg = nullptr;
    if (prev) {
      for (size_t i = 0; i < prev->config->routes.size(); i++) {
        if (prev->config->routes[i].name == r.name) {
          old = &prev->routes[i];
          old_cfg = &prev->config->routes[i];
          break;
        }
      }
    }
    if (r.rate > 0) {
      if (old && old->budget) {
        rt.budget = old->budget;
        if (old_cfg->rate != r.rate || old_cfg->burst != r.burst) rt.budget->set_rate(r.rate, r.burst, now_ns);
      } else {
        rt.budget = std::make_shared<admission::Budget>(r.rate, r.burst, now_ns);
      }
      if (r.cluster_scope && cluster) rt.shared = cluster->budget(r.name, r.rate, r.burst);
      rt.policy_header = "RateLimit-Policy: \"" + r.name + "\";q=" + format_number(r.rate) +
                         ";w=1\r\n";
    }
    if (r.client_rate > 0) {
      if (old && old->clients && old->clients->slots() >= config->client_table_size &&
          old->clients->slots() < config->client_table_size + 4096) {
        rt.clients = old->clients;
        if (old_cfg->client_rate != r.client_rate || old_cfg->client_burst != r.client_burst)
          rt.clients->set_rate(r.client_rate, r.client_burst);
      } else {
        rt.clients = std::make_shared<admission::ClientLimiter>(r.client_rate, r.client_burst,
                                                                config->client_table_size);
      }
    }
    // scope = "cluster": the per-client limit counts across instances too (and no longer
    // once a reload made the route's scope "instance" or dropped its client_rate).
    if (cluster) cluster->client_limits(r.name, r.cluster_scope ? rt.clients : nullptr);
    if (r.cache.enabled) {
      // One cache per route for the whole instance, kept across reloads by route name
      // (with the new limits applied at once); a route that drops its cache frees it.
      if (old && old->cache) {
        rt.cache = old->cache;
        if (rt.cache->max_bytes() != r.cache.max_bytes || rt.cache->max_entry_bytes() != r.cache.max_entry_bytes)
          rt.cache->set_limits(r.cache.max_bytes, r.cache.max_entry_bytes);
      } else {
        rt.cache = std::make_shared<cache::SharedCache>(r.cache.max_bytes, r.cache.max_entry_bytes);
      }
    }
    std::string route_label = metrics::label("route", r.name);
    for (int o = 0; o < kOutcomeCount; o++) {
      rt.requests[static_cast<size_t>(o)] =
          reg.counter("floodgate_requests_total", "Requests by route and outcome.",
                      route_label + "," + metrics::label("outcome", outcome_name(o)));
    }
    static const char* kWould[kDryRunCount] = {"rejected", "degraded", "client_limited", "shed"};
    for (int w = 0; w < kDryRunCount; w++) {
      rt.dry_run[static_cast<size_t>(w)] =
          reg.counter("floodgate_dry_run_total", "Decisions a dry-run route would have enforced.",
                      route_label + "," + metrics::label("would", kWould[w]));
    }
    if (r.idempotency.enabled) {
      for (const auto& src : r.idempotency.key) {
        auto parsed = idempotency::parse_source(src);
        if (parsed) rt.idem_sources.push_back(parsed.value());
      }
      for (int k = 0; k < idempotency::kResultCount; k++) {
        rt.idem[static_cast<size_t>(k)] =
            reg.counter("floodgate_idempotency_total", "Idempotency decisions by route and result.",
                        route_label + "," + metrics::label("result", idempotency::result_name(k)));
      }
    }
    if (r.queued()) {
      if (old && old->queue) rt.queue = old->queue;
      else rt.queue = std::make_shared<QueueState>();
      for (int k = 0; k < kTicketStateCount; k++) {
        rt.tickets[static_cast<size_t>(k)] =
            reg.counter("floodgate_tickets_total", "Tickets by route and state change.",
                        route_label + "," + metrics::label("state", ticket_state_name(k)));
      }
      rt.ticket_wait = reg.histogram("floodgate_ticket_wait_seconds",
                                     "Time a ticket waited in the queue before its first delivery.", route_label);
    }
    rt.duration = reg.histogram("floodgate_request_duration_seconds",
                                "Time from request head to the end of the answer.", route_label);
    snap->routes.push_back(std::move(rt));
  }

  for (const auto& u : config->upstreams) {
    UpstreamRuntime ut;
    if (prev) {
      for (size_t i = 0; i < prev->config->upstreams.size(); i++) {
        const auto& pu = prev->config->upstreams[i];
        if (pu.name == u.name && same_servers(pu, u)) ut.counters = prev->upstreams[i].counters;
      }
    }
    if (!ut.counters) {
      ut.counters = std::make_shared<breaker::ServerCounters>(u.servers.size() + u.backup.size(), &u.breaker);
    } else {
      for (auto& b : ut.counters->breakers) b->set_config(u.breaker);
    }
    if (prev) {
      for (size_t i = 0; i < prev->config->upstreams.size(); i++)
        if (prev->config->upstreams[i].name == u.name) ut.latency = prev->upstreams[i].latency;
    }
    if (!ut.latency) ut.latency = std::make_shared<breaker::LatencyWindow>();
    std::string ul = metrics::label("upstream", u.name);
    ut.duration = reg.histogram("floodgate_upstream_duration_seconds",
                                "Time from sending a request to the upstream's response head.", ul);
    static const char* kResults[kResolveResults] = {"unchanged", "changed", "failed"};
    for (size_t k = 0; k < kResolveResults; k++) {
      ut.resolutions[k] = reg.counter("floodgate_upstream_resolutions_total",
                                      "Re-resolutions of upstream host names by result (a failure keeps the last good addresses).",
                                      ul + "," + metrics::label("result", kResults[k]));
    }
    std::vector<HostPort> all = u.servers;
    all.insert(all.end(), u.backup.begin(), u.backup.end());
    for (const auto& s : all) {
      std::array<metrics::CellId, 5> kinds{};
      for (int k = 0; k < 5; k++) {
        const char* kind = k < 4 ? breaker::upstream_error_name(static_cast<breaker::UpstreamError>(k)) : "http_5xx";
        kinds[static_cast<size_t>(k)] = reg.counter("floodgate_upstream_errors_total",
                                                    "Upstream failures by server and kind.",
                                                    ul + "," + metrics::label("server", s.text) + "," +
                                                        metrics::label("kind", kind));
      }
      ut.errors.push_back(kinds);
    }
    snap->upstreams.push_back(std::move(ut));
  }
  return snap;
}

}  // namespace fg::net
