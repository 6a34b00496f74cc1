// Upstream connections and their per-worker keep-alive pools.
#include "proxy/upstream_pool.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <cstring>

#include "core/log.h"
#include "net/snapshot.h"
#include "net/stream_write.h"
#include "proxy/worker_state.h"

namespace fg::proxy {
namespace {

// Above this many queued bytes towards the upstream the client body is paused.
constexpr size_t kLowWater = 16 * 1024;
// Extra idle pooled connections beyond `keepalive` are trimmed once idle this long,
// so a burst that needs more connections than the cap reuses them instead of churning.
constexpr uint64_t kExcessIdleMs = 1000;

}  // namespace


// ---------------------------------------------------------------- UpstreamConn

UpstreamConn::UpstreamConn(UpstreamPool* pool, size_t server)
    : pool_(pool), server_(server), parser_(this) {}

void UpstreamConn::connect(UpstreamUser* user) {
  user_ = user;
  state_ = State::kConnecting;
  uv_loop_t* loop = pool_->worker()->loop();
  uv_tcp_init(loop, &tcp_);
  uv_timer_init(loop, &timer_);
  tcp_.data = this;
  timer_.data = this;
  pending_closes_ = 2;
  connect_req_.data = this;
  const auto& addr = pool_->servers_[server_].addr;
  address_gen_ = pool_->servers_[server_].address_gen;
  int r = uv_tcp_connect(&connect_req_, &tcp_, reinterpret_cast<const sockaddr*>(&addr), on_connect);
  if (r != 0) {
    // Report asynchronously-equivalent: the caller expects a callback, never a
    // re-entrant one from inside acquire(); a zero timer defers it.
    timeout_ms_ = 0;
    read_deadline_ms_ = 0;
    armed_for_ms_ = uv_now(loop);
    uv_timer_start(&timer_, on_timer, 0, 0);
    complete_ = true;  // marks "connect failed immediately" for on_timer
    return;
  }
  read_deadline_ms_ = 0;
  armed_for_ms_ = uv_now(loop) + pool_->config().connect_timeout_ms;
  uv_timer_start(&timer_, on_timer, pool_->config().connect_timeout_ms, 0);
}

void UpstreamConn::on_connect(uv_connect_t* req, int status) {
  auto* self = static_cast<UpstreamConn*>(req->data);
  if (self->state_ == State::kClosing) return;
  uv_timer_stop(&self->timer_);
  if (self->read_deadline_ms_ != 0) {
    // A response was already expected while connecting: its clock keeps running.
    const uint64_t now = uv_now(self->timer_.loop);
    self->armed_for_ms_ = std::max(now, self->read_deadline_ms_);
    uv_timer_start(&self->timer_, on_timer, self->armed_for_ms_ - now, 0);
  }
  if (status < 0) {
    self->fail(UpstreamError::kConnect);
    return;
  }
  uv_tcp_nodelay(&self->tcp_, 1);
  UpstreamPool* pool = self->pool_;
  if (pool->tls_) {
    // The ClientHello goes out now; the request written from on_upstream_connected is
    // held by the session until the handshake is done. A handshake the server refuses
    // counts as a connect failure (retried, fed to the breaker).
    const auto& tc = pool->config_.tls;
    size_t i = self->server_;
    const HostPort& hp = i < pool->primaries_ ? pool->config_.servers[i] : pool->config_.backup[i - pool->primaries_];
    auto& ticket = pool->servers_[i].ticket;
    self->tls_ = tls::Session::client(pool->tls_, tc.server_name.empty() ? hp.host : tc.server_name,
                                      ticket.empty() ? nullptr : &ticket);
    self->state_ = State::kBusy;
    if (!self->tls_ || !self->tls_flush()) {
      self->fail(UpstreamError::kConnect);
      return;
    }
    self->resume_reading();
    if (self->user_) self->user_->on_upstream_connected(self);
    return;
  }
  self->state_ = State::kBusy;
  self->resume_reading();
  if (self->user_) self->user_->on_upstream_connected(self);
}

bool UpstreamConn::tls_flush() {
  if (tls_->pending_ciphertext() == 0) return true;
  tls_out_.clear();
  tls_->take_ciphertext(tls_out_);
  uv_buf_t b = net::buf_of(tls_out_.data(), tls_out_.size());
  return net::write_bufs(reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1, on_write) == 0;
}

bool UpstreamConn::tls_input(const char* data, size_t len) {
  tls_->feed(data, len);
  tls_plain_.clear();
  // The ciphertext is in the session now: the worker's read buffer takes the plaintext.
  char* plain = pool_->worker()->read_buffer();
  while (size_t n = tls_->read_plain(plain, net::Worker::kReadBufferSize)) tls_plain_.append(plain, n);
  bool sent = tls_flush();
  if (state_ == State::kIdle) {
    // A pooled connection must be silent: data or an end means the server is done with it.
    if (!tls_plain_.empty() || tls_->state() != tls::State::kOpen || !sent) close();
    return false;
  }
  if (!sent) {
    fail(UpstreamError::kReset);
    return false;
  }
  if (tls_->state() == tls::State::kFailed) {
    fail(tls_->handshake_done() ? UpstreamError::kBadResponse : UpstreamError::kConnect);
    return false;
  }
  if (!tls_saved_ && !tls_plain_.empty()) {
    // TLS 1.3 sends its tickets after the handshake: by the first response bytes they are in.
    tls_saved_ = true;
    pool_->servers_[server_].ticket = tls_->saved_session();
  }
  return true;
}

bool UpstreamConn::write(uv_buf_t* bufs, unsigned n) {
  if (state_ != State::kBusy) return false;
  if (tls_) {
    for (unsigned i = 0; i < n; i++) {
      if (!tls_->write_plain(bufs[i].base, bufs[i].len)) {
        fail(UpstreamError::kReset);
        return false;
      }
    }
    if (!tls_flush()) {
      fail(UpstreamError::kReset);
      return false;
    }
    return true;
  }
  int r = net::write_bufs(reinterpret_cast<uv_stream_t*>(&tcp_), bufs, n, on_write);
  if (r != 0) {
    fail(UpstreamError::kReset);
    return false;
  }
  return true;
}

size_t UpstreamConn::write_queue_size() const {
  return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&tcp_));
}

