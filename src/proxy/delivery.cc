// A parked ticket's delivery: budget, start, exchange, retries, final write.
#include "proxy/delivery.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/log.h"
#include "http/serialize.h"
#include "idempotency/store.h"
#include "loop/handles.h"
#include "net/stream_write.h"
#include "proxy/worker_state.h"

namespace fg::proxy {
namespace {

constexpr size_t kMaxStoredResponse = 4 * 1024 * 1024;
constexpr uint64_t kSharedBudgetRetryMs = 5;  // a cluster budget refused: its lease refill is on the way

double uniform01() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

std::string json_escape(std::string_view s) {
  std::string out;
  http::append_json_escaped(out, s);
  return out;
}

}  // namespace

Delivery::Delivery(Dispatcher* d, std::string entry, std::string ticket, bool reclaimed)
    : d_(d), entry_(std::move(entry)), ticket_(std::move(ticket)), reclaimed_(reclaimed), fence_(d->fence()) {
  timer_ = loop::new_timer(d_->worker()->loop(), this);
  snap_ = d_->worker()->snapshot();
}

Delivery::~Delivery() { loop::close_timer(timer_); }

void Delivery::begin() { wait_budget(); }

const RouteConfig* Delivery::route() const { return d_->route_config(); }

void Delivery::retire() {
  uv_timer_stop(timer_);
  anchor_.revoke();
  d_->worker()->reaper().retire(this);
}

void Delivery::abandon() {
  uv_timer_stop(timer_);
  if (conn_) {
    UpstreamConn* c = conn_;
    conn_ = nullptr;
    c->pool()->release(c, false);
  }
  d_->delivery_done(this);
}

void Delivery::wait_budget() {
  const RouteConfig* rc = route();
  int idx = d_->route_index();
  if (rc == nullptr || idx < 0) {
    abandon();
    return;
  }
  const auto& rt = d_->worker()->snapshot()->routes[static_cast<size_t>(idx)];
  if (rt.shared) {
    // The cluster budget: a token from this instance's lease (no Redis call here). The
    // lease is refilled within a few ms of running low; until then, look again soon.
    if (!rt.shared->try_take(net::mono_ns())) {
      uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<Delivery*>(t->data)->wait_budget(); },
                     kSharedBudgetRetryMs, 0);
      return;
    }
  } else if (rt.budget) {
    // A timer wakes us a little late (whole milliseconds); judging the wake-up at the
    // instant it was due keeps a drain at exactly `rate` even with burst = 0, where
    // every late arrival would otherwise lose its lateness from the budget.
    uint64_t now = net::mono_ns();
    uint64_t at = wake_due_ns_ && wake_due_ns_ < now ? wake_due_ns_ : now;
    admission::Decision dec = rt.budget->try_acquire(at);
    if (!dec.admitted) {
      wake_due_ns_ = now + dec.retry_after_ns;
      uint64_t ms = (dec.retry_after_ns + 999999) / 1000000;
      uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<Delivery*>(t->data)->wait_budget(); }, ms, 0);
      return;
    }
    wake_due_ns_ = 0;
  }
  if (started_) {
    send();
    return;
  }
  start_ticket();
}

void Delivery::start_ticket() {
  const RouteConfig* rc = route();
  if (rc == nullptr) {
    abandon();
    return;
  }
  redis::Client* redis = d_->worker()->redis();
  if (redis == nullptr || !redis->connected()) {
    abandon();  // stays pending; reclaimed when Redis is back
    return;
  }
  queue::Keys keys{d_->worker()->config().redis.prefix};
  uint64_t now = log::wall_ms();
  queue::start(*redis, d_->worker()->queue_scripts(), keys, d_->route(), entry_, ticket_, now, rc->queue.max_wait_ms,
               [g = anchor_.guard()](queue::Delivery& del) {
                 // A stopped dispatcher lets its waiting deliveries go while their start
                 // is still on its way: the entry stays pending and is reclaimed later.
                 if (Delivery* self = g.get()) self->on_started(del);
               },
               reclaimed_, fence_);
}

