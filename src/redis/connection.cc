// The connection of a Redis client: the libuv adapter for hiredis, name lookup,
// connect, handshake, reconnect with backoff, and the state machine (see the failure
// table in redis_client.cc).

#include "redis/client_impl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>

#include "core/log.h"

namespace fg::redis {

Client::Impl::Impl(Client* owner, uv_loop_t* loop, Options options)
    : owner_(owner), loop_(loop), opt_(std::move(options)) {
  rng_.seed(static_cast<uint32_t>(uv_hrtime() ^ reinterpret_cast<uintptr_t>(this)));
  backoff_ = std::max<uint64_t>(opt_.backoff_min_ms, 1);
  uv_timer_init(loop_, &conn_timer_);
  uv_timer_init(loop_, &cmd_timer_);
  uv_idle_init(loop_, &sweep_);
  uv_check_init(loop_, &flush_);
  uv_prepare_init(loop_, &flush_before_poll_);
  conn_timer_.data = this;
  cmd_timer_.data = this;
  sweep_.data = this;
  flush_.data = this;
  flush_before_poll_.data = this;
  open_handles_ = 5;
  if (opt_.endpoint.unix_socket) {
    where_ = "unix:" + opt_.endpoint.path;
  } else if (opt_.endpoint.via_sentinel()) {
    where_ = "master " + opt_.endpoint.sentinel.master_name;
    sentinel_ = SentinelWatch::acquire(opt_.endpoint.sentinel);
    uv_async_init(loop_, &moved_, on_master_moved);
    moved_.data = this;
    ++open_handles_;
    sentinel_->listen(&moved_);
  } else {
    where_ = opt_.endpoint.host + ":" + std::to_string(opt_.endpoint.port);
  }
}

// ---- lifecycle -------------------------------------------------------------

void Client::Impl::start() {
  if (closed_ || state_ != State::kIdle) return;
  connect_now();
}

void Client::Impl::close(std::function<void()> on_closed) {
  if (closed_) {
    // Idempotent; a later on_closed runs after the earlier ones, or at once when
    // closing has already completed.
    if (!on_closed) return;
    if (finished_) {
      on_closed();
      return;
    }
    on_closed_ = [first = std::move(on_closed_), then = std::move(on_closed)] {
      if (first) first();
      then();
    };
    return;
  }
  closed_ = true;
  state_ = State::kClosed;
  sub_ = Sub::kNone;
  on_closed_ = std::move(on_closed);
  abandon_resolve();
  detach_context();
  // Callers are told before close() returns, oldest first.
  fail_list(inflight_, Failure::kDisconnected);
  fail_list(sweeping_, Failure::kDisconnected);
  fail_list(failed_, Failure::kDisconnected);
  uv_close(reinterpret_cast<uv_handle_t*>(&conn_timer_), on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&cmd_timer_), on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&sweep_), on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&flush_), on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&flush_before_poll_), on_handle_closed);
  if (sentinel_) {
    sentinel_->unlisten(&moved_);
    uv_close(reinterpret_cast<uv_handle_t*>(&moved_), on_handle_closed);
  }
}

void Client::Impl::on_handle_closed(uv_handle_t* h) {
  Impl* self = static_cast<Impl*>(h->data);
  --self->open_handles_;
  self->maybe_finish();
}

// Runs `on_closed` once every handle, poll watch and lookup is gone. The object may
// be deleted by that callback, so nothing touches `this` afterwards.
void Client::Impl::maybe_finish() {
  if (!closed_ || finished_ || open_handles_ > 0) return;
  if (doomed_ && depth_ == 0) free_doomed();
  if (live_watches_ > 0 || live_resolves_ > 0) return;
  finished_ = true;
  sentinel_.reset();  // the last client of a Sentinel set stops its watch
  // Whatever the subscriber callbacks captured is released here, never while one of
  // them runs (this is only reached from loop callbacks).
  on_message_ = nullptr;
  on_resubscribed_ = nullptr;
  std::function<void()> cb = std::move(on_closed_);
  if (cb) cb();
}

