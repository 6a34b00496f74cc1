// What the instance does once (see instance_duties.h).
#include "gateway/instance_duties.h"

#include "core/log.h"
#include "proxy/worker_state.h"
#include "proxy/dispatcher.h"
#include "proxy/health_checker.h"

namespace fg::gateway {

InstanceDuties::InstanceDuties(proxy::WorkerState* home, std::function<void()> on_idle)
    : home_(home), on_idle_(std::move(on_idle)) {}

InstanceDuties::~InstanceDuties() = default;

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

void InstanceDuties::tick() { evaluate_breakers(); }

void InstanceDuties::drain() {
  // Dispatchers stop taking tickets; deliveries on the wire finish (the rest stay
  // pending in Redis and are reclaimed later).
  draining_ = true;
  std::vector<std::unique_ptr<proxy::Dispatcher>> stopping = std::move(dispatchers_);
  dispatchers_.clear();
  for (auto& d : stopping) stop_dispatcher(std::move(d));
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
}

void InstanceDuties::sync_dispatchers() {
  if (draining_) return;
  const Config& cfg = home_->config();
  // Keep dispatchers of routes still queued, start new ones, stop the others.
  std::vector<std::unique_ptr<proxy::Dispatcher>> keep;
  for (auto& d : dispatchers_) {
    bool wanted = false;
    for (const auto& r : cfg.routes) wanted = wanted || (r.name == d->route() && r.queued() && cfg.redis.enabled);
    if (wanted) {
      keep.push_back(std::move(d));
    } else {
      stop_dispatcher(std::move(d));
    }
  }
  dispatchers_ = std::move(keep);
  // One dispatcher per instance: deliveries leave in queue order, the route budget is
  // shared with live traffic either way.
  if (!cfg.redis.enabled) return;
  for (const auto& r : cfg.routes) {
    if (!r.queued() || dispatcher(r.name)) continue;
    dispatchers_.push_back(std::make_unique<proxy::Dispatcher>(home_, r.name));
    dispatchers_.back()->start();
  }
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
      uv_random(nullptr, nullptr, &rnd, sizeof rnd, 0, nullptr);
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