void Delivery::on_started(queue::Delivery& del) {
  const RouteConfig* rc = route();
  auto& reg = metrics::Registry::get();
  int wid = d_->worker()->id();
  int idx = d_->route_index();
  if (rc == nullptr || idx < 0) {
    abandon();
    return;
  }
  const auto& rt = d_->worker()->snapshot()->routes[static_cast<size_t>(idx)];
  switch (del.kind) {
    case queue::Delivery::Kind::kUnavailable:
      // Redis refused or did not answer (OOM, LOADING, BUSY, a timeout, a lost
      // connection). The entry is ours and the token is spent: try the start again
      // soon, keeping the entry claimed, rather than leaving it for another
      // consumer to reclaim after processing_timeout. A stopping dispatcher, or
      // Redis gone, leaves it pending.
      if (d_->stopping_ || d_->worker()->redis() == nullptr || !d_->worker()->redis()->connected()) {
        abandon();
        return;
      }
      redis_backoff([](Delivery* self) { self->start_ticket(); });
      return;
    case queue::Delivery::Kind::kFenced:
      // Another instance leads the route now and may already deliver this entry:
      // leave it to that one.
      deposed();
      return;
    case queue::Delivery::Kind::kSkip:
      d_->delivery_done(this);
      return;
    case queue::Delivery::Kind::kExpired:
      reg.add(wid, rt.tickets[net::kTicketExpired]);
      webhook("expired", 0);
      d_->delivery_done(this);
      return;
    case queue::Delivery::Kind::kGo:
      break;
  }
  started_ = true;
  del_ = std::move(del);
  if (reclaimed_) reg.add(wid, rt.tickets[net::kTicketReclaimed]);
  uint64_t now = log::wall_ms();
  // A ticket back from the retry set or re-delivered waited for its retry, not in the queue.
  if (del_.attempts <= 1 && del_.requeued_ms == 0 && now >= static_cast<uint64_t>(del_.created_ms)) {
    reg.observe(wid, rt.ticket_wait, static_cast<double>(now - static_cast<uint64_t>(del_.created_ms)) / 1000.0);
  }
  send();
}

void Delivery::send() {
  const RouteConfig* rc = route();
  if (rc == nullptr) {
    abandon();
    return;
  }
  snap_ = d_->worker()->snapshot();
  upstream_index_ = rc->upstream_index;
  pool_ = &d_->worker()->pool(upstream_index_);
  tried_.assign(pool_->server_count(), false);
  status_ = 0;
  resp_headers_.clear();
  resp_body_.clear();
  retry_after_ms_ = 0;
  connect();
}

void Delivery::connect() {
  UpstreamConn* c = nullptr;
  if (!pool_->any_available() && !d_->stopping_) {
    // No server can take it now (breakers open, health checks down, all busy): wait
    // for one without spending an attempt, keeping the entry claimed meanwhile.
    if (redis::Client* redis = d_->worker()->redis())
      queue::keep_claimed(*redis, d_->worker()->queue_scripts(), queue::Keys{snap_->config->redis.prefix},
                          d_->route(), entry_, d_->consumer(), fence_);
    uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<Delivery*>(t->data)->send(); }, 250, 0);
    return;
  }
  auto r = pool_->acquire(this, tried_, &c);
  if (r == UpstreamPool::Acquire::kBusy || r == UpstreamPool::Acquire::kNoServer) {
    outcome(UpstreamError::kConnect, "connect");
    return;
  }
  conn_ = c;
  if (r == UpstreamPool::Acquire::kReady) write_request();
}

void Delivery::write_request() {
  const UpstreamConfig& up = snap_->config->upstreams[upstream_index_];
  uv_buf_t bufs[2] = {net::buf_of(del_.header_lines.data(), del_.header_lines.size()),
                      net::buf_of(del_.body.data(), del_.body.size())};
  conn_->expect_response(del_.method == "HEAD",
                         snap_->upstreams[upstream_index_].timeout_ms(up, d_->worker()->now_ms()));
  conn_->write(bufs, del_.body.empty() ? 1 : 2);
}

