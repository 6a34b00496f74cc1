// What the instance does once (see instance_duties.h).
#include "gateway/instance_duties.h"

#include "cluster/leader_lease.h"
#include "cluster/node.h"
#include "core/log.h"
#include "proxy/worker_state.h"
#include "proxy/dispatcher.h"
#include "proxy/health_checker.h"
#include "core/random.h"

namespace fg::gateway {
namespace {

// The dispatch lease: a dead leader is replaced within ttl + ttl/3 (4 s). The new leader
// reclaims the entries the old one left idle for ttl/3 during the 2 ttl after it took
// over (the old one died at most ttl/3 after its last renewal, so its entries are that
// idle by the time its key expired).
constexpr uint64_t kLeaderTtlMs = 3000;

}  // namespace

InstanceDuties::InstanceDuties(proxy::WorkerState* home, std::function<void()> on_idle)
    : home_(home), on_idle_(std::move(on_idle)), instance_id_(cluster::make_instance_id()) {}

InstanceDuties::~InstanceDuties() {
  // Not released: a process that ends without stop() leaves its leases to expire.
  for (auto& [route, lease] : leases_) lease->stop(false);
}

void InstanceDuties::start() {
  sync_dispatchers();
  health_ = std::make_unique<proxy::HealthChecker>(home_);
  health_->sync();
}

void InstanceDuties::config_changed() {
  sync_dispatchers();
  if (health_) health_->sync();
}

void InstanceDuties::pressure_changed(bool on, const char* condition) {
  log::event(on ? "warn" : "info", on ? "pressure_on" : "pressure_off",
             [&](log::Line& l) { l.str("condition", condition); });
}

void InstanceDuties::tick() {
  evaluate_breakers();
  // The leases' first attempt may have gone out before the connection was up: try again
  // as soon as it is, not a third of the TTL later.
  redis::Client* redis = home_->redis();
  bool up = redis != nullptr && redis->connected();
  if (up && !redis_was_up_)
    for (auto& [route, lease] : leases_)
      if (!lease->is_leader()) lease->try_now();
  redis_was_up_ = up;
}

void InstanceDuties::drain() {
  // Dispatchers stop taking tickets; deliveries on the wire finish (the rest stay
  // pending in Redis and are reclaimed later). The leases are released once they are
  // done, so the next leader does not reclaim a delivery still on the wire.
  draining_ = true;
  std::vector<std::unique_ptr<proxy::Dispatcher>> stopping = std::move(dispatchers_);
  dispatchers_.clear();
  for (auto& d : stopping) stop_dispatcher(std::move(d));
  if (dispatchers_busy_ == 0) release_leases();
}

void InstanceDuties::release_leases() {
  for (auto& [route, lease] : leases_) lease->stop(true);
}

void InstanceDuties::drain_expired() {
  // Copy: a dispatcher that becomes idle leaves the list.
  std::vector<proxy::Dispatcher*> stopping;
  for (auto& d : stopping_dispatchers_) stopping.push_back(d.get());
  for (auto* d : stopping) {
    bool still_there = false;
    for (auto& s : stopping_dispatchers_) still_there = still_there || s.get() == d;
    if (still_there) d->force_stop();
  }
}

void InstanceDuties::stop() {
  if (health_) health_->stop();
  // Released, then destroyed: their timers close now, so the loop can end.
  release_leases();
  leases_.clear();
}

void InstanceDuties::sync_dispatchers() {
  if (draining_) return;
  const Config& cfg = home_->config();
  auto queued = [&](const std::string& name) {
    for (const auto& r : cfg.routes)
      if (r.name == name && r.queued() && cfg.redis.enabled) return true;
    return false;
  };
  // Keep dispatchers and leases of routes still queued, stop the others.
  std::vector<std::unique_ptr<proxy::Dispatcher>> keep;
  for (auto& d : dispatchers_) {
    if (queued(d->route())) {
      keep.push_back(std::move(d));
    } else {
      stop_dispatcher(std::move(d));
    }
  }
  dispatchers_ = std::move(keep);
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (queued(it->first)) {
      ++it;
      continue;
    }
    it->second->stop(true);
    it = leases_.erase(it);
  }
  // Every instance keeps a dispatcher per queued route, for the queue depth it samples
  // for its workers; only the one holding the route's lease reads and delivers.
  if (!cfg.redis.enabled) return;
  for (const auto& r : cfg.routes) {
    if (!r.queued() || dispatcher(r.name)) continue;
    dispatchers_.push_back(std::make_unique<proxy::Dispatcher>(home_, r.name));
    dispatchers_.back()->set_leading(leads(r.name));
    dispatchers_.back()->start();
  }
  // One dispatching dispatcher per queued route in the cluster: the holder of the
  // route's lease (leadership_changed turns reading on and off).
  redis::Client* redis = home_->redis();
  if (!cfg.redis.enabled || redis == nullptr) return;
  for (const auto& r : cfg.routes) {
    if (!r.queued() || leases_.count(r.name)) continue;
    cluster::LeaderLeaseOptions o;
    o.prefix = cfg.redis.prefix;
    o.name = "dispatch";
    o.tag = r.name;  // the queue's hash slot (queue::Keys): its fenced scripts touch one slot
    o.holder_id = instance_id_;
    o.ttl_ms = kLeaderTtlMs;
    o.on_change = [this, route = r.name](bool leader, uint64_t token) { leadership_changed(route, leader, token); };
    auto lease = std::make_unique<cluster::LeaderLease>(home_->loop(), redis, std::move(o));
    cluster::LeaderLease* raw = lease.get();
    leases_.emplace(r.name, std::move(lease));
    raw->start();
  }
}

