// Worker threads: loop setup, accept, snapshot switches, graceful drain and teardown.
#include "net/worker.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <random>

#include "gateway/instance_duties.h"
#include "net/listener.h"
#include "proxy/client_conn.h"

namespace fg::net {
namespace {

constexpr uint64_t kTickMs = 100;

std::string random_hex(size_t bytes) {
  std::string out;
  unsigned char buf[16];
  if (bytes > sizeof buf) bytes = sizeof buf;
  if (uv_random(nullptr, nullptr, buf, bytes, 0, nullptr) != 0) {
    std::random_device rd;
    for (size_t i = 0; i < bytes; i++) buf[i] = static_cast<unsigned char>(rd());
  }
  static const char* kHex = "0123456789abcdef";
  for (size_t i = 0; i < bytes; i++) {
    out += kHex[buf[i] >> 4];
    out += kHex[buf[i] & 15];
  }
  return out;
}

bool same_upstream(const UpstreamConfig& a, const UpstreamConfig& b) {
  if (a.name != b.name || a.servers.size() != b.servers.size()) return false;
  for (size_t i = 0; i < a.servers.size(); i++)
    if (a.servers[i].text != b.servers[i].text) return false;
  return true;
}

}  // namespace

Worker::Worker(int id, Instance* instance, std::shared_ptr<const Snapshot> snapshot)
    : id_(id), instance_(instance), snapshot_(std::move(snapshot)),
      read_buffer_(new char[kReadBufferSize]) {
  id_prefix_ = random_hex(6);
  idem_link_.hold = [this] { return hold_redis(); };
  metrics::Registry::get().ensure_thread(id_);
}

Worker::~Worker() { join(); }

Status Worker::start() {
  std::promise<Status> started;
  auto fut = started.get_future();
  thread_ = std::thread([this, &started] { run(&started); });
  return fut.get();
}

void Worker::request_stop() {
  if (stop_requested_.exchange(true)) return;
  uv_async_send(&stop_async_);
}

void Worker::post_snapshot(std::shared_ptr<const Snapshot> snapshot) {
  {
    std::lock_guard<std::mutex> lock(mailbox_mu_);
    mailbox_ = std::move(snapshot);
  }
  uv_async_send(&snapshot_async_);
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::run(std::promise<Status>* started) {
  uv_loop_init(&loop_);
  uv_async_init(&loop_, &stop_async_, on_stop_async);
  stop_async_.data = this;
  uv_async_init(&loop_, &snapshot_async_, on_snapshot_async);
  snapshot_async_.data = this;
  uv_timer_init(&loop_, &drain_timer_);
  drain_timer_.data = this;
  uv_timer_init(&loop_, &tick_timer_);
  tick_timer_.data = this;
  reaper_ = std::make_unique<Reaper>(&loop_);

  Status status;
  const Config& cfg = config();
  size_t resolving = 0;
  for (size_t u = 0; u < cfg.upstreams.size(); u++) {
    pools_.push_back(std::make_unique<proxy::UpstreamPool>(this, cfg.upstreams[u], snapshot_->upstreams[u].counters));
    resolving++;
    pools_.back()->resolve([&resolving, &status](Status s) {
      if (!s && status) status = std::move(s);
      resolving--;
    });
  }
  // Nothing is served before every upstream name has its answer: a name that cannot
  // be resolved fails the start (docs/operations.md). The resolver runs on libuv's
  // thread pool; this loop only waits for it, with no listener open yet.
  while (resolving > 0) uv_run(&loop_, UV_RUN_ONCE);
  if (status.is_ok()) status = sync_listeners();
  bool ok = status.is_ok();
  if (ok) {
    open_redis();
    // The one place that decides where the instance's own duties run.
    if (id_ == 0) {
      duties_ = std::make_unique<gateway::InstanceDuties>(this, [this] { maybe_finish(); });
      duties_->start();
    }
  }
  if (ok) {
    next_tick_ns_ = uv_hrtime() + kTickMs * 1000000;
    uv_timer_start(&tick_timer_, on_tick, kTickMs, kTickMs);
    log::event("info", "worker_start", [&](log::Line& l) { l.num("worker", id_); });
  } else {
    stop_requested_ = true;
    begin_drain();
  }
  started->set_value(status);  // `started` must not be touched after this
  uv_run(&loop_, UV_RUN_DEFAULT);
  access_log_.flush();
  listeners_.clear();
  closed_listeners_.clear();
  pools_.clear();
  retired_pools_.clear();
  kept_pools_.clear();
  reaper_.reset();
  // Every handle is closed by now; a non-zero result would mean a leaked handle.
  int r = uv_loop_close(&loop_);
  if (r != 0) {
    log::event("error", "worker_leak", [&](log::Line& l) { l.num("worker", id_).str("error", uv_strerror(r)); });
  }
  if (ok) log::event("info", "worker_stop", [&](log::Line& l) { l.num("worker", id_); });
}

Status Worker::sync_listeners() {
  // Listeners are keyed by their address text: open new ones, close dropped ones.
  const auto& want = config().server.listen;
  std::vector<std::unique_ptr<Listener>> keep;
  for (auto& l : listeners_) {
    bool wanted = false;
    for (const auto& a : want) wanted = wanted || a.text == l->address();
    if (wanted) {
      keep.push_back(std::move(l));
    } else {
      l->close();
      closed_listeners_.push_back(std::move(l));
    }
  }
  listeners_ = std::move(keep);
  Status first_error;
  for (const auto& a : want) {
    bool have = false;
    for (auto& l : listeners_) have = have || l->address() == a.text;
    if (have) continue;
    auto l = std::make_unique<Listener>(this, a);
    Status s = l->open();
    if (s) {
      listeners_.push_back(std::move(l));
    } else {
      closed_listeners_.push_back(std::move(l));
      if (first_error) first_error = s;
    }
  }
  return first_error;
}

void Worker::on_snapshot_async(uv_async_t* a) {
  auto* self = static_cast<Worker*>(a->data);
  std::shared_ptr<const Snapshot> next;
  {
    std::lock_guard<std::mutex> lock(self->mailbox_mu_);
    next = std::move(self->mailbox_);
  }
  if (next && !self->draining_) self->apply_snapshot(std::move(next));
}

void Worker::apply_snapshot(std::shared_ptr<const Snapshot> next) {
  // Requests in flight keep the snapshot (and pools) they started with; new requests
  // see the new one from here on.
  const Config& old_cfg = config();
  const Config& cfg = *next->config;
  std::vector<std::unique_ptr<proxy::UpstreamPool>> pools;
  for (size_t u = 0; u < cfg.upstreams.size(); u++) {
    std::unique_ptr<proxy::UpstreamPool> reuse;
    for (size_t o = 0; o < old_cfg.upstreams.size(); o++) {
      if (pools_[o] && same_upstream(old_cfg.upstreams[o], cfg.upstreams[u]) &&
          pools_[o]->counters() == next->upstreams[u].counters.get()) {
        reuse = std::move(pools_[o]);
        break;
      }
    }
    if (reuse) {
      reuse->update_config(cfg.upstreams[u]);
    } else {
      reuse = std::make_unique<proxy::UpstreamPool>(this, cfg.upstreams[u], next->upstreams[u].counters);
      // Asynchronous: requests for a server whose name has no answer yet fail as if it
      // were down (proxy/upstream_pool.h).
      int id = id_;
      reuse->resolve([id](Status s) {
        if (s) return;
        log::event("error", "upstream_resolve_failed", [&](log::Line& l) { l.num("worker", id).str("error", s.message()); });
      });
    }
    pools.push_back(std::move(reuse));
  }
  for (auto& p : pools_) {
    if (p) {
      p->retire();
      retired_pools_.push_back(std::move(p));
    }
  }
  pools_ = std::move(pools);
  const RedisConfig& old_redis = snapshot_->config->redis;
  const RedisConfig& new_redis = next->config->redis;
  bool redis_changed = old_redis.enabled != new_redis.enabled || old_redis.url != new_redis.url ||
                       old_redis.timeout_ms != new_redis.timeout_ms;
  snapshot_ = std::move(next);
  if (redis_changed) {
    close_redis();
    open_redis();
  }
  if (duties_) duties_->config_changed();
  Status s = sync_listeners();
  if (!s) {
    log::event("error", "listen_failed", [&](log::Line& l) { l.num("worker", id_).str("error", s.message()); });
  }
}

void Worker::on_stop_async(uv_async_t* a) {
  auto* self = static_cast<Worker*>(a->data);
  self->begin_drain();
}

void Worker::begin_drain() {
  if (draining_) return;
  draining_ = true;
  for (auto& l : listeners_) l->close();
  for (auto& p : pools_) p->close_idle();
  for (auto& p : retired_pools_) p->close_idle();
  // Copy: drain() may close connections, which edits the list.
  std::vector<proxy::ClientConn*> conns = conns_;
  for (auto* c : conns) c->drain();
  if (duties_) duties_->drain();
  uv_timer_start(&drain_timer_, on_drain_timer, config().server.drain_timeout_ms, 0);
  maybe_finish();
}

void Worker::on_drain_timer(uv_timer_t* t) {
  auto* self = static_cast<Worker*>(t->data);
  log::event("warn", "drain_timeout", [&](log::Line& l) {
    l.num("worker", self->id_).num("connections", static_cast<int64_t>(self->conns_.size()));
  });
  std::vector<proxy::ClientConn*> conns = self->conns_;
  self->drain_expired_ = true;
  for (auto* c : conns) c->close();
  if (self->duties_) self->duties_->drain_expired();
  self->maybe_finish();
}

void Worker::maybe_finish() {
  if (!draining_ || finished_ || !conns_.empty() || (duties_ && duties_->busy())) return;
  if (redis_holds_ > 0 && !drain_expired_) return;  // promised writes still on their way
  finished_ = true;
  // Long-polls still registered belong to connections that are gone by now.
  tickets_.clear();
  for (auto& p : pools_) p->close_idle();
  for (auto& p : retired_pools_) p->close_idle();
  close_redis();
  if (duties_) duties_->stop();
  reaper_->close();
  uv_close(reinterpret_cast<uv_handle_t*>(&stop_async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&snapshot_async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&tick_timer_), nullptr);
}

void Worker::on_tick(uv_timer_t* t) {
  auto* self = static_cast<Worker*>(t->data);
  // Loop lag: how late this periodic timer fires compared with its schedule.
  uint64_t now_ns = uv_hrtime();
  uint64_t lag = now_ns > self->next_tick_ns_ ? now_ns - self->next_tick_ns_ : 0;
  self->next_tick_ns_ = now_ns + kTickMs * 1000000;
  self->instance_->loop_lag_ns[self->id_].store(lag, std::memory_order_relaxed);
  uint64_t limit_ms = self->config().pressure.loop_lag_ms;
  bool pressure = false;
  const char* condition = "loop_lag";
  if (uint64_t qmax = self->config().pressure.queue_depth; qmax > 0) {
    for (const auto& rt : self->snapshot_->routes) {
      if (rt.queue && rt.queue->depth.load(std::memory_order_relaxed) > static_cast<int64_t>(qmax)) {
        pressure = true;
        condition = "queue_depth";
      }
    }
  }
  if (limit_ms > 0 && !pressure) {
    int n = self->instance_->workers.load(std::memory_order_relaxed);
    for (int i = 0; i < n && i < metrics::kMaxWorkers; i++) {
      if (self->instance_->loop_lag_ns[i].load(std::memory_order_relaxed) > limit_ms * 1000000) pressure = true;
    }
  }
  if (pressure != self->pressure_ && self->duties_) self->duties_->pressure_changed(pressure, condition);
  self->pressure_ = pressure;

  self->access_log_.flush();
  if (self->duties_) self->duties_->tick();
  uint64_t now = self->now_ms();
  if (now - self->budget_reset_ms_ >= 10000) {
    self->budget_reset_ms_ = now;
    self->budget_requests_ = 0;
    self->budget_retries_ = 0;
  }
  // Long-polls whose wait is over answer with the state they have.
  self->tickets_.notify_due(now);
  for (auto& p : self->pools_) p->sweep(now);
  // Pools replaced by a reload go away once their last connection has closed.
  for (size_t i = 0; i < self->retired_pools_.size();) {
    if (self->retired_pools_[i]->open_connections() == 0) {
      self->retired_pools_.erase(self->retired_pools_.begin() + static_cast<long>(i));
    } else {
      i++;
    }
  }
  for (size_t i = 0; i < self->kept_pools_.size();) {
    auto& p = self->kept_pools_[i];
    if (p.use_count() == 1 && p->open_connections() == 0) {
      p = std::move(self->kept_pools_.back());
      self->kept_pools_.pop_back();
    } else {
      i++;
    }
  }
}

void Worker::accept_from(uv_stream_t* server) {
  if (server == nullptr) {
    uint64_t now = now_ms();
    if (now - accept_errors_logged_ms_ >= 1000) {
      accept_errors_logged_ms_ = now;
      log::event("warn", "accept_failed", [&](log::Line& l) {
        l.num("worker", id_).str("error", "out of file descriptors; connection dropped");
      });
    }
    return;
  }
  auto* conn = new proxy::ClientConn(this);
  conn->list_index = conns_.size();
  conns_.push_back(conn);
  conn->accept(server);
}

void Worker::conn_closed(proxy::ClientConn* conn) {
  size_t i = conn->list_index;
  if (i < conns_.size() && conns_[i] == conn) {
    conns_[i] = conns_.back();
    conns_[i]->list_index = i;
    conns_.pop_back();
  }
  maybe_finish();
}

void Worker::open_redis() {
  const RedisConfig& rc = config().redis;
  if (!rc.enabled) return;
  auto ep = redis::parse_url(rc.url);
  if (!ep) return;  // the loader validated it
  redis::Client::Options opt;
  opt.endpoint = ep.value();
  opt.command_timeout_ms = rc.timeout_ms;
  opt.name = "worker " + std::to_string(id_);
  int id = id_;
  Instance* inst = instance_;
  // The client logs redis_up/redis_down itself; the worker only tracks the gauge.
  opt.on_state = [id, inst](bool up) { inst->redis_up[id].store(up, std::memory_order_relaxed); };
  redis::Client::Options sub_opt = opt;
  sub_opt.on_state = nullptr;
  sub_opt.name = "worker " + std::to_string(id_) + " notifications";
  redis_ = std::make_unique<redis::Client>(&loop_, std::move(opt));
  redis_->start();
  idem_link_.client = redis_.get();
  // A second connection in subscribe mode wakes ticket long-polls; after a reconnect
  // every waiter re-reads its ticket, in case a change was missed meanwhile.
  subscriber_ = std::make_unique<redis::Client>(&loop_, std::move(sub_opt));
  subscriber_->subscribe(
      {queue::Keys{rc.prefix}.channel()},
      [this](std::string_view, std::string_view payload) { tickets_.notify(payload, now_ms()); },
      [this] { tickets_.notify_all(now_ms()); });
  subscriber_->start();
}

void Worker::keep_pool(std::shared_ptr<proxy::UpstreamPool> pool) {
  pool->retire();
  kept_pools_.push_back(std::move(pool));
}

std::function<void()> Worker::hold_redis() {
  redis_holds_++;
  return [this] {
    redis_holds_--;
    maybe_finish();
  };
}

proxy::Dispatcher* Worker::dispatcher(const std::string& route) {
  return duties_ ? duties_->dispatcher(route) : nullptr;
}

void Worker::close_redis() {
  if (subscriber_) {
    redis::Client* sub = subscriber_.release();
    sub->close([sub] { delete sub; });
  }
  if (!redis_) return;
  idem_link_.client = nullptr;
  instance_->redis_up[id_].store(false, std::memory_order_relaxed);
  redis::Client* old = redis_.release();
  old->close([old] { delete old; });
}

std::string Worker::random_token() {
  return random_hex(16);
}

void Worker::next_request_id(std::string& out) {
  // "<12 hex random per worker>-<2 hex worker><8+ hex counter>", built by hand: this
  // runs for every request.
  static const char* kHex = "0123456789abcdef";
  char buf[40];
  size_t n = 0;
  buf[n++] = '-';
  buf[n++] = kHex[(id_ >> 4) & 15];
  buf[n++] = kHex[id_ & 15];
  uint64_t v = ++id_counter_;
  int digits = 8;
  while (digits < 16 && (v >> (4 * digits)) != 0) digits++;
  for (int i = digits - 1; i >= 0; i--) buf[n++] = kHex[(v >> (4 * i)) & 15];
  out.assign(id_prefix_);
  out.append(buf, n);
}

}  // namespace fg::net