void Delivery::on_upstream_connected(UpstreamConn* c) {
  if (c == conn_) write_request();
}

void Delivery::on_upstream_head(http::ResponseHead& h) {
  status_ = h.status;
  // Deliveries feed the same breakers as live traffic.
  if (conn_) pool_->record(conn_->server(), h.status >= 500 ? breaker::Outcome::kError : breaker::Outcome::kSuccess);
  reason_ = h.reason.empty() ? std::string(http::reason_phrase(h.status)) : h.reason;
  std::string tokens = http::connection_tokens(h.headers);
  for (const auto& hd : h.headers) {
    if (http::is_hop_by_hop(hd.name, tokens) || http::iequals(hd.name, "Content-Length")) continue;
    if (http::iequals(hd.name, "Retry-After")) {
      char* end = nullptr;
      long secs = std::strtol(hd.value.c_str(), &end, 10);
      if (end != hd.value.c_str() && secs > 0) retry_after_ms_ = static_cast<uint64_t>(secs) * 1000;
    }
    resp_headers_ += hd.name + ": " + hd.value + "\r\n";
  }
}

void Delivery::on_upstream_body(const char* data, size_t len) {
  if (resp_body_.size() + len <= kMaxStoredResponse) resp_body_.append(data, len);
  else too_large_ = true;
}

void Delivery::on_upstream_complete() {
  UpstreamConn* c = conn_;
  conn_ = nullptr;
  pool_->release(c, true);
  const RetryConfig& retry = snap_->config->upstreams[upstream_index_].retry;
  bool retryable = std::find(retry.on_status.begin(), retry.on_status.end(), status_) != retry.on_status.end();
  if (retryable) {
    retry_or_fail("upstream_status_" + std::to_string(status_));
    return;
  }
  complete();
}

void Delivery::on_upstream_error(UpstreamError kind, bool) {
  if (conn_) {
    pool_->record(conn_->server(),
                  kind == UpstreamError::kTimeout ? breaker::Outcome::kTimeout : breaker::Outcome::kError);
  }
  conn_ = nullptr;
  if (kind == UpstreamError::kConnect) {
    // Nothing reached that server: try the next one before counting an attempt.
    bool untried = std::find(tried_.begin(), tried_.end(), false) != tried_.end();
    if (untried) {
      connect();
      return;
    }
  }
  outcome(kind, upstream_error_name(kind));
}

void Delivery::outcome(UpstreamError kind, const std::string& reason) {
  const RetryConfig& retry = snap_->config->upstreams[upstream_index_].retry;
  bool retryable = (kind == UpstreamError::kConnect && retry.on_connect) ||
                   (kind == UpstreamError::kTimeout && retry.on_timeout) ||
                   ((kind == UpstreamError::kReset || kind == UpstreamError::kBadResponse) &&
                    std::find(retry.on_status.begin(), retry.on_status.end(), 502) != retry.on_status.end());
  status_ = 0;
  if (retryable) retry_or_fail(reason);
  else fail(reason);
}

void Delivery::retry_or_fail(const std::string& reason) {
  const RouteConfig* rc = route();
  if (rc != nullptr && rc->retry_schedule) {
    retry_on_schedule(*rc, reason);
    return;
  }
  const RetryConfig& retry = snap_->config->upstreams[upstream_index_].retry;
  if (rc == nullptr || static_cast<uint64_t>(del_.attempts) >= retry.attempts || d_->stopping_) {
    fail(reason);
    return;
  }
  // Full jitter over an exponentially growing window, never shorter than what the
  // upstream asked for with Retry-After, and short enough that the entry is not
  // reclaimed by another worker while it waits.
  double window = static_cast<double>(retry.backoff_ms) * std::pow(2.0, static_cast<double>(del_.attempts - 1));
  window = std::min(window, static_cast<double>(retry.max_backoff_ms));
  uint64_t wait = static_cast<uint64_t>(window * uniform01());
  wait = std::max(wait, retry_after_ms_);
  wait = std::min(wait, rc->queue.processing_timeout_ms / 2);
  del_.attempts++;
  redis::Client* redis = d_->worker()->redis();
  if (redis)
    queue::count_retry(*redis, d_->worker()->queue_scripts(), queue::Keys{snap_->config->redis.prefix}, d_->route(),
                       entry_, d_->consumer(), ticket_, fence_);
  uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<Delivery*>(t->data)->wait_budget(); }, wait, 0);
}