void UpstreamConn::on_write(uv_write_t* req, int status) {
  auto* w = static_cast<net::OwnedWrite*>(req->data);
  auto* self = static_cast<UpstreamConn*>(req->handle->data);
  delete w;
  if (self->state_ != State::kBusy) return;
  if (status < 0) {
    self->fail(UpstreamError::kReset);
    return;
  }
  if (self->write_queue_size() <= kLowWater && self->user_) self->user_->on_upstream_drained();
}

void UpstreamConn::expect_response(bool request_was_head, uint64_t timeout_ms) {
  parser_.begin(request_was_head);
  complete_ = false;
  timeout_ms_ = timeout_ms;
  arm_read_timer();
}

void UpstreamConn::arm_read_timer() {
  const uint64_t now = uv_now(timer_.loop);
  read_deadline_ms_ = now + timeout_ms_;
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_)) && armed_for_ms_ <= read_deadline_ms_) return;
  armed_for_ms_ = read_deadline_ms_;
  uv_timer_start(&timer_, on_timer, timeout_ms_, 0);
}

void UpstreamConn::touch_timer() {
  if (state_ == State::kBusy && timeout_ms_ > 0) arm_read_timer();
}

void UpstreamConn::pause_reading() {
  if (reading_ && state_ == State::kBusy) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    reading_ = false;
    // No read deadline while the client is the slow side: its send_timeout governs.
    read_deadline_ms_ = 0;
  }
}

void UpstreamConn::resume_reading() {
  if (!reading_ && (state_ == State::kBusy || state_ == State::kIdle)) {
    uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc, on_read);
    reading_ = true;
    if (state_ == State::kBusy && timeout_ms_ > 0 && !complete_) arm_read_timer();
  }
}

void UpstreamConn::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* self = static_cast<UpstreamConn*>(h->data);
  *buf = uv_buf_init(self->pool_->worker()->read_buffer(), net::Worker::kReadBufferSize);
}

