// Dispatch of parked tickets, deliveries with retries, and reclaim. The failure
// webhook's posts are in webhook.cc.
#include "proxy/dispatcher.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "core/log.h"
#include "http/serialize.h"
#include "idempotency/store.h"
#include "net/stream_write.h"
#include "proxy/worker_state.h"
#include "proxy/timers.h"
#include "proxy/upstream_pool.h"

namespace fg::proxy {
namespace {

constexpr uint64_t kIdlePollMs = 50;       // read again this soon when the queue looked empty
constexpr uint64_t kSampleMs = 1000;       // depth and dispatch-rate sampling
constexpr uint64_t kPromoteMs = 1000;      // retry set: looked at least this often
constexpr uint64_t kPromoteMinMs = 20;     // ... and at most this often
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

// ------------------------------------------------------------------ Delivery

// One ticket on its way to the shop: budget token, start script, HTTP exchange,
// retries, final state. Owned by its Dispatcher; deletes itself through delivery_done().
class Delivery final : public UpstreamUser {
 public:
  Delivery(Dispatcher* d, std::string entry, std::string ticket, bool reclaimed)
      : d_(d), entry_(std::move(entry)), ticket_(std::move(ticket)), reclaimed_(reclaimed), fence_(d->fence()) {
    timer_ = new_timer(d_->worker()->loop(), this);
    snap_ = d_->worker()->snapshot();
  }
  ~Delivery() override { close_timer(timer_); }

  void begin() { wait_budget(); }

  // Leaves the dispatcher: no callback reaches this object any more; the reaper frees it.
  void retire() {
    uv_timer_stop(timer_);
    anchor_.revoke();
    d_->worker()->reaper().retire(this);
  }

  // The worker is stopping: give up waiting; the entry stays pending in Redis and is
  // reclaimed later (by this instance after a restart, or by another one).
  void abandon() {
    uv_timer_stop(timer_);
    if (conn_) {
      UpstreamConn* c = conn_;
      conn_ = nullptr;
      c->pool()->release(c, false);
    }
    d_->delivery_done(this);
  }

  // On the wire to the shop, or recording its outcome: a stopping dispatcher lets it
  // finish instead of giving it up.
  bool sending() const { return conn_ != nullptr || finishing_; }
  const std::string& entry() const { return entry_; }

 private:
  const RouteConfig* route() const { return d_->route_config(); }

