// A worker's state for requests: pools, connections, Redis, caches, long-polls.
#include "proxy/worker_state.h"

#include <algorithm>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "proxy/client_conn.h"
#include "core/random.h"

namespace fg::proxy {
namespace {

std::string random_hex(size_t bytes) {
  unsigned char buf[16];
  if (bytes > sizeof buf) bytes = sizeof buf;
  random::bytes(buf, bytes);
  static const char* kHex = "0123456789abcdef";
  std::string out(bytes * 2, '0');
  for (size_t i = 0; i < bytes; i++) {
    out[2 * i] = kHex[buf[i] >> 4];
    out[2 * i + 1] = kHex[buf[i] & 15];
  }
  return out;
}

bool same_upstream(const UpstreamConfig& a, const UpstreamConfig& b) {
  if (a.name != b.name || a.servers.size() != b.servers.size() || a.resolver.size() != b.resolver.size()) return false;
  // Pooled connections were opened with the old TLS settings (or without TLS).
  if (a.tls.enabled != b.tls.enabled || a.tls.ca_file != b.tls.ca_file || a.tls.verify != b.tls.verify ||
      a.tls.server_name != b.tls.server_name)
    return false;
  for (size_t i = 0; i < a.resolver.size(); i++)
    if (a.resolver[i].text != b.resolver[i].text) return false;
  for (size_t i = 0; i < a.servers.size(); i++)
    if (a.servers[i].text != b.servers[i].text) return false;
  return true;
}

}  // namespace

WorkerState::WorkerState(net::Worker& worker)
    : worker_(worker), cache_stage_([this] { uv_async_send(&cache_async_); }) {
  id_prefix_ = random_hex(6);
  idem_link_.hold = [this] { return hold_redis(); };
}

// Pools and connections are gone by now (the drain closed them); what is left is
// freed with the state, after the loop ended.
WorkerState::~WorkerState() = default;

Status WorkerState::on_prepare() {
  Status status;
  const Config& cfg = config();
  size_t resolving = 0;
  for (size_t u = 0; u < cfg.upstreams.size(); u++) {
    pools_.push_back(std::make_unique<UpstreamPool>(this, cfg.upstreams[u], snapshot()->upstreams[u].counters,
                                                    snapshot()->upstream_tls(u)));
    resolving++;
    pools_.back()->resolve([&resolving, &status](Status s) {
      if (!s && status) status = std::move(s);
      resolving--;
    });
  }
  // Nothing is served before every upstream name has its answer: a name that cannot
  // be resolved fails the start (docs/operations.md). The resolver runs on libuv's
  // thread pool; this loop only waits for it, with no listener open yet.
  while (resolving > 0) uv_run(loop(), UV_RUN_ONCE);
  return status;
}

void WorkerState::on_start() {
  // Before the first request: the stage signals this handle from other threads, and
  // its inbox is closed (in on_stop) before the handle is.
  uv_async_init(loop(), &cache_async_, [](uv_async_t* a) {
    static_cast<WorkerState*>(a->data)->cache_stage_.deliver();
  });
  cache_async_.data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(&cache_async_));
  cache_async_open_ = true;
  open_redis();
}

void WorkerState::on_accept(uv_stream_t* server) {
  auto* conn = new ClientConn(this);
  conn->list_index = conns_.size();
  conns_.push_back(conn);
  conn->accept(server);
}

namespace {
// After a burst of queued response bytes (slow readers) the allocator keeps the freed
// pages unless asked: once this worker's queue falls below kTrimBelow after having
// reached kTrimAfterPeak, the free memory goes back to the system.
constexpr int64_t kTrimAfterPeak = 16 * 1024 * 1024;
constexpr int64_t kTrimBelow = 1024 * 1024;
}  // namespace

void WorkerState::note_queued(int64_t delta) {
  queued_ += delta;
  if (queued_ > queued_peak_) queued_peak_ = queued_;
  instance().response_buffered.fetch_add(delta, std::memory_order_relaxed);
}