void UpstreamConn::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<UpstreamConn*>(s->data);
  if (nread == 0 || self->state_ == State::kClosing) return;
  if (self->tls_ && nread > 0) {
    if (!self->tls_input(buf->base, static_cast<size_t>(nread))) return;
    if (!self->tls_plain_.empty()) self->handle_data(self->tls_plain_.data(), self->tls_plain_.size());
    if (self->state_ == State::kBusy && self->tls_->state() == tls::State::kClosed) {
      // close_notify: as an EOF (a close-delimited body ends here).
      if (self->parser_.started() && self->parser_.finish()) {
        self->spoiled_ = true;
        self->deliver_complete();
        return;
      }
      self->fail(UpstreamError::kReset);
    }
    return;
  }
  if (self->state_ == State::kIdle) {
    // A pooled connection must be silent: data or EOF means the server is done with it.
    self->close();
    return;
  }
  if (nread < 0) {
    if (self->parser_.started() && self->parser_.finish()) {  // close-delimited end
      self->spoiled_ = true;
      self->deliver_complete();
      return;
    }
    self->fail(UpstreamError::kReset);
    return;
  }
  self->handle_data(buf->base, static_cast<size_t>(nread));
}

void UpstreamConn::handle_data(const char* data, size_t len) {
  if (timeout_ms_ > 0) arm_read_timer();
  auto out = parser_.execute(data, len);
  if (state_ != State::kBusy) return;
  if (out.state == http::ResponseParser::State::kError) {
    fail(UpstreamError::kBadResponse);
    return;
  }
  if (out.state == http::ResponseParser::State::kMessageDone) {
    // Bytes after a complete response that nobody asked for: never reuse this one.
    if (out.consumed < len) spoiled_ = true;
    deliver_complete();
    return;
  }
  if (user_) user_->on_upstream_parsed();
}

void UpstreamConn::deliver_complete() {
  // Called once the parser has returned, never from inside it: the user may release
  // this connection and a pipelined request may take it (and re-arm the parser) at once.
  if (!complete_ || state_ != State::kBusy) return;
  if (user_) user_->on_upstream_complete();
}

void UpstreamConn::on_response_head(http::ResponseHead& head) {
  if (user_) user_->on_upstream_head(head);
}

void UpstreamConn::on_response_body(const char* data, size_t len) {
  if (user_) user_->on_upstream_body(data, len);
}

void UpstreamConn::on_response_complete() {
  complete_ = true;
  read_deadline_ms_ = 0;  // an armed timer fires into nothing
  requests_++;
}

void UpstreamConn::on_timer(uv_timer_t* t) {
  auto* self = static_cast<UpstreamConn*>(t->data);
  if (self->state_ == State::kConnecting) {
    bool immediate = self->complete_;
    self->complete_ = false;
    self->fail(UpstreamError::kConnect, !immediate);
  } else if (self->state_ == State::kBusy) {
    if (self->read_deadline_ms_ == 0) return;  // no response is awaited (or reading is paused)
    if (const uint64_t now = uv_now(t->loop); now < self->read_deadline_ms_) {
      self->armed_for_ms_ = self->read_deadline_ms_;
      uv_timer_start(t, on_timer, self->read_deadline_ms_ - now, 0);
      return;
    }
    self->fail(UpstreamError::kTimeout);
  }
}

void UpstreamConn::fail(UpstreamError kind, bool connect_timed_out) {
  UpstreamUser* user = user_;
  user_ = nullptr;
  close();
  if (user) user->on_upstream_error(kind, connect_timed_out);
}

void UpstreamConn::close() {
  if (state_ == State::kClosing) return;
  bool was_idle = state_ == State::kIdle;
  state_ = State::kClosing;
  user_ = nullptr;
  uv_timer_stop(&timer_);
  if (was_idle) {
    auto& idle = pool_->servers_[server_].idle;
    for (size_t i = 0; i < idle.size(); i++) {
      if (idle[i] == this) {
        idle.erase(idle.begin() + static_cast<long>(i));
        break;
      }
    }
  } else {
    pool_->servers_[server_].active--;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_close);
}

void UpstreamConn::on_close(uv_handle_t* h) {
  auto* self = static_cast<UpstreamConn*>(h->data);
  if (--self->pending_closes_ == 0) {
    self->pool_->forget(self);
    delete self;
  }
}

