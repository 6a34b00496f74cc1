// The cluster side of one instance (see node.h).
#include "cluster/node.h"

#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <utility>

#include "metrics/registry.h"

namespace fg::cluster {

std::string make_instance_id() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  uv_timeval64_t tv{};
  uv_gettimeofday(&tv);
  uint64_t ms = static_cast<uint64_t>(tv.tv_sec) * 1000 + static_cast<uint64_t>(tv.tv_usec) / 1000;
  return std::string(host) + ":" + std::to_string(getpid()) + ":" + std::to_string(ms);
}

Node::Node(uv_loop_t* loop, const RedisConfig& redis, std::string instance_id)
    : loop_(loop), prefix_(redis.prefix), instance_id_(std::move(instance_id)) {
  redis::Client::Options o;
  o.endpoint = redis.endpoint;
  // redis.timeout: how fast a stalled Redis is noticed, i.e. how soon budgets fall back.
  o.command_timeout_ms = redis.timeout_ms;
  o.name = "cluster";
  redis_ = std::make_unique<redis::Client>(loop, std::move(o));
  MembershipOptions m;
  m.prefix = prefix_;
  m.instance_id = instance_id_;
  m.expected_instances = static_cast<uint32_t>(redis.expected_instances);
  membership_ = std::make_unique<Membership>(loop, redis_.get(), std::move(m));
}

Node::~Node() {
  client_syncs_.clear();
  budgets_.clear();
  membership_.reset();
}

void Node::start() {
  redis_->start();
  membership_->start();
}

ClusterBudget* Node::budget(const std::string& route, double rate, double burst) {
  auto it = budgets_.find(route);
  if (it != budgets_.end()) {
    if (it->second->rate() != rate || it->second->burst() != burst) it->second->set_rate(rate, burst);
    return it->second.get();
  }
  ClusterBudgetOptions o;
  o.prefix = prefix_;
  o.route = route;
  o.rate = rate;
  o.burst = burst;
  auto b = std::make_unique<ClusterBudget>(loop_, redis_.get(), membership_.get(), std::move(o));
  if (!closed_) b->start();
  ClusterBudget* raw = b.get();
  budgets_.emplace(route, std::move(b));
  return raw;
}

void Node::client_limits(const std::string& route, std::shared_ptr<admission::ClientLimiter> limiter) {
  auto it = client_syncs_.find(route);
  if (!limiter) {
    // Destroyed at once: its timer closes and a call in flight is ignored.
    if (it != client_syncs_.end()) client_syncs_.erase(it);
    return;
  }
  if (it != client_syncs_.end()) {
    it->second->set_limiter(std::move(limiter));
    return;
  }
  ClientSyncOptions o;
  o.prefix = prefix_;
  o.route = route;
  auto s = std::make_unique<ClientSync>(loop_, redis_.get(), std::move(limiter), std::move(o));
  if (!closed_) s->start();
  client_syncs_.emplace(route, std::move(s));
}

void Node::close(std::function<void()> on_closed) {
  if (closed_) return;
  closed_ = true;
  // Destroyed, not only stopped: their handles close now, so the loop can end.
  client_syncs_.clear();
  budgets_.clear();
  membership_->stop(/*leave=*/true, [this, on_closed = std::move(on_closed)]() mutable {
    redis_->close(std::move(on_closed));
  });
}

std::string Node::metrics_text() const {
  std::string out;
  if (closed_) return out;
  char buf[64];
  uint32_t n = membership_->live_instances();
  out += "# HELP floodgate_cluster_instances Live instances sharing the Redis (heartbeats), as this instance sees them.\n";
  out += "# TYPE floodgate_cluster_instances gauge\n";
  out += "floodgate_cluster_instances " + std::to_string(n) + "\n";
  struct Family {
    const char* name;
    const char* type;
    const char* help;
  };
  static const Family kFamilies[] = {
      {"floodgate_budget_lease_tokens", "gauge", "Tokens of the current lease this instance can still admit."},
      {"floodgate_budget_leases_total", "counter", "Leases answered by Redis."},
      {"floodgate_budget_leased_tokens_total", "counter", "Tokens leased from the cluster budget."},
      {"floodgate_budget_lease_failures_total", "counter", "Lease calls that failed (timeout, Redis down, error)."},
      {"floodgate_budget_expired_tokens_total", "counter", "Leased tokens that died unused."},
      {"floodgate_budget_fallbacks_total", "counter", "Switches to the local share (rate / live instances)."},
      {"floodgate_budget_fallback", "gauge", "1 while the route is judged by the local share."},
      {"floodgate_budget_overshoot_bound", "gauge",
       "Most requests the cluster may admit beyond rate x T over any interval T (tokens)."},
  };
  for (size_t f = 0; f < sizeof kFamilies / sizeof kFamilies[0]; f++) {
    out += std::string("# HELP ") + kFamilies[f].name + " " + kFamilies[f].help + "\n";
    out += std::string("# TYPE ") + kFamilies[f].name + " " + kFamilies[f].type + "\n";
    for (const auto& [route, b] : budgets_) {
      ClusterBudgetStats s = b->stats();
      uint64_t v = 0;
      switch (f) {
        case 0: v = static_cast<uint64_t>(s.lease_tokens_held); break;
        case 1: v = s.leases_taken; break;
        case 2: v = s.tokens_leased; break;
        case 3: v = s.lease_failures; break;
        case 4: v = s.tokens_expired; break;
        case 5: v = s.fallbacks; break;
        case 6: v = s.in_fallback ? 1 : 0; break;
        default:
          // rate x T + burst + 1 + N x (held + debt + 1): see cluster_budget.cc.
          v = static_cast<uint64_t>(b->burst()) + 1 + n * b->per_instance_slack();
          break;
      }
      std::snprintf(buf, sizeof buf, " %" PRIu64 "\n", v);
      out += std::string(kFamilies[f].name) + "{" + metrics::label("route", route) + "}" + buf;
    }
  }
  static const Family kClientFamilies[] = {
      {"floodgate_client_limit_syncs_total", "counter",
       "Per-client counts exchanged with the other instances (one script call per route per sync)."},
      {"floodgate_client_limit_sync_failures_total", "counter",
       "Per-client syncs that failed; the per-client limit is per instance until one succeeds."},
      {"floodgate_client_limit_reported_total", "counter", "Admissions of this instance reported per client."},
      {"floodgate_client_limit_charged_total", "counter",
       "Admissions of the other instances charged to this instance's per-client limits."},
      {"floodgate_client_limit_followed_clients", "gauge", "Clients whose counts this instance follows now."},
  };
  for (size_t f = 0; f < sizeof kClientFamilies / sizeof kClientFamilies[0]; f++) {
    if (client_syncs_.empty()) break;
    out += std::string("# HELP ") + kClientFamilies[f].name + " " + kClientFamilies[f].help + "\n";
    out += std::string("# TYPE ") + kClientFamilies[f].name + " " + kClientFamilies[f].type + "\n";
    for (const auto& [route, c] : client_syncs_) {
      ClientSyncStats s = c->stats();
      const uint64_t values[] = {s.syncs, s.failures, s.reported, s.charged, s.followed};
      std::snprintf(buf, sizeof buf, " %" PRIu64 "\n", values[f]);
      out += std::string(kClientFamilies[f].name) + "{" + metrics::label("route", route) + "}" + buf;
    }
  }
  return out;
}

}  // namespace fg::cluster