// ---- connecting ------------------------------------------------------------

void Client::Impl::connect_now() {
  state_ = State::kConnecting;
  if (!pick_target()) {
    lose_connection(Failure::kDisconnected, "no master known yet (the sentinels have not answered)");
    return;
  }
  uv_timer_start(&conn_timer_, on_conn_timer, opt_.connect_timeout_ms, 0);
  if (opt_.endpoint.unix_socket || numeric_host_) {
    open_context(opt_.endpoint.unix_socket ? nullptr : host_.c_str());
    return;
  }
  // hiredis would resolve a name with a blocking getaddrinfo(); do it on the
  // thread pool and hand hiredis the numeric address.
  Resolve* r = new (std::nothrow) Resolve;
  if (r == nullptr) {
    lose_connection(Failure::kDisconnected, "out of memory");
    return;
  }
  r->impl = this;
  r->req.data = r;
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(loop_, &r->req, on_resolved, host_.c_str(), nullptr, &hints);
  if (rc < 0) {
    delete r;
    lose_connection(Failure::kDisconnected, std::string("resolve: ") + uv_strerror(rc));
    return;
  }
  state_ = State::kResolving;
  resolving_ = r;
  ++live_resolves_;
}

void Client::Impl::on_resolved(uv_getaddrinfo_t* req, int status, struct addrinfo* res) {
  Resolve* r = static_cast<Resolve*>(req->data);
  Impl* self = r->impl;
  bool abandoned = r->abandoned;
  delete r;
  --self->live_resolves_;
  if (abandoned) {
    if (res) uv_freeaddrinfo(res);
    self->maybe_finish();
    return;
  }
  self->resolving_ = nullptr;
  // IPv4 addresses first (Redis is most often bound to one), and each attempt takes
  // the next address, so a name with an unreachable address still gets through.
  std::vector<std::string> addrs;
  char ip[64] = {0};
  for (int family : {AF_INET, AF_INET6}) {
    for (struct addrinfo* ai = status == 0 ? res : nullptr; ai != nullptr; ai = ai->ai_next) {
      if (ai->ai_family != family) continue;
      if (family == AF_INET6) {
        uv_ip6_name(reinterpret_cast<const struct sockaddr_in6*>(ai->ai_addr), ip, sizeof ip);
      } else {
        uv_ip4_name(reinterpret_cast<const struct sockaddr_in*>(ai->ai_addr), ip, sizeof ip);
      }
      if (std::find(addrs.begin(), addrs.end(), ip) == addrs.end()) addrs.emplace_back(ip);
    }
  }
  if (res) uv_freeaddrinfo(res);
  ip[0] = '\0';
  if (!addrs.empty()) {
    const std::string& pick = addrs[self->next_address_++ % addrs.size()];
    std::snprintf(ip, sizeof ip, "%s", pick.c_str());
  }
  if (ip[0] == '\0') {
    self->lose_connection(Failure::kDisconnected,
                          std::string("resolve ") + self->host_ + ": " +
                              (status < 0 ? uv_strerror(status) : "no address"));
    return;
  }
  self->state_ = State::kConnecting;
  self->open_context(ip);
}

void Client::Impl::abandon_resolve() {
  if (resolving_ == nullptr) return;
  resolving_->abandoned = true;
  uv_cancel(reinterpret_cast<uv_req_t*>(&resolving_->req));
  resolving_ = nullptr;
}