  void wait_budget() {
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

  // The start script, with the budget token already taken.
  void start_ticket() {
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

  void on_started(queue::Delivery& del) {
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

  void send() {
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

  void connect() {
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

  void write_request() {
    const UpstreamConfig& up = snap_->config->upstreams[upstream_index_];
    uv_buf_t bufs[2] = {net::buf_of(del_.header_lines.data(), del_.header_lines.size()),
                        net::buf_of(del_.body.data(), del_.body.size())};
    conn_->expect_response(del_.method == "HEAD",
                           snap_->upstreams[upstream_index_].timeout_ms(up, d_->worker()->now_ms()));
    conn_->write(bufs, del_.body.empty() ? 1 : 2);
  }

  // UpstreamUser
  void on_upstream_connected(UpstreamConn* c) override {
    if (c == conn_) write_request();
  }
  void on_upstream_head(http::ResponseHead& h) override {
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
  void on_upstream_body(const char* data, size_t len) override {
    if (resp_body_.size() + len <= kMaxStoredResponse) resp_body_.append(data, len);
    else too_large_ = true;
  }
  void on_upstream_complete() override {
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
  void on_upstream_error(UpstreamError kind, bool) override {
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
  void on_upstream_drained() override {}

  void outcome(UpstreamError kind, const std::string& reason) {
    const RetryConfig& retry = snap_->config->upstreams[upstream_index_].retry;
    bool retryable = (kind == UpstreamError::kConnect && retry.on_connect) ||
                     (kind == UpstreamError::kTimeout && retry.on_timeout) ||
                     ((kind == UpstreamError::kReset || kind == UpstreamError::kBadResponse) &&
                      std::find(retry.on_status.begin(), retry.on_status.end(), 502) != retry.on_status.end());
    status_ = 0;
    if (retryable) retry_or_fail(reason);
    else fail(reason);
  }

  void retry_or_fail(const std::string& reason) {
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

  // A route with a retry schedule never gives a delivery up: after `del_.attempts`
  // failed attempts it waits the schedule's next delay (in memory when that is short,
  // parked in Redis otherwise), or becomes a dead letter once the schedule is exhausted.
  void retry_on_schedule(const RouteConfig& rc, const std::string& reason) {
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

  enum class Move { kPark, kBury };
  // Parks the ticket in the retry set (due at `due_ms`) or buries it as a dead letter.
  // Like finish(), the delivery stays and keeps its entry claimed until Redis has
  // answered; a refused or lost command is tried again with backoff.
  void move_out(Move how, const std::string& reason, uint64_t now_ms, uint64_t due_ms) {
    finishing_ = true;
    move_ = {how, now_ms, due_ms};
    fin_reason_ = reason;
    write_move();
  }

  void write_move() {
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

  void on_moved(queue::MoveResult r) {
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

  void complete() {
    std::string blob = idempotency::encode_response(status_, reason_, resp_headers_, too_large_ ? "" : resp_body_);
    // A 5xx answer that was not retried is still the shop's answer for the ticket,
    // but not a final one for the idempotency key (a retry by the client may succeed).
    bool store_idem = status_ < 500 && !too_large_;
    finish("done", blob, "", store_idem);
  }

  void fail(const std::string& reason) {
    std::string blob;
    if (status_ > 0) blob = idempotency::encode_response(status_, reason_, resp_headers_, resp_body_);
    webhook(reason, del_.attempts);  // before finish(): finish() ends this object
    finish("failed", blob, reason, false);
  }

  // Records the final state. The delivery stays (and keeps its entry claimed) until
  // Redis has acknowledged the write: a refused write (OOM, READONLY, MISCONF, a
  // timeout) is tried again with backoff, because leaving the entry for a reclaim
  // would deliver the ticket to the shop a second time although its answer is known.
  void finish(const char* state, const std::string& blob, const std::string& reason, bool store_idem) {
    finishing_ = true;
    fin_state_ = state;
    fin_blob_ = blob;
    fin_reason_ = reason;
    fin_store_idem_ = store_idem;
    write_final();
  }

  void write_final() {
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

  // A write was refused for a stale fencing token: this instance was deposed. Nothing
  // was written; the entry belongs to the new leader, which delivers it again.
  void deposed() {
    log::event("warn", "dispatch_fenced", [&](log::Line& l) {
      l.str("route", d_->route()).str("ticket", ticket_).num("token", static_cast<int64_t>(fence_.token));
    });
    abandon();
  }

  void on_final_written(queue::Written w) {
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

  // Runs `next` after a backoff that doubles from 100 ms to 2 s, keeping the stream
  // entry claimed meanwhile so that no other consumer reclaims it.
  void redis_backoff(void (*next)(Delivery*)) {
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

  void webhook(const std::string& reason, int64_t attempts) {
    const RouteConfig* rc = route();
    if (rc == nullptr || rc->on_failure_webhook.empty()) return;
    std::string body = "{\"ticket\":\"" + json_escape(ticket_) + "\",\"route\":\"" + json_escape(rc->name) +
                       "\",\"status\":\"failed\",\"reason\":\"" + json_escape(reason) +
                       "\",\"attempts\":" + std::to_string(attempts) + ",\"method\":\"" + json_escape(del_.method) +
                       "\",\"target\":\"" + json_escape(del_.target) + "\"}";
    d_->post_webhook(rc->on_failure_webhook, std::move(body));
  }

  Dispatcher* d_;
  std::string entry_;
  std::string ticket_;
  bool reclaimed_;
  queue::Fence fence_;  // the dispatch lease's token when this delivery began
  bool started_ = false;
  uv_timer_t* timer_;
  std::shared_ptr<const net::Snapshot> snap_;
  queue::Delivery del_;
  UpstreamPool* pool_ = nullptr;
  UpstreamConn* conn_ = nullptr;
  size_t upstream_index_ = 0;
  std::vector<bool> tried_;
  int status_ = 0;
  std::string reason_;
  std::string resp_headers_;
  std::string resp_body_;
  bool too_large_ = false;
  uint64_t retry_after_ms_ = 0;
  uint64_t wake_due_ns_ = 0;  // when the budget said a token would be free
  // The final state being written (kept for retries of the write).
  bool finishing_ = false;
  std::string fin_state_, fin_blob_, fin_reason_;
  bool fin_store_idem_ = false;
  struct PendingMove {
    Move how = Move::kPark;
    uint64_t now_ms = 0, due_ms = 0;
  } move_;  // the park or bury being written (move_out)
  uint64_t redis_backoff_ms_ = 0;
  void (*backoff_next_)(Delivery*) = nullptr;
  net::Anchor<Delivery> anchor_{this};
};

// ------------------------------------------------------------------ Dispatcher

Dispatcher::Dispatcher(WorkerState* worker, std::string route) : worker_(worker), route_(std::move(route)) {
  char host[64] = {0};
  gethostname(host, sizeof host - 1);
  // One consumer name per worker of this process: pending entries of a dead process
  // are found by XAUTOCLAIM, whoever asks.
  consumer_ = std::string(host) + "-" + std::to_string(getpid()) + "-" + std::to_string(worker->id());
  read_timer_ = new_timer(worker->loop(), this);
  reclaim_timer_ = new_timer(worker->loop(), this);
  sample_timer_ = new_timer(worker->loop(), this);
  promote_timer_ = new_timer(worker->loop(), this);
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
  close_timer(read_timer_);
  close_timer(reclaim_timer_);
  close_timer(sample_timer_);
  close_timer(promote_timer_);
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