void Delivery::retry_on_schedule(const RouteConfig& rc, const std::string& reason) {
  const queue::RetrySchedule& sched = *rc.retry_schedule;
  const RetryConfig& retry = snap_->config->upstreams[upstream_index_].retry;
  uint64_t failed = static_cast<uint64_t>(std::max<int64_t>(del_.attempts, 1));
  uint64_t now = log::wall_ms();
  if (sched.exhausted(failed)) {
    move_out(Move::kBury, reason, now, 0);
    return;
  }
  uint64_t wait = std::max(sched.next_delay_ms(failed, uniform01()), retry_after_ms_);
  uint64_t short_wait = std::min(rc.queue.processing_timeout_ms / 2, retry.max_backoff_ms);
  if (d_->stopping_ || wait > short_wait) {
    move_out(Move::kPark, reason, now, now + wait);
    return;
  }
  del_.attempts++;
  if (redis::Client* redis = d_->worker()->redis())
    queue::count_retry(*redis, d_->worker()->queue_scripts(), queue::Keys{snap_->config->redis.prefix}, d_->route(),
                       entry_, d_->consumer(), ticket_, fence_);
  uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<Delivery*>(t->data)->wait_budget(); }, wait, 0);
}

void Delivery::move_out(Move how, const std::string& reason, uint64_t now_ms, uint64_t due_ms) {
  finishing_ = true;
  move_ = {how, now_ms, due_ms};
  fin_reason_ = reason;
  write_move();
}

void Delivery::write_move() {
  redis::Client* redis = d_->worker()->redis();
  if (route() == nullptr || redis == nullptr) {
    abandon();
    return;
  }
  queue::Keys keys{snap_->config->redis.prefix};
  auto cb = [g = anchor_.guard(), hold = d_->worker()->hold_redis()](queue::MoveResult r) {
    hold();
    if (Delivery* self = g.get()) self->on_moved(r);
  };
  if (move_.how == Move::kBury)
    queue::bury(*redis, d_->worker()->retry_scripts(), keys, d_->route(), entry_, ticket_, fin_reason_, move_.now_ms,
                std::move(cb), fence_);
  else
    queue::park(*redis, d_->worker()->retry_scripts(), keys, d_->route(), entry_, ticket_, fin_reason_, move_.now_ms,
                move_.due_ms, std::move(cb), fence_);
}

void Delivery::on_moved(queue::MoveResult r) {
  if (r == queue::MoveResult::kFenced) {
    deposed();
    return;
  }
  if (r == queue::MoveResult::kUnavailable) {
    if (d_->worker()->redis() == nullptr || (d_->stopping_ && !d_->worker()->redis()->connected())) {
      abandon();  // stays pending; reclaimed and attempted again later
      return;
    }
    redis_backoff([](Delivery* self) { self->write_move(); });
    return;
  }
  int idx = d_->route_index();
  if (r == queue::MoveResult::kMoved && idx >= 0) {
    const auto& rt = d_->worker()->snapshot()->routes[static_cast<size_t>(idx)];
    bool dead = move_.how == Move::kBury;
    metrics::Registry::get().add(d_->worker()->id(), rt.tickets[dead ? net::kTicketDead : net::kTicketParked]);
    log::event(dead ? "warn" : "info", dead ? "ticket_dead" : "ticket_parked", [&](log::Line& l) {
      l.str("route", d_->route());
      l.str("ticket", ticket_);
      l.num("attempts", del_.attempts);
      l.str("reason", fin_reason_);
      if (!dead) l.num("retry_in_ms", static_cast<int64_t>(move_.due_ms - move_.now_ms));
    });
  }
  d_->delivery_done(this);
}