// Creates the hiredis context (non-blocking connect) and attaches it to the loop.
void Client::Impl::open_context(const char* ip) {
  redisAsyncContext* ac = ip ? redisAsyncConnect(ip, port_)
                             : redisAsyncConnectUnix(opt_.endpoint.path.c_str());
  if (ac == nullptr) {
    lose_connection(Failure::kDisconnected, "out of memory");
    return;
  }
  if (ac->err) {
    // Failed synchronously (e.g. a missing unix socket): nothing is attached and no
    // callback is registered, so freeing here runs no hook of ours.
    std::string why = ac->errstr;
    redisAsyncFree(ac);
    lose_connection(Failure::kDisconnected, why);
    return;
  }
  ac->data = this;
  if (!attach(ac)) {
    redisAsyncFree(ac);
    lose_connection(Failure::kDisconnected, "cannot watch the socket");
    return;
  }
  ac_ = ac;
  // Registers the write interest that signals the end of the connect.
  redisAsyncSetConnectCallback(ac, on_connect);
}

bool Client::Impl::attach(redisAsyncContext* ac) {
  Watch* w = new (std::nothrow) Watch;
  if (w == nullptr) return false;
  // uv_poll_init registers nothing with the loop when it fails, so a plain delete is
  // the whole cleanup (hiredis' own adapter leaks its struct here).
  if (uv_poll_init(loop_, &w->poll, ac->c.fd) != 0) {
    delete w;
    return false;
  }
  w->ac = ac;
  w->impl = this;
  w->poll.data = w;
  ++live_watches_;
  ac->ev.data = w;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  return true;
}

void Client::Impl::watch_update(Watch* w, int add, int del) {
  if (w->ac == nullptr) return;
  int events = (w->events | add) & ~del;
  if (events == w->events) return;
  w->events = events;
  int rc = events ? uv_poll_start(&w->poll, events, on_poll) : uv_poll_stop(&w->poll);
  if (rc < 0) w->impl->poll_failed();
}

// hiredis has output to write. On a connected socket the write waits only for the
// end of this loop turn's callbacks: commands issued by I/O callbacks (requests, Redis
// replies) leave in the check phase right after them, commands issued by timers and
// idle callbacks in the prepare phase, before the loop can block in epoll. So the
// commands of a whole turn leave in one write, at once, instead of one turn later
// after epoll reports the socket writable, which also saves the two epoll_ctl calls
// of arming and disarming POLLOUT. A write that does not finish (a full socket
// buffer), and the connect itself, wait for POLLOUT as before.
void Client::Impl::ev_add_write(void* p) {
  Watch* w = static_cast<Watch*>(p);
  Impl* self = w->impl;
  if (w->ac != nullptr && (w->ac->c.flags & REDIS_CONNECTED) && !self->flushing_ && !self->closed_) {
    if (!w->flush_pending) {
      w->flush_pending = true;
      uv_check_start(&self->flush_, on_flush_check);
      uv_prepare_start(&self->flush_before_poll_, on_flush_prepare);
    }
    return;
  }
  watch_update(w, UV_WRITABLE, 0);
}

void Client::Impl::on_flush_check(uv_check_t* h) { static_cast<Impl*>(h->data)->flush_now(); }

void Client::Impl::on_flush_prepare(uv_prepare_t* h) { static_cast<Impl*>(h->data)->flush_now(); }

void Client::Impl::flush_now() {
  uv_check_stop(&flush_);
  uv_prepare_stop(&flush_before_poll_);
  redisAsyncContext* ac = ac_;
  if (ac == nullptr || closed_) return;
  Watch* w = static_cast<Watch*>(ac->ev.data);
  if (w == nullptr || !w->flush_pending) return;
  w->flush_pending = false;
  enter();
  flushing_ = true;
  redisAsyncHandleWrite(ac);
  flushing_ = false;
  leave();
}

// hiredis is about to free the context (our redisAsyncFree, or its own after an I/O
// error or a failed connect). This runs inside hiredis: close the handle, free later.
void Client::Impl::ev_cleanup(void* p) {
  Watch* w = static_cast<Watch*>(p);
  redisAsyncContext* ac = w->ac;
  w->ac = nullptr;
  w->events = 0;
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), on_watch_closed);
  if (ac) w->impl->context_gone(ac);
}

