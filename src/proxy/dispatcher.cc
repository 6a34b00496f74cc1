// Dispatch of parked tickets and reclaim. Each ticket's delivery with its retries is in
// delivery.cc; the failure webhook's posts are in webhook.cc.
#include "proxy/dispatcher.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "core/log.h"
#include "loop/handles.h"
#include "net/stream_write.h"
#include "proxy/delivery.h"
#include "proxy/upstream_pool.h"
#include "proxy/worker_state.h"

namespace fg::proxy {
namespace {

constexpr uint64_t kIdlePollMs = 50;       // read again this soon when the queue looked empty
constexpr uint64_t kSampleMs = 1000;       // depth and dispatch-rate sampling
constexpr uint64_t kPromoteMs = 1000;      // retry set: looked at least this often
constexpr uint64_t kPromoteMinMs = 20;     // ... and at most this often

}  // namespace


Dispatcher::Dispatcher(WorkerState* worker, std::string route) : worker_(worker), route_(std::move(route)) {
  char host[64] = {0};
  gethostname(host, sizeof host - 1);
  // One consumer name per worker of this process: pending entries of a dead process
  // are found by XAUTOCLAIM, whoever asks.
  consumer_ = std::string(host) + "-" + std::to_string(getpid()) + "-" + std::to_string(worker->id());
  read_timer_ = loop::new_timer(worker->loop(), this);
  reclaim_timer_ = loop::new_timer(worker->loop(), this);
  sample_timer_ = loop::new_timer(worker->loop(), this);
  promote_timer_ = loop::new_timer(worker->loop(), this);
}

Dispatcher::~Dispatcher() {
  if (webhook_pool_) worker_->keep_pool(std::move(webhook_pool_));
}

const RouteConfig* Dispatcher::route_config() const {
  int i = route_index();
  if (i < 0) return nullptr;
  const RouteConfig& rc = worker_->config().routes[static_cast<size_t>(i)];
  return rc.queued() ? &rc : nullptr;
}

int Dispatcher::route_index() const {
  const auto& routes = worker_->config().routes;
  for (size_t i = 0; i < routes.size(); i++)
    if (routes[i].name == route_) return static_cast<int>(i);
  return -1;
}

void Dispatcher::start() {
  schedule_read(0);
  const RouteConfig* rc = route_config();
  uint64_t every = rc ? std::max<uint64_t>(rc->queue.processing_timeout_ms / 2, 200) : 1000;
  uv_timer_start(reclaim_timer_, on_reclaim_timer, every, every);
  uv_timer_start(sample_timer_, on_sample_timer, 0, kSampleMs);
  uv_timer_start(promote_timer_, on_promote_timer, 0, 0);
}

void Dispatcher::set_leading(bool leading, queue::Fence fence) {
  fence_ = std::move(fence);
  if (leading_ == leading) return;
  leading_ = leading;
  if (leading) schedule_read(0);
}

void Dispatcher::take_over(uint64_t min_idle_ms, uint64_t window_ms) {
  takeover_idle_ms_ = std::max<uint64_t>(min_idle_ms, 100);
  takeover_until_ms_ = net::mono_ns() / 1000000 + window_ms;
  const RouteConfig* rc = route_config();
  uint64_t every = rc ? std::max<uint64_t>(rc->queue.processing_timeout_ms / 2, 200) : 1000;
  uv_timer_start(reclaim_timer_, on_reclaim_timer, 100, std::min(every, takeover_idle_ms_ / 2));
}

void Dispatcher::stop(std::function<void()> on_idle) {
  if (stopping_) return;
  stopping_ = true;
  if (on_idle) on_idle_ = std::move(on_idle);
  uv_timer_stop(read_timer_);
  uv_timer_stop(reclaim_timer_);
  uv_timer_stop(sample_timer_);
  uv_timer_stop(promote_timer_);
  // Deliveries that have not reached the shop yet are left pending (reclaimed later);
  // those on the wire finish.
  std::vector<Delivery*> waiting;
  for (auto* d : deliveries_)
    if (!d->sending()) waiting.push_back(d);
  for (auto* d : waiting) d->abandon();
  maybe_idle();
}

void Dispatcher::force_stop() {
  stop(nullptr);
  std::vector<Delivery*> all(deliveries_.begin(), deliveries_.end());
  for (auto* d : all) d->abandon();
  maybe_idle();
}

void Dispatcher::maybe_idle() {
  if (!stopping_ || closed_ || !deliveries_.empty() || reading_ || promoting_) return;
  closed_ = true;
  loop::close_timer(read_timer_);
  loop::close_timer(reclaim_timer_);
  loop::close_timer(sample_timer_);
  loop::close_timer(promote_timer_);
  if (webhook_pool_) worker_->keep_pool(std::move(webhook_pool_));
  auto cb = std::move(on_idle_);
  if (cb) cb();
}

void Dispatcher::nudge() {
  if (!stopping_ && !reading_) schedule_read(0);
}

void Dispatcher::schedule_read(uint64_t ms) {
  if (stopping_) return;
  uv_timer_start(read_timer_, on_read_timer, ms, 0);
}

void Dispatcher::on_read_timer(uv_timer_t* t) { static_cast<Dispatcher*>(t->data)->read(); }
void Dispatcher::on_reclaim_timer(uv_timer_t* t) { static_cast<Dispatcher*>(t->data)->reclaim(); }
void Dispatcher::on_sample_timer(uv_timer_t* t) { static_cast<Dispatcher*>(t->data)->sample_depth(); }
void Dispatcher::on_promote_timer(uv_timer_t* t) { static_cast<Dispatcher*>(t->data)->promote(); }

void Dispatcher::promote() {
  constexpr uint64_t kBatch = 100;
  const RouteConfig* rc = route_config();
  redis::Client* redis = worker_->redis();
  if (stopping_ || promoting_) return;
  // Only the route's dispatch leader promotes, behind its fencing token (a deposed
  // leader's promotion is refused).
  if (rc == nullptr || redis == nullptr || !redis->connected() || !leading_) {
    uv_timer_start(promote_timer_, on_promote_timer, kPromoteMs, 0);
    return;
  }
  // Every route is looked at, also one without a schedule now: tickets parked under an
  // earlier config are still owed their delivery. The script is atomic, so two
  // dispatchers promoting the same route (a leader change) move each ticket once.
  promoting_ = true;
  queue::promote(
      *redis, worker_->retry_scripts(), queue::Keys{worker_->config().redis.prefix}, route_, log::wall_ms(), kBatch,
      [g = anchor_.guard()](const queue::Promoted& p) {
        if (Dispatcher* self = g.get()) self->on_promoted(p.ok, p.moved, p.next_due_ms);
      },
      fence_);
}

void Dispatcher::on_promoted(bool ok, int64_t moved, int64_t next_due_ms) {
  promoting_ = false;
  if (stopping_) {
    maybe_idle();
    return;
  }
  if (ok && moved > 0 && !reading_) schedule_read(0);
  uint64_t next = kPromoteMs;
  if (ok && moved >= 100) {
    next = 0;  // a full batch: more may be due
  } else if (ok && next_due_ms >= 0) {
    uint64_t now = log::wall_ms();
    uint64_t due = static_cast<uint64_t>(next_due_ms);
    next = due <= now ? 0 : std::min<uint64_t>(kPromoteMs, due - now);
  }
  uv_timer_start(promote_timer_, on_promote_timer, std::max<uint64_t>(next, kPromoteMinMs), 0);
}

void Dispatcher::ensure_group() {
  redis::Client* redis = worker_->redis();
  if (redis == nullptr || !redis->connected()) return;
  queue::Keys keys{worker_->config().redis.prefix};
  reading_ = true;
  redis->command({"XGROUP", "CREATE", keys.stream(route_), queue::kGroup, "0", "MKSTREAM"},
                 [g = anchor_.guard()](redis::Failure f, redis::Reply& r) {
                   if (Dispatcher* self = g.get()) self->on_group_created(f, r);
                 });
}

void Dispatcher::on_group_created(redis::Failure f, redis::Reply& r) {
  reading_ = false;
  if (f == redis::Failure::kNone && (!r.is_error() || r.str.find("BUSYGROUP") != std::string::npos))
    group_ready_ = true;
  if (stopping_) {
    maybe_idle();
    return;
  }
  schedule_read(group_ready_ ? 0 : 500);
}

void Dispatcher::read() {
  if (stopping_ || reading_ || !leading_) return;
  const RouteConfig* rc = route_config();
  redis::Client* redis = worker_->redis();
  if (rc == nullptr) return;
  if (redis == nullptr || !redis->connected()) {
    group_ready_ = false;
    schedule_read(500);
    return;
  }
  if (!group_ready_) {
    ensure_group();
    return;
  }
  size_t cap = static_cast<size_t>(rc->queue.concurrency);
  if (deliveries_.size() >= cap) return;  // delivery_done() reads again
  size_t want = cap - deliveries_.size();
  // Take out of the stream only what the budget can serve now: an entry read here is
  // idle-timed by Redis from this moment, and one waiting too long for a token would
  // be reclaimed (and sent twice) by another worker.
  int idx = route_index();
  if (idx >= 0) {
    const auto& rt = worker_->snapshot()->routes[static_cast<size_t>(idx)];
    if (rt.budget || rt.shared) {
      uint64_t remaining = rt.shared ? rt.shared->available() : rt.budget->peek(net::mono_ns()).remaining;
      size_t ready = static_cast<size_t>(remaining) + 1;
      size_t waiting = 0;
      for (auto* d : deliveries_)
        if (!d->sending()) waiting++;
      want = std::min(want, ready > waiting ? ready - waiting : 0);
      if (want == 0) return;  // a waiting delivery reads again when it is done
    }
  }
  queue::Keys keys{worker_->config().redis.prefix};
  reading_ = true;
  redis->command({"XREADGROUP", "GROUP", queue::kGroup, consumer_, "COUNT", std::to_string(want), "STREAMS",
                  keys.stream(route_), ">"},
                 [g = anchor_.guard()](redis::Failure f, redis::Reply& r) {
                   if (Dispatcher* self = g.get()) self->on_read(f, r);
                 });
}

void Dispatcher::on_read(redis::Failure f, redis::Reply& r) {
  reading_ = false;
  if (stopping_) {
    maybe_idle();
    return;
  }
  if (f != redis::Failure::kNone) {
    schedule_read(200);
    return;
  }
  if (r.is_error()) {
    // NOGROUP: Redis lost the group (restarted without persistence).
    if (r.str.find("NOGROUP") != std::string::npos) group_ready_ = false;
    schedule_read(200);
    return;
  }
  size_t before = deliveries_.size();
  // [[stream, [[id, [field, value, ...]], ...]]]
  if (r.type == redis::Reply::Type::kArray && !r.elements.empty() && r.elements[0].elements.size() >= 2)
    handle_entries(&r.elements[0].elements[1], false);
  bool got = deliveries_.size() > before;
  schedule_read(got ? 0 : kIdlePollMs);
}

void Dispatcher::handle_entries(const void* entries_reply, bool reclaimed) {
  const auto& entries = *static_cast<const redis::Reply*>(entries_reply);
  for (const auto& e : entries.elements) {
    if (e.elements.size() < 2) continue;
    const std::string& id = e.elements[0].str;
    std::string ticket;
    const auto& fields = e.elements[1].elements;
    for (size_t i = 0; i + 1 < fields.size(); i += 2)
      if (fields[i].str == "t") ticket = fields[i + 1].str;
    if (ticket.empty() || active_entries_.count(id)) continue;
    active_entries_.insert(id);
    auto* d = new Delivery(this, id, ticket, reclaimed);
    deliveries_.insert(d);
    d->begin();
  }
}

void Dispatcher::reclaim() {
  const RouteConfig* rc = route_config();
  redis::Client* redis = worker_->redis();
  if (!leading_ || stopping_ || rc == nullptr || redis == nullptr || !redis->connected() || !group_ready_) return;
  if (deliveries_.size() >= rc->queue.concurrency) return;
  queue::Keys keys{worker_->config().redis.prefix};
  size_t want = rc->queue.concurrency - deliveries_.size();
  // Right after a leader change the previous dispatcher's entries are reclaimed as soon
  // as they have been idle for the takeover's min idle: that instance is gone.
  uint64_t min_idle = rc->queue.processing_timeout_ms;
  if (net::mono_ns() / 1000000 < takeover_until_ms_) min_idle = std::min(min_idle, takeover_idle_ms_);
  redis->command({"XAUTOCLAIM", keys.stream(route_), queue::kGroup, consumer_,
                  std::to_string(min_idle), "0-0", "COUNT", std::to_string(want)},
                 [g = anchor_.guard(), want](redis::Failure f, redis::Reply& r) {
                   Dispatcher* self = g.get();
                   if (self == nullptr || self->stopping_ || f != redis::Failure::kNone || r.is_error()) return;
                   // [next-cursor, [[id, [fields]], ...], [deleted ids]]
                   if (r.type == redis::Reply::Type::kArray && r.elements.size() >= 2) {
                     self->handle_entries(&r.elements[1], true);
                     // More idle entries wait (a cursor to continue from, or a full
                     // batch): take the next ones as soon as deliveries free up, not
                     // only at the next tick, so that a backlog of abandoned deliveries
                     // (Redis timeouts under load) drains at the dispatch rate.
                     self->reclaim_more_ = r.elements[0].str != "0-0" || r.elements[1].elements.size() >= want;
                   }
                 });
}

void Dispatcher::sample_depth() {
  // Depth = enqueued - taken, shared by the whole cluster. The instance's dispatcher
  // (gateway::InstanceDuties) samples it, and the dispatch rate, for every worker.
  redis::Client* redis = worker_->redis();
  int idx = route_index();
  if (redis == nullptr || !redis->connected() || idx < 0) return;
  auto state = worker_->snapshot()->routes[static_cast<size_t>(idx)].queue;
  if (!state) return;
  queue::Keys keys{worker_->config().redis.prefix};
  redis->command({"MGET", keys.enq(route_), keys.taken(route_)}, [state](redis::Failure f, redis::Reply& r) {
    if (f != redis::Failure::kNone || r.type != redis::Reply::Type::kArray || r.elements.size() < 2) return;
    int64_t enq = std::strtoll(r.elements[0].str.c_str(), nullptr, 10);
    int64_t taken = std::strtoll(r.elements[1].str.c_str(), nullptr, 10);
    state->observe(enq, taken, net::mono_ns());
  });
  queue::count_dead(*redis, keys, route_, [state](bool ok, int64_t n) {
    if (ok) state->dead.store(n, std::memory_order_relaxed);
  });
  queue::count_parked(*redis, keys, route_, [state](bool ok, int64_t n) {
    if (ok) state->parked.store(n, std::memory_order_relaxed);
  });
}

void Dispatcher::delivery_done(Delivery* d) {
  deliveries_.erase(d);
  active_entries_.erase(d->entry());
  d->retire();
  if (stopping_) {
    maybe_idle();
    return;
  }
  if (reclaim_more_) {
    reclaim_more_ = false;
    reclaim();
  }
  if (!reading_) schedule_read(0);
}

}  // namespace fg::proxy