void Delivery::complete() {
  std::string blob = idempotency::encode_response(status_, reason_, resp_headers_, too_large_ ? "" : resp_body_);
  // A 5xx answer that was not retried is still the shop's answer for the ticket,
  // but not a final one for the idempotency key (a retry by the client may succeed).
  bool store_idem = status_ < 500 && !too_large_;
  finish("done", blob, "", store_idem);
}

void Delivery::fail(const std::string& reason) {
  std::string blob;
  if (status_ > 0) blob = idempotency::encode_response(status_, reason_, resp_headers_, resp_body_);
  webhook(reason, del_.attempts);  // before finish(): finish() ends this object
  finish("failed", blob, reason, false);
}

void Delivery::finish(const char* state, const std::string& blob, const std::string& reason, bool store_idem) {
  finishing_ = true;
  fin_state_ = state;
  fin_blob_ = blob;
  fin_reason_ = reason;
  fin_store_idem_ = store_idem;
  write_final();
}

void Delivery::write_final() {
  const RouteConfig* rc = route();
  int idx = d_->route_index();
  redis::Client* redis = d_->worker()->redis();
  if (rc == nullptr || idx < 0 || redis == nullptr) {
    abandon();
    return;
  }
  queue::finish(*redis, d_->worker()->queue_scripts(), queue::Keys{snap_->config->redis.prefix}, d_->route(),
                entry_, ticket_, fin_state_, fin_blob_, fin_reason_, log::wall_ms(), rc->queue.ticket_ttl_ms,
                fin_store_idem_, rc->idempotency.ttl_ms,
                [g = anchor_.guard(), hold = d_->worker()->hold_redis()](queue::Written w) {
                  hold();
                  if (Delivery* self = g.get()) self->on_final_written(w);
                },
                fence_);
}

void Delivery::deposed() {
  log::event("warn", "dispatch_fenced", [&](log::Line& l) {
    l.str("route", d_->route()).str("ticket", ticket_).num("token", static_cast<int64_t>(fence_.token));
  });
  abandon();
}

void Delivery::on_final_written(queue::Written w) {
  if (w == queue::Written::kFenced) {
    deposed();
    return;
  }
  if (w != queue::Written::kOk) {
    if (d_->worker()->redis() == nullptr) {
      abandon();
      return;
    }
    redis_backoff([](Delivery* self) { self->write_final(); });
    return;
  }
  int idx = d_->route_index();
  if (idx >= 0) {
    const auto& rt = d_->worker()->snapshot()->routes[static_cast<size_t>(idx)];
    metrics::Registry::get().add(d_->worker()->id(),
                                 rt.tickets[fin_state_ == "done" ? net::kTicketDone : net::kTicketFailed]);
  }
  d_->delivery_done(this);
}

void Delivery::redis_backoff(void (*next)(Delivery*)) {
  redis_backoff_ms_ = redis_backoff_ms_ == 0 ? 100 : std::min<uint64_t>(redis_backoff_ms_ * 2, 2000);
  if (redis::Client* redis = d_->worker()->redis(); redis && redis->connected())
    queue::keep_claimed(*redis, d_->worker()->queue_scripts(), queue::Keys{snap_->config->redis.prefix},
                        d_->route(), entry_, d_->consumer(), fence_);
  backoff_next_ = next;
  uv_timer_start(timer_, [](uv_timer_t* t) {
    auto* self = static_cast<Delivery*>(t->data);
    self->backoff_next_(self);
  }, redis_backoff_ms_, 0);
}

void Delivery::webhook(const std::string& reason, int64_t attempts) {
  const RouteConfig* rc = route();
  if (rc == nullptr || rc->on_failure_webhook.empty()) return;
  std::string body = "{\"ticket\":\"" + json_escape(ticket_) + "\",\"route\":\"" + json_escape(rc->name) +
                     "\",\"status\":\"failed\",\"reason\":\"" + json_escape(reason) +
                     "\",\"attempts\":" + std::to_string(attempts) + ",\"method\":\"" + json_escape(del_.method) +
                     "\",\"target\":\"" + json_escape(del_.target) + "\"}";
  d_->post_webhook(rc->on_failure_webhook, std::move(body));
}

}  // namespace fg::proxy