void Client::Impl::on_watch_closed(uv_handle_t* h) {
  Watch* w = static_cast<Watch*>(h->data);
  Impl* self = w->impl;
  delete w;
  --self->live_watches_;
  self->maybe_finish();
}

void Client::Impl::on_poll(uv_poll_t* h, int status, int events) {
  Watch* w = static_cast<Watch*>(h->data);
  Impl* self = w->impl;
  // On a poll error let hiredis find the socket error itself.
  int ev = status < 0 ? (w->events | UV_READABLE | UV_WRITABLE) : events;
  if (w->ac && (ev & UV_READABLE)) {
    self->enter();
    redisAsyncHandleRead(w->ac);
    self->leave();
  }
  if (w->ac && (ev & UV_WRITABLE)) {
    self->enter();
    redisAsyncHandleWrite(w->ac);
    self->leave();
  }
}

void Client::Impl::leave() {
  if (--depth_ == 0 && doomed_) free_doomed();
}

void Client::Impl::free_doomed() {
  redisAsyncContext* ac = doomed_;
  doomed_ = nullptr;
  free_context(ac);
}

void Client::Impl::free_context(redisAsyncContext* ac) {
  enter();
  redisAsyncFree(ac);  // runs NULL-reply callbacks and the cleanup hook
  leave();
}

// Forgets the current context; frees it now, or once hiredis is off the stack.
void Client::Impl::detach_context() {
  redisAsyncContext* ac = ac_;
  ac_ = nullptr;
  if (ac == nullptr) return;
  if (depth_ == 0) {
    free_context(ac);
  } else {
    doomed_ = ac;
  }
}

void Client::Impl::context_gone(redisAsyncContext* ac) {
  if (ac == doomed_) {
    doomed_ = nullptr;
    return;
  }
  if (ac != ac_) return;  // one we detached ourselves
  ac_ = nullptr;
  std::string why = ac->errstr[0] ? ac->errstr : "connection closed";
  lose_connection(Failure::kDisconnected, why);
}

void Client::Impl::poll_failed(const char* why) {
  // Called from an ev hook, possibly inside command(): never fail callers here.
  io_failed_ = true;
  io_failed_why_ = why;
  uv_idle_start(&sweep_, on_sweep);
}

void Client::Impl::on_connect(const redisAsyncContext* cac, int status) {
  Impl* self = static_cast<Impl*>(cac->data);
  // A failed connect is followed at once by hiredis freeing the context, which
  // reaches context_gone() through the cleanup hook.
  if (status != REDIS_OK) return;
  redisAsyncContext* ac = const_cast<redisAsyncContext*>(cac);
  if (ac != self->ac_) return;
  self->state_ = State::kHandshake;
  // AUTH and SELECT go first on the wire, and the connection only counts as up when
  // the last of them (or a PING) is answered: that proves the server is serving.
  self->handshake_left_ = 0;
  const Endpoint& ep = self->opt_.endpoint;
  bool ok = true;
  if (!ep.password.empty()) {
    Argv a;
    a.add("AUTH");
    a.add(ep.password);
    ok = ok && self->send_internal(ac, on_handshake_reply, kStepAuth, a);
  }
  std::string db = std::to_string(ep.db);
  if (ep.db != 0) {
    Argv a;
    a.add("SELECT");
    a.add(db);
    ok = ok && self->send_internal(ac, on_handshake_reply, kStepSelect, a);
  }
  if (self->sentinel_) {
    // Nothing is written to a replica: the connection only counts once ROLE says
    // "master" (the Sentinels may be behind, or the old master back as one).
    Argv a;
    a.add("ROLE");
    ok = ok && self->send_internal(ac, on_handshake_reply, kStepRole, a);
  } else if (self->handshake_left_ == 0) {
    Argv a;
    a.add("PING");
    ok = ok && self->send_internal(ac, on_handshake_reply, kStepPing, a);
  }
  if (!ok) self->lose_connection(Failure::kDisconnected, "cannot queue the handshake");
}