void WorkerState::conn_closed(ClientConn* conn) {
  size_t i = conn->list_index;
  if (i < conns_.size() && conns_[i] == conn) {
    conns_[i] = conns_.back();
    conns_[i]->list_index = i;
    conns_.pop_back();
  }
  worker_.service_idle();
}

void WorkerState::on_snapshot(const net::Snapshot& old) {
  // Requests in flight keep the pools they started with.
  const Config& old_cfg = *old.config;
  const net::Snapshot& next = *snapshot();
  const Config& cfg = *next.config;
  std::vector<std::unique_ptr<UpstreamPool>> pools;
  for (size_t u = 0; u < cfg.upstreams.size(); u++) {
    std::unique_ptr<UpstreamPool> reuse;
    for (size_t o = 0; o < old_cfg.upstreams.size(); o++) {
      if (pools_[o] && same_upstream(old_cfg.upstreams[o], cfg.upstreams[u]) &&
          pools_[o]->counters() == next.upstreams[u].counters.get()) {
        reuse = std::move(pools_[o]);
        break;
      }
    }
    if (reuse) {
      reuse->update_config(cfg.upstreams[u], next.upstream_tls(u));
    } else {
      reuse = std::make_unique<UpstreamPool>(this, cfg.upstreams[u], next.upstreams[u].counters, next.upstream_tls(u));
      // Asynchronous: requests for a server whose name has no answer yet fail as if it
      // were down (proxy/upstream_pool.h).
      int id = this->id();
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
  const RedisConfig& old_redis = old_cfg.redis;
  const RedisConfig& new_redis = cfg.redis;
  bool redis_changed = old_redis.enabled != new_redis.enabled || old_redis.url != new_redis.url ||
                       old_redis.endpoint.sentinel != new_redis.endpoint.sentinel ||
                       old_redis.timeout_ms != new_redis.timeout_ms;
  if (redis_changed) {
    close_redis();
    open_redis();
  }
}

void WorkerState::on_tick(uint64_t now) {
  if (now - budget_reset_ms_ >= 10000) {
    budget_reset_ms_ = now;
    budget_requests_ = 0;
    budget_retries_ = 0;
  }
  // Long-polls whose wait is over answer with the state they have.
  tickets_.notify_due(now);
  for (auto& p : pools_) {
    p->sweep(now);
    p->refresh(now);
  }
  if (queued_peak_ >= kTrimAfterPeak && queued_ < kTrimBelow) {
    queued_peak_ = queued_;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
  }
  // Pools replaced by a reload go away once their last connection has closed.
  for (size_t i = 0; i < retired_pools_.size();) {
    if (retired_pools_[i]->open_connections() == 0) {
      retired_pools_.erase(retired_pools_.begin() + static_cast<long>(i));
    } else {
      i++;
    }
  }
  for (size_t i = 0; i < kept_pools_.size();) {
    auto& p = kept_pools_[i];
    if (p.use_count() == 1 && p->open_connections() == 0) {
      p = std::move(kept_pools_.back());
      kept_pools_.pop_back();
    } else {
      i++;
    }
  }
}

void WorkerState::on_drain() {
  for (auto& p : pools_) p->close_idle();
  for (auto& p : retired_pools_) p->close_idle();
  // Copy: drain() may close connections, which edits the list.
  std::vector<ClientConn*> conns = conns_;
  for (auto* c : conns) c->drain();
}

void WorkerState::on_drain_expired() {
  std::vector<ClientConn*> conns = conns_;
  drain_expired_ = true;
  for (auto* c : conns) c->close();
}

bool WorkerState::busy() const {
  if (!conns_.empty()) return true;
  return redis_holds_ > 0 && !drain_expired_;  // promised writes still on their way
}

void WorkerState::on_stop() {
  // Long-polls still registered belong to connections that are gone by now.
  tickets_.clear();
  for (auto& p : pools_) {
    p->close_idle();
    p->stop_lookups();  // c-ares handles close while the loop still runs
  }
  for (auto& p : retired_pools_) p->close_idle();
  for (auto& p : kept_pools_) p->stop_lookups();
  close_redis();
  // Other workers stop posting wake-ups here before the handle they signal goes.
  cache_stage_.close();
  if (cache_async_open_) {
    cache_async_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&cache_async_), nullptr);
  }
}