// ---------------------------------------------------------------- UpstreamPool

UpstreamPool::UpstreamPool(WorkerState* worker, const UpstreamConfig& config,
                           std::shared_ptr<ServerCounters> counters, std::shared_ptr<const tls::ClientContext> tls)
    : worker_(worker), config_(config), counters_(std::move(counters)), tls_(std::move(tls)) {
  primaries_ = config_.servers.size();
  servers_.resize(config_.servers.size() + config_.backup.size());
  for (size_t i = 0; i < servers_.size(); i++)
    servers_[i].name = i < primaries_ ? config_.servers[i].text : config_.backup[i - primaries_].text;
}

UpstreamPool::~UpstreamPool() = default;

void UpstreamPool::resolve(std::function<void(Status)> done) {
  resolve_done_ = std::move(done);
  resolve_status_ = Status::ok();
  resolving_ = 0;
  std::vector<size_t> names;
  for (size_t i = 0; i < servers_.size(); i++) {
    const HostPort& hp = host_port(i);
    auto& ss = servers_[i].addr;
    servers_[i].resolved = true;
    if (uv_ip4_addr(hp.host.c_str(), hp.port, reinterpret_cast<sockaddr_in*>(&ss)) == 0) continue;
    if (uv_ip6_addr(hp.host.c_str(), hp.port, reinterpret_cast<sockaddr_in6*>(&ss)) == 0) continue;
    servers_[i].resolved = false;
    servers_[i].named = true;
    names.push_back(i);
  }
  if (!names.empty() && !resolver_) {
    resolver_ = std::make_unique<NameResolver>(worker_->loop(), config_.resolver);
    if (Status s = resolver_->init(); !s) {
      resolver_.reset();
      resolution_done(Status::error("upstreams." + config_.name + ": " + s.message()));
      return;
    }
  }
  // Counted before the first lookup starts: an answer may arrive before look_up returns.
  resolving_ = names.size() + 1;
  for (size_t i : names) look_up(i, true);
  if (--resolving_ == 0) resolution_done(resolve_status_);
}

void UpstreamPool::look_up(size_t i, bool initial) {
  servers_[i].looking_up = true;
  const HostPort& hp = host_port(i);
  resolver_->lookup(hp.host, hp.port, [guard = anchor_.guard(), i, initial](NameAnswer a) {
    if (UpstreamPool* self = guard.get()) self->on_answer(i, initial, std::move(a));
  });
}

namespace {

bool same_address(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    const auto& x = reinterpret_cast<const sockaddr_in&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  const auto& x = reinterpret_cast<const sockaddr_in6&>(a);
  const auto& y = reinterpret_cast<const sockaddr_in6&>(b);
  return x.sin6_port == y.sin6_port && std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof x.sin6_addr) == 0;
}

std::string address_text(const sockaddr_storage& ss) {
  char ip[64] = {0};
  std::string out;
  uint16_t port = 0;
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(&ss), ip, sizeof ip);
    out.push_back('[');
    out.append(ip);
    out.push_back(']');
    port = ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  } else {
    uv_ip4_name(reinterpret_cast<const sockaddr_in*>(&ss), ip, sizeof ip);
    out.append(ip);
    port = ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  }
  out.push_back(':');
  out.append(std::to_string(port));
  return out;
}

// The shortest wait between two lookups of one name, whatever the TTL says.
constexpr uint64_t kMinLookupGapMs = 1000;

}  // namespace