bool Client::Impl::send_internal(redisAsyncContext* ac, redisCallbackFn* fn, intptr_t step, Argv& a) {
  enter();
  int rc = redisAsyncCommandArgv(ac, fn, reinterpret_cast<void*>(step), a.argc(), a.argv(), a.lens());
  leave();
  if (rc != REDIS_OK) return false;
  ++handshake_left_;
  return true;
}

void Client::Impl::on_handshake_reply(redisAsyncContext* ac, void* r, void* privdata) {
  Impl* self = static_cast<Impl*>(ac->data);
  if (r == nullptr || ac != self->ac_ || self->state_ != State::kHandshake) return;
  const redisReply* reply = static_cast<const redisReply*>(r);
  intptr_t step = reinterpret_cast<intptr_t>(privdata);
  if (reply->type == REDIS_REPLY_ERROR) {
    std::string why = step == kStepAuth     ? "AUTH failed: "
                      : step == kStepSelect ? "SELECT failed: "
                      : step == kStepRole   ? "ROLE failed: "
                                            : "PING failed: ";
    why.append(reply->str, reply->len);
    self->lose_connection(Failure::kDisconnected, why);
    return;
  }
  if (step == kStepRole) {
    // Only the first element matters (the rest is replication detail).
    Reply head;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 && is_str(reply->element[0])) {
      head.type = Reply::Type::kArray;
      head.elements.resize(1);
      head.elements[0].type = Reply::Type::kString;
      head.elements[0].str.assign(view(reply->element[0]));
    }
    const std::string role = role_of(head);
    if (role != "master") {
      const std::string why = "not the master (ROLE says " + (role.empty() ? std::string("nothing") : role) + ")";
      // Every refusal is logged (not once per outage): it means the Sentinels name a
      // server that is not writable, which an operator should see.
      log::event("warn", "redis_not_master", [&](log::Line& l) {
        l.str("client", self->opt_.name).str("endpoint", self->where_).str("reason", why);
      });
      self->lose_connection(Failure::kDisconnected, why);
      return;
    }
  }
  if (--self->handshake_left_ > 0) return;
  self->went_up();
}

void Client::Impl::went_up() {
  uv_timer_stop(&conn_timer_);
  state_ = State::kUp;
  // A subscriber only counts as recovered once its channels are confirmed: a server
  // that refuses them (an ACL) must not be retried at the minimum backoff forever.
  if (!subscriber_ || channels_.empty()) backoff_ = std::max<uint64_t>(opt_.backoff_min_ms, 1);
  failure_logged_ = false;
  log::event("info", "redis_up", [&](log::Line& l) { l.str("client", opt_.name).str("endpoint", where_); });
  if (opt_.on_state) opt_.on_state(true);
  // Nothing else can be on the wire after the handshake: a subscriber sends no
  // commands (or subscribe() was called from on_state and has already sent it).
  if (!closed_ && state_ == State::kUp) send_subscribe();
}

// The connection (or the attempt) is over: fail the callers in flight, report the
// up->down transition once, and schedule the next attempt. May run inside hiredis.
void Client::Impl::lose_connection(Failure reason, const std::string& why) {
  if (closed_) return;
  bool was_up = state_ == State::kUp;
  uv_timer_stop(&conn_timer_);
  abandon_resolve();
  detach_context();
  state_ = State::kBackoff;
  sub_ = Sub::kNone;
  if (was_up) {
    log::event("warn", "redis_down", [&](log::Line& l) {
      l.str("client", opt_.name).str("endpoint", where_).str("reason", why);
    });
  } else if (!failure_logged_) {
    // Logged once per outage; the attempts that follow fail the same way.
    log::event("warn", "redis_connect_failed", [&](log::Line& l) {
      l.str("client", opt_.name).str("endpoint", where_).str("reason", why);
    });
  }
  failure_logged_ = true;
  suspect_master();
  fail_list(inflight_, reason);
  if (closed_) return;
  if (was_up && opt_.on_state) {
    opt_.on_state(false);
    if (closed_) return;
  }
  if (state_ == State::kBackoff && !uv_is_active(reinterpret_cast<uv_handle_t*>(&conn_timer_))) {
    schedule_reconnect();
  }
}