void InstanceDuties::leadership_changed(const std::string& route, bool leader, uint64_t token) {
  log::event("info", leader ? "dispatch_lead" : "dispatch_lead_lost", [&](log::Line& l) {
    l.str("route", route).num("token", static_cast<int64_t>(token)).str("instance", instance_id_);
  });
  const Config& cfg = home_->config();
  for (size_t i = 0; i < cfg.routes.size(); i++) {
    const auto& queue = home_->snapshot()->routes[i].queue;
    if (cfg.routes[i].name == route && queue) queue->leader_token.store(leader ? token : 0, std::memory_order_relaxed);
  }
  proxy::Dispatcher* d = dispatcher(route);
  auto it = leases_.find(route);
  if (d == nullptr || it == leases_.end()) return;  // draining, or the route is gone
  d->set_leading(leader, queue::Fence{it->second->keys().fence, leader ? token : 0});
  if (leader) d->take_over(kLeaderTtlMs / 3, 2 * kLeaderTtlMs);
}

bool InstanceDuties::leads(const std::string& route) const {
  auto it = leases_.find(route);
  return it != leases_.end() && it->second->is_leader();
}

void InstanceDuties::stop_dispatcher(std::unique_ptr<proxy::Dispatcher> d) {
  // Listed before stop(): a dispatcher with nothing in flight becomes idle at once.
  proxy::Dispatcher* raw = d.get();
  stopping_dispatchers_.push_back(std::move(d));
  dispatchers_busy_++;
  raw->stop([this, raw] { dispatcher_idle(raw); });
}

void InstanceDuties::dispatcher_idle(proxy::Dispatcher* d) {
  // Called from inside the dispatcher: it is freed by the reaper, after this returns.
  for (size_t i = 0; i < stopping_dispatchers_.size(); i++) {
    if (stopping_dispatchers_[i].get() != d) continue;
    home_->reaper().retire(std::move(stopping_dispatchers_[i]));
    stopping_dispatchers_.erase(stopping_dispatchers_.begin() + static_cast<long>(i));
    break;
  }
  dispatchers_busy_--;
  if (draining_ && dispatchers_busy_ == 0) release_leases();
  if (on_idle_) on_idle_();
}

proxy::Dispatcher* InstanceDuties::dispatcher(const std::string& route) {
  for (auto& d : dispatchers_)
    if (d->route() == route) return d.get();
  return nullptr;
}

void InstanceDuties::evaluate_breakers() {
  // One thread moves every breaker of the instance through its states, every
  // tick (100 ms): workers read the state with one atomic load per pick. Changes made
  // by record() (half-open -> closed or open) are noticed here too and logged.
  const Config& cfg = home_->config();
  const auto& snapshot = home_->snapshot();
  uint64_t now = home_->now_ms();
  for (size_t u = 0; u < cfg.upstreams.size(); u++) {
    const auto& counters = snapshot->upstreams[u].counters;
    const UpstreamConfig& uc = cfg.upstreams[u];
    for (size_t i = 0; i < counters->breakers.size(); i++) {
      breaker::Breaker* b = counters->breakers[i].get();
      uint64_t rnd = 0;
      random::bytes(reinterpret_cast<unsigned char*>(&rnd), sizeof rnd);
      b->evaluate(now, rnd);
      breaker::State after = b->state();
      auto it = breaker_seen_.find(b);
      breaker::State before = it == breaker_seen_.end() ? breaker::State::kClosed : it->second;
      breaker_seen_[b] = after;
      if (after == before) continue;
      static const char* kNames[] = {"closed", "half_open", "open"};
      const std::string& server = i < uc.servers.size() ? uc.servers[i].text : uc.backup[i - uc.servers.size()].text;
      log::event(after == breaker::State::kOpen ? "warn" : "info", "breaker_state", [&](log::Line& l) {
        l.str("upstream", uc.name).str("server", server).str("from", kNames[static_cast<int>(before)])
            .str("to", kNames[static_cast<int>(after)]);
      });
    }
  }
}

}  // namespace fg::gateway