void UpstreamPool::on_answer(size_t i, bool initial, NameAnswer a) {
  Server& s = servers_[i];
  s.looking_up = false;
  const HostPort& hp = host_port(i);
  const uint64_t now = worker_->now_ms();
  uint64_t wait_ms = config_.resolve_every_ms;
  if (a.ok && a.ttl_s > 0) wait_ms = std::max(kMinLookupGapMs, a.ttl_s * 1000);
  s.next_lookup_ms = now + wait_ms;
  if (!a.ok) {
    if (initial) {
      if (resolve_status_) {
        resolve_status_ = Status::error("upstreams." + config_.name + ": cannot resolve " + hp.text + ": " + a.error);
      }
    } else {
      count_resolution(net::kResolveFailed);
      log::event("warn", "upstream_resolve_failed", [&](log::Line& l) {
        l.str("upstream", config_.name).str("server", hp.text).str("error", a.error)
            .str("keeping", s.resolved ? address_text(s.addr) : std::string());
      });
    }
  } else if (!s.resolved || !same_address(s.addr, a.addr)) {
    const std::string old = s.resolved ? address_text(s.addr) : std::string();
    s.addr = a.addr;
    s.address_gen++;
    if (s.resolved) {
      count_resolution(net::kResolveChanged);
      log::event("info", "upstream_address_changed", [&](log::Line& l) {
        l.str("upstream", config_.name).str("server", hp.text).str("old", old).str("new", address_text(s.addr));
      });
    }
    s.resolved = true;
    // Pooled connections to the old address go now; busy ones close when released.
    while (!s.idle.empty()) s.idle.back()->close();
  } else if (!initial) {
    count_resolution(net::kResolveUnchanged);
  }
  if (initial && --resolving_ == 0) resolution_done(resolve_status_);
}

void UpstreamPool::count_resolution(int result) {
  const auto& snap = worker_->snapshot();
  if (!snap) return;
  const auto& ups = snap->config->upstreams;
  for (size_t u = 0; u < ups.size(); u++) {
    if (ups[u].name == config_.name) {
      metrics::Registry::get().add(worker_->id(), snap->upstreams[u].resolutions[static_cast<size_t>(result)]);
      return;
    }
  }
}

void UpstreamPool::refresh(uint64_t now_ms) {
  if (!resolver_ || retired_) return;
  if (resolving_ > 0) return;  // the first answers are still out
  for (size_t i = 0; i < servers_.size(); i++) {
    Server& s = servers_[i];
    if (s.named && !s.looking_up && now_ms >= s.next_lookup_ms) look_up(i, false);
  }
}

void UpstreamPool::resolution_done(Status s) {
  const uint64_t now = worker_->now_ms();
  for (auto& srv : servers_)
    if (srv.named && srv.next_lookup_ms == 0) srv.next_lookup_ms = now + config_.resolve_every_ms;
  auto done = std::move(resolve_done_);
  resolve_done_ = nullptr;
  if (done) done(std::move(s));
}

std::string UpstreamPool::server_address(size_t i) const {
  return servers_[i].resolved ? address_text(servers_[i].addr) : std::string();
}

bool UpstreamPool::serves(size_t i) const {
  if (!servers_[i].resolved) return false;
  if (i < counters_->down.size() && counters_->down[i].load(std::memory_order_relaxed)) return false;
  if (breaker::Breaker* b = counters_->breaker_of(i); b && b->state() == breaker::State::kOpen) return false;
  return true;
}

bool UpstreamPool::usable(size_t i, const std::vector<bool>& tried) const { return !tried[i] && serves(i); }

bool UpstreamPool::any_available() const {
  for (size_t i = 0; i < servers_.size(); i++) {
    if (!serves(i)) continue;
    if (counters_->count[i].load(std::memory_order_relaxed) < static_cast<int64_t>(config_.max_connections))
      return true;
  }
  return false;
}

bool UpstreamPool::any_usable() const {
  for (size_t i = 0; i < servers_.size(); i++)
    if (serves(i)) return true;
  return false;
}

void UpstreamPool::record(size_t i, breaker::Outcome outcome) {
  if (breaker::Breaker* b = counters_->breaker_of(i)) b->record(outcome, worker_->now_ms());
}

size_t UpstreamPool::pick(const std::vector<bool>& tried) {
  // Healthy primaries first (by the balance policy); backups only once no primary is
  // usable.
  size_t n = servers_.size();
  size_t lo = 0, hi = primaries_;
  bool any_primary = false;
  for (size_t i = 0; i < primaries_; i++) any_primary = any_primary || usable(i, tried);
  if (!any_primary) {
    lo = primaries_;
    hi = n;
  }
  size_t span = hi - lo;
  if (span == 0) return n;
  size_t best = n;
  size_t start = rr_ % span;
  if (config_.balance == Balance::kLeastConn) {
    // Fewest busy connections on this worker; ties broken round-robin.
    for (size_t k = 0; k < span; k++) {
      size_t i = lo + (start + k) % span;
      if (!usable(i, tried)) continue;
      if (best == n || servers_[i].active < servers_[best].active) best = i;
    }
  } else {
    for (size_t k = 0; k < span; k++) {
      size_t i = lo + (start + k) % span;
      if (usable(i, tried)) {
        best = i;
        break;
      }
    }
  }
  if (best != n) rr_ = best - lo + 1;
  return best;
}