// Full jitter: wait uniformly in [0, backoff], then double backoff up to the cap.
void Client::Impl::schedule_reconnect() {
  uint64_t cap = std::max<uint64_t>(opt_.backoff_max_ms, 1);
  uint64_t ceiling = std::min(backoff_, cap);
  uint64_t delay = std::uniform_int_distribution<uint64_t>(0, ceiling)(rng_);
  backoff_ = std::min(ceiling * 2, cap);
  state_ = State::kBackoff;
  uv_timer_start(&conn_timer_, on_conn_timer, delay, 0);
}

void Client::Impl::on_conn_timer(uv_timer_t* t) {
  Impl* self = static_cast<Impl*>(t->data);
  if (self->state_ == State::kBackoff) {
    ++self->owner_->reconnects_;
    self->connect_now();
    return;
  }
  if (self->state_ == State::kResolving || self->state_ == State::kConnecting ||
      self->state_ == State::kHandshake) {
    self->lose_connection(Failure::kDisconnected, "connect timeout");
    return;
  }
  if (self->state_ == State::kUp && self->sub_ == Sub::kPending) {
    ++self->owner_->timeouts_;
    self->lose_connection(Failure::kTimeout, "subscribe timeout");
  }
}

}  // namespace fg::redis

namespace fg::redis {

// ---- Sentinel ----------------------------------------------------------------

bool Client::Impl::pick_target() {
  if (opt_.endpoint.unix_socket) return true;
  std::string host = opt_.endpoint.host;
  uint16_t port = opt_.endpoint.port;
  if (sentinel_ && !sentinel_->master(&host, &port)) return false;
  if (host == host_ && port == port_) return true;
  host_ = std::move(host);
  port_ = port;
  unsigned char buf[sizeof(struct in6_addr)];
  numeric_host_ = inet_pton(AF_INET, host_.c_str(), buf) == 1 || inet_pton(AF_INET6, host_.c_str(), buf) == 1;
  where_ = host_ + ":" + std::to_string(port_);
  if (sentinel_) where_ += " (master " + opt_.endpoint.sentinel.master_name + ")";
  return true;
}

void Client::Impl::on_master_moved(uv_async_t* a) {
  Impl* self = static_cast<Impl*>(a->data);
  if (self->closed_ || self->state_ == State::kIdle) return;
  std::string host;
  uint16_t port = 0;
  if (!self->sentinel_->master(&host, &port)) return;
  const bool same = host == self->host_ && port == self->port_;
  if (self->state_ != State::kBackoff) {
    if (same) return;  // already there, or on the way
    // Commands in flight fail now (kDisconnected): whether they ran on the old
    // master is unknown, so none is replayed here.
    self->lose_connection(Failure::kDisconnected, "the sentinels name another master: " + host + ":" +
                                                      std::to_string(port));
    if (self->closed_) return;
  }
  if (self->state_ != State::kBackoff) return;
  // No backoff towards a master just announced.
  uv_timer_stop(&self->conn_timer_);
  self->backoff_ = std::max<uint64_t>(self->opt_.backoff_min_ms, 1);
  ++self->owner_->reconnects_;
  self->connect_now();
}

void Client::Impl::suspect_master() {
  if (sentinel_) sentinel_->suspect();
}

void Client::Impl::check_readonly(const redisReply* reply) {
  if (!sentinel_ || reply->type != REDIS_REPLY_ERROR || reply->len < 8 || std::memcmp(reply->str, "READONLY", 8) != 0) {
    return;
  }
  // Inside hiredis: the connection is dropped on the next loop turn.
  poll_failed("READONLY: the server is a replica now");
}

}  // namespace fg::redis