Dispatcher* WorkerState::dispatcher(const std::string&) { return nullptr; }

void WorkerState::open_redis() {
  const RedisConfig& rc = config().redis;
  if (!rc.enabled) return;
  redis::Client::Options opt;
  opt.endpoint = rc.endpoint;  // parsed by the loader, with the Sentinels if any
  opt.command_timeout_ms = rc.timeout_ms;
  opt.name = "worker " + std::to_string(id());
  int wid = id();
  net::Instance* inst = &instance();
  // The client logs redis_up/redis_down itself; the worker only tracks the gauge.
  opt.on_state = [wid, inst](bool up) { inst->redis_up[wid].store(up, std::memory_order_relaxed); };
  redis::Client::Options sub_opt = opt;
  // Without the change channel the ticket memory cannot know what changed: it answers
  // nothing until the channel is subscribed again.
  sub_opt.on_state = [this](bool up) {
    if (!up) ticket_memory_.set_live(false);
  };
  sub_opt.name = "worker " + std::to_string(id()) + " notifications";
  redis_ = std::make_unique<redis::Client>(loop(), std::move(opt));
  redis_->start();
  idem_link_.client = redis_.get();
  // A second connection in subscribe mode wakes ticket long-polls and keeps the ticket
  // memory current; after a reconnect every waiter re-reads its ticket and the memory
  // starts empty, in case a change was missed meanwhile.
  subscriber_ = std::make_unique<redis::Client>(loop(), std::move(sub_opt));
  subscriber_->subscribe(
      {queue::Keys{rc.prefix}.channel()},
      [this](std::string_view, std::string_view payload) {
        ticket_memory_.changed(payload);
        tickets_.notify(payload.substr(0, payload.find(' ')), now_ms());
      },
      [this] {
        ticket_memory_.set_live(false);
        ticket_memory_.set_live(true);
        tickets_.notify_all(now_ms());
      });
  subscriber_->start();
}

UpstreamPool* WorkerState::pool_named(std::string_view name) {
  for (auto& p : pools_)
    if (p && p->config().name == name) return p.get();
  return nullptr;
}

void WorkerState::keep_pool(std::shared_ptr<UpstreamPool> pool) {
  pool->retire();
  kept_pools_.push_back(std::move(pool));
}

std::function<void()> WorkerState::hold_redis() {
  redis_holds_++;
  return [this] {
    redis_holds_--;
    worker_.service_idle();
  };
}

void WorkerState::close_redis() {
  ticket_memory_.set_live(false);
  if (subscriber_) {
    redis::Client* sub = subscriber_.release();
    sub->close([sub] { delete sub; });
  }
  if (!redis_) return;
  idem_link_.client = nullptr;
  instance().redis_up[id()].store(false, std::memory_order_relaxed);
  redis::Client* old = redis_.release();
  old->close([old] { delete old; });
}

std::string WorkerState::random_token() {
  return random_hex(16);
}

void WorkerState::next_request_id(std::string& out) {
  // "<12 hex random per worker>-<2 hex worker><8+ hex counter>", built by hand: this
  // runs for every request.
  static const char* kHex = "0123456789abcdef";
  char buf[40];
  size_t n = 0;
  buf[n++] = '-';
  buf[n++] = kHex[(id() >> 4) & 15];
  buf[n++] = kHex[id() & 15];
  uint64_t v = ++id_counter_;
  int digits = 8;
  while (digits < 16 && (v >> (4 * digits)) != 0) digits++;
  for (int i = digits - 1; i >= 0; i--) buf[n++] = kHex[(v >> (4 * i)) & 15];
  out.assign(id_prefix_);
  out.append(buf, n);
}

}  // namespace fg::proxy