UpstreamPool::Acquire UpstreamPool::acquire(UpstreamUser* user, std::vector<bool>& tried,
                                            UpstreamConn** out) {
  if (tried.size() != servers_.size()) tried.assign(servers_.size(), false);
  bool busy = false;
  for (;;) {
    size_t i = pick(tried);
    if (i == servers_.size()) return busy ? Acquire::kBusy : Acquire::kNoServer;
    tried[i] = true;
    Server& s = servers_[i];

    // max_connections caps connections in use (connecting or carrying a request)
    // across the instance; idle pooled ones are capped per worker by `keepalive`, so
    // one worker's idle connections never lock another worker out.
    auto& counter = counters_->count[i];
    if (counter.fetch_add(1, std::memory_order_relaxed) >= static_cast<int64_t>(config_.max_connections)) {
      counter.fetch_sub(1, std::memory_order_relaxed);
      busy = true;
      continue;
    }
    // Half-open: only the allowed probes pass (asked only for a request that will go).
    if (breaker::Breaker* b = counters_->breaker_of(i); b && !b->allow(worker_->now_ms())) {
      counter.fetch_sub(1, std::memory_order_relaxed);
      continue;
    }
    if (!s.idle.empty()) {
      UpstreamConn* c = s.idle.back();
      s.idle.pop_back();
      c->state_ = UpstreamConn::State::kBusy;
      c->user_ = user;
      c->counted_ = true;
      s.active++;
      *out = c;
      return Acquire::kReady;
    }
    auto* c = new UpstreamConn(this, i);
    c->counted_ = true;
    s.active++;
    open_++;
    c->connect(user);
    *out = c;
    return Acquire::kConnecting;
  }
}

void UpstreamPool::release(UpstreamConn* conn, bool reusable) {
  if (conn->state_ == UpstreamConn::State::kClosing) return;
  if (!reusable || !conn->complete_ || conn->spoiled_ || worker_->draining() || retired_ ||
      config_.keepalive == 0 || conn->address_gen_ != servers_[conn->server_].address_gen) {
    conn->close();
    return;
  }
  Server& s = servers_[conn->server_];
  s.active--;
  if (conn->counted_) {
    counters_->count[conn->server_].fetch_sub(1, std::memory_order_relaxed);
    conn->counted_ = false;
  }
  conn->state_ = UpstreamConn::State::kIdle;
  conn->user_ = nullptr;
  conn->timeout_ms_ = 0;
  conn->idle_since_ms_ = worker_->now_ms();
  conn->read_deadline_ms_ = 0;
  conn->resume_reading();
  s.idle.push_back(conn);
}

void UpstreamPool::forget(UpstreamConn* conn) {
  if (conn->counted_) counters_->count[conn->server_].fetch_sub(1, std::memory_order_relaxed);
  open_--;
}

void UpstreamPool::close_idle() {
  for (auto& s : servers_) {
    while (!s.idle.empty()) s.idle.back()->close();  // close() erases it from the stack
  }
}

void UpstreamPool::sweep(uint64_t now_ms) {
  for (auto& s : servers_) {
    // The stack's bottom holds the longest-idle connections.
    size_t excess = s.idle.size() > config_.keepalive ? s.idle.size() - config_.keepalive : 0;
    size_t i = 0;
    while (i < s.idle.size()) {
      UpstreamConn* c = s.idle[i];
      uint64_t idle_for = now_ms - c->idle_since_ms_;
      if (idle_for >= config_.keepalive_timeout_ms || (excess > 0 && idle_for >= kExcessIdleMs)) {
        if (excess > 0) excess--;
        c->close();  // erases index i
        continue;
      }
      i++;
    }
  }
}

}  // namespace fg::proxy
