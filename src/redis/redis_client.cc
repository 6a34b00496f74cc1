// The asynchronous Redis client: a small libuv adapter for hiredis, the
// connect/handshake/reconnect state machine and per-command deadlines.
//
// What happens on failure:
//   connect refused / reset, DNS failure,   down; attempts again after a backoff with full
//   connect timeout, AUTH or SELECT error   jitter; logged once per outage
//   connection lost while up                commands in flight fail with kDisconnected,
//                                           on_state(false), "redis_down" logged, reconnect
//   oldest command past its deadline        every command in flight fails with kTimeout,
//                                           timeouts() + 1, the connection is dropped
//   command()/eval() while not up           kDisconnected on the next loop turn
//   NOSCRIPT from EVALSHA                   SCRIPT LOAD and one retry, same deadline
//   subscriber: (P)SUBSCRIBE not confirmed  timeouts() + 1, the connection is dropped and
//   within the command timeout              re-established with backoff, then subscribes
//                                           again (messages themselves have no deadline)
//   subscriber: (P)SUBSCRIBE refused (ACL)  dropped and retried; the backoff is only reset
//                                           once the channels are confirmed
//   command()/eval() on a subscriber        kDisconnected on the next loop turn
//   ~Client before on_closed ran            abort (the loop would point at freed memory)
//
// The connection only counts as up once the server has answered the handshake (AUTH,
// SELECT, or a PING when neither is needed), so a server that accepts TCP but is
// stopped is not reported up. Commands are only accepted while up, so nothing of the
// caller's can reach the wire before AUTH and SELECT.
//
// Freeing a hiredis context from inside one of its callbacks is undefined, so every
// free goes through detach_context(): it frees at once when no hiredis function is on
// the stack, and otherwise parks the context until the outermost one returns.
//
// Subscriber mode: (P)SUBSCRIBE is sent once per connection, after the handshake. hiredis
// keeps that callback in its channel table and runs it for the confirmations and every
// message, then once per channel with NULL when the context is freed. Its privdata is
// unused (no allocation to own): the callback finds the client through ac->data and
// ignores every call that is not for the current context, such as messages still
// buffered in a context that is being dropped, or the NULL calls of a freed one.
#include "redis/redis_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <random>
#include <utility>

#include "core/log.h"

namespace fg::redis {

// ---------------------------------------------------------------------------------
// Client internals

namespace {

// An intrusive FIFO so that an operation can leave the middle of a list in O(1)
// (an EVALSHA retried after NOSCRIPT finishes after younger commands).
template <typename T>
struct List {
  T* head = nullptr;
  T* tail = nullptr;

  void push_back(T* n) {
    n->prev = tail;
    n->next = nullptr;
    if (tail) tail->next = n; else head = n;
    tail = n;
    n->list = this;
  }
  void remove(T* n) {
    if (n->prev) n->prev->next = n->next; else head = n->next;
    if (n->next) n->next->prev = n->prev; else tail = n->prev;
    n->prev = n->next = nullptr;
    n->list = nullptr;
  }
  void take(List& other) {  // moves every element of `other` to the end of this list
    while (T* n = other.head) {
      other.remove(n);
      push_back(n);
    }
  }
};

void convert_reply(const redisReply* r, Reply& out) {
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::kArray;
      out.elements.resize(r->elements);
      for (size_t i = 0; i < r->elements; ++i) convert_reply(r->element[i], out.elements[i]);
      break;
    default:
      out.type = Reply::Type::kNil;
      break;
  }
}

// argv for hiredis without a heap allocation for the common short command.
class Argv {
 public:
  void add(std::string_view s) {
    if (n_ < kInline) {
      ptr_[n_] = s.data();
      len_[n_] = s.size();
    } else {
      if (n_ == kInline) {
        heap_ptr_.assign(ptr_, ptr_ + kInline);
        heap_len_.assign(len_, len_ + kInline);
      }
      heap_ptr_.push_back(s.data());
      heap_len_.push_back(s.size());
    }
    ++n_;
  }
  int argc() const { return static_cast<int>(n_); }
  const char** argv() { return n_ <= kInline ? ptr_ : heap_ptr_.data(); }
  const size_t* lens() { return n_ <= kInline ? len_ : heap_len_.data(); }

 private:
  static constexpr size_t kInline = 16;
  size_t n_ = 0;
  const char* ptr_[kInline];
  size_t len_[kInline];
  std::vector<const char*> heap_ptr_;
  std::vector<size_t> heap_len_;
};

// The arguments of the string_view overloads, copied into one buffer: one allocation
// per command instead of a vector and a string per argument. An eval keeps them until
// its reply, since NOSCRIPT sends the EVALSHA again.
struct Packed {
  static constexpr size_t kMax = 16;
  std::string buf;
  uint32_t lens[kMax];
  size_t keys = 0;   // the first `keys` arguments are KEYS (eval)
  size_t count = 0;  // 0: the op uses its vectors

  static bool fits(size_t n) { return n > 0 && n <= kMax; }
  void set(std::span<const std::string_view> a, std::span<const std::string_view> b) {
    size_t total = 0;
    for (std::string_view s : a) total += s.size();
    for (std::string_view s : b) total += s.size();
    buf.clear();
    buf.reserve(total);
    count = 0;
    for (std::string_view s : a) push(s);
    for (std::string_view s : b) push(s);
    keys = a.size();
  }
  void add_to(Argv& argv) const {
    size_t off = 0;
    for (size_t i = 0; i < count; ++i) {
      argv.add(std::string_view(buf.data() + off, lens[i]));
      off += lens[i];
    }
  }

 private:
  void push(std::string_view s) {
    buf.append(s);
    lens[count++] = static_cast<uint32_t>(s.size());
  }
};

}  // namespace

struct Client::Impl {
  enum class State { kIdle, kResolving, kConnecting, kHandshake, kUp, kBackoff, kClosed };

  // One caller operation: a command, or an eval that may take several Redis commands.
  // It is owned jointly by the client (while linked in a list, i.e. not done) and by
  // hiredis (one reference per command whose callback hiredis has not run yet; hiredis
  // runs every registered callback exactly once, with NULL when the context is freed).
  struct Op {
    Op* prev = nullptr;
    Op* next = nullptr;
    List<Op>* list = nullptr;
    Impl* impl = nullptr;
    Callback cb;
    uint64_t deadline = 0;
    int hiredis_refs = 0;
    bool done = false;
    bool retried = false;  // an eval already reloaded its script once
    Script* script = nullptr;        // eval only; owned by the caller
    std::vector<std::string> keys;   // eval KEYS
    std::vector<std::string> args;   // eval ARGV, or the command until it is sent
    Packed packed;                   // instead of keys and args (string_view overloads)
  };

  // The libuv side of one hiredis context. hiredis calls the ev hooks; the poll handle
  // is closed by the cleanup hook and the struct is freed in the close callback only,
  // because cleanup runs inside hiredis (even inside our own poll callback).
  struct Watch {
    uv_poll_t poll;
    redisAsyncContext* ac = nullptr;
    Impl* impl = nullptr;
    int events = 0;
  };

  // An asynchronous name lookup; freed by its callback, which always runs (also
  // after uv_cancel) and which close() waits for.
  struct Resolve {
    uv_getaddrinfo_t req;
    Impl* impl = nullptr;
    bool abandoned = false;
  };

  Impl(Client* owner, uv_loop_t* loop, Options options)
      : owner_(owner), loop_(loop), opt_(std::move(options)) {
    rng_.seed(static_cast<uint32_t>(uv_hrtime() ^ reinterpret_cast<uintptr_t>(this)));
    backoff_ = std::max<uint64_t>(opt_.backoff_min_ms, 1);
    uv_timer_init(loop_, &conn_timer_);
    uv_timer_init(loop_, &cmd_timer_);
    uv_idle_init(loop_, &sweep_);
    conn_timer_.data = this;
    cmd_timer_.data = this;
    sweep_.data = this;
    open_handles_ = 3;
    if (opt_.endpoint.unix_socket) {
      where_ = "unix:" + opt_.endpoint.path;
    } else {
      where_ = opt_.endpoint.host + ":" + std::to_string(opt_.endpoint.port);
      unsigned char buf[sizeof(struct in6_addr)];
      numeric_host_ = inet_pton(AF_INET, opt_.endpoint.host.c_str(), buf) == 1 ||
                      inet_pton(AF_INET6, opt_.endpoint.host.c_str(), buf) == 1;
    }
  }

  // ---- lifecycle -------------------------------------------------------------

  void start() {
    if (closed_ || state_ != State::kIdle) return;
    connect_now();
  }

  void close(std::function<void()> on_closed) {
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
  }

  static void on_handle_closed(uv_handle_t* h) {
    Impl* self = static_cast<Impl*>(h->data);
    --self->open_handles_;
    self->maybe_finish();
  }

  // Runs `on_closed` once every handle, poll watch and lookup is gone. The object may
  // be deleted by that callback, so nothing touches `this` afterwards.
  void maybe_finish() {
    if (!closed_ || finished_ || open_handles_ > 0) return;
    if (doomed_ && depth_ == 0) free_doomed();
    if (live_watches_ > 0 || live_resolves_ > 0) return;
    finished_ = true;
    // Whatever the subscriber callbacks captured is released here, never while one of
    // them runs (this is only reached from loop callbacks).
    on_message_ = nullptr;
    on_resubscribed_ = nullptr;
    std::function<void()> cb = std::move(on_closed_);
    if (cb) cb();
  }

  // ---- connecting ------------------------------------------------------------

  void connect_now() {
    state_ = State::kConnecting;
    uv_timer_start(&conn_timer_, on_conn_timer, opt_.connect_timeout_ms, 0);
    if (opt_.endpoint.unix_socket || numeric_host_) {
      open_context(opt_.endpoint.unix_socket ? nullptr : opt_.endpoint.host.c_str());
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
    int rc = uv_getaddrinfo(loop_, &r->req, on_resolved, opt_.endpoint.host.c_str(), nullptr, &hints);
    if (rc < 0) {
      delete r;
      lose_connection(Failure::kDisconnected, std::string("resolve: ") + uv_strerror(rc));
      return;
    }
    state_ = State::kResolving;
    resolving_ = r;
    ++live_resolves_;
  }

  static void on_resolved(uv_getaddrinfo_t* req, int status, struct addrinfo* res) {
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
                            std::string("resolve ") + self->opt_.endpoint.host + ": " +
                                (status < 0 ? uv_strerror(status) : "no address"));
      return;
    }
    self->state_ = State::kConnecting;
    self->open_context(ip);
  }

  void abandon_resolve() {
    if (resolving_ == nullptr) return;
    resolving_->abandoned = true;
    uv_cancel(reinterpret_cast<uv_req_t*>(&resolving_->req));
    resolving_ = nullptr;
  }

  // Creates the hiredis context (non-blocking connect) and attaches it to the loop.
  void open_context(const char* ip) {
    redisAsyncContext* ac = ip ? redisAsyncConnect(ip, opt_.endpoint.port)
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

  bool attach(redisAsyncContext* ac) {
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

  static void watch_update(Watch* w, int add, int del) {
    if (w->ac == nullptr) return;
    int events = (w->events | add) & ~del;
    if (events == w->events) return;
    w->events = events;
    int rc = events ? uv_poll_start(&w->poll, events, on_poll) : uv_poll_stop(&w->poll);
    if (rc < 0) w->impl->poll_failed();
  }
  static void ev_add_read(void* p) { watch_update(static_cast<Watch*>(p), UV_READABLE, 0); }
  static void ev_del_read(void* p) { watch_update(static_cast<Watch*>(p), 0, UV_READABLE); }
  static void ev_add_write(void* p) { watch_update(static_cast<Watch*>(p), UV_WRITABLE, 0); }
  static void ev_del_write(void* p) { watch_update(static_cast<Watch*>(p), 0, UV_WRITABLE); }

  // hiredis is about to free the context (our redisAsyncFree, or its own after an I/O
  // error or a failed connect). This runs inside hiredis: close the handle, free later.
  static void ev_cleanup(void* p) {
    Watch* w = static_cast<Watch*>(p);
    redisAsyncContext* ac = w->ac;
    w->ac = nullptr;
    w->events = 0;
    uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), on_watch_closed);
    if (ac) w->impl->context_gone(ac);
  }

  static void on_watch_closed(uv_handle_t* h) {
    Watch* w = static_cast<Watch*>(h->data);
    Impl* self = w->impl;
    delete w;
    --self->live_watches_;
    self->maybe_finish();
  }

  static void on_poll(uv_poll_t* h, int status, int events) {
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

  // depth_ > 0 while a hiredis function is on the stack; a context is never freed
  // then (hiredis would touch it after our callback returns). The context to drop is
  // parked in doomed_ and freed as soon as the outermost hiredis call returns.
  void enter() { ++depth_; }
  void leave() {
    if (--depth_ == 0 && doomed_) free_doomed();
  }
  void free_doomed() {
    redisAsyncContext* ac = doomed_;
    doomed_ = nullptr;
    free_context(ac);
  }
  void free_context(redisAsyncContext* ac) {
    enter();
    redisAsyncFree(ac);  // runs NULL-reply callbacks and the cleanup hook
    leave();
  }

  // Forgets the current context; frees it now, or once hiredis is off the stack.
  void detach_context() {
    redisAsyncContext* ac = ac_;
    ac_ = nullptr;
    if (ac == nullptr) return;
    if (depth_ == 0) {
      free_context(ac);
    } else {
      doomed_ = ac;
    }
  }

  void context_gone(redisAsyncContext* ac) {
    if (ac == doomed_) {
      doomed_ = nullptr;
      return;
    }
    if (ac != ac_) return;  // one we detached ourselves
    ac_ = nullptr;
    std::string why = ac->errstr[0] ? ac->errstr : "connection closed";
    lose_connection(Failure::kDisconnected, why);
  }

  void poll_failed(const char* why = "poll failed") {
    // Called from an ev hook, possibly inside command(): never fail callers here.
    io_failed_ = true;
    io_failed_why_ = why;
    uv_idle_start(&sweep_, on_sweep);
  }

  static void on_connect(const redisAsyncContext* cac, int status) {
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
    if (self->handshake_left_ == 0) {
      Argv a;
      a.add("PING");
      ok = ok && self->send_internal(ac, on_handshake_reply, kStepPing, a);
    }
    if (!ok) self->lose_connection(Failure::kDisconnected, "cannot queue the handshake");
  }

  static constexpr intptr_t kStepAuth = 1;
  static constexpr intptr_t kStepSelect = 2;
  static constexpr intptr_t kStepPing = 3;

  bool send_internal(redisAsyncContext* ac, redisCallbackFn* fn, intptr_t step, Argv& a) {
    enter();
    int rc = redisAsyncCommandArgv(ac, fn, reinterpret_cast<void*>(step), a.argc(), a.argv(), a.lens());
    leave();
    if (rc != REDIS_OK) return false;
    ++handshake_left_;
    return true;
  }

  static void on_handshake_reply(redisAsyncContext* ac, void* r, void* privdata) {
    Impl* self = static_cast<Impl*>(ac->data);
    if (r == nullptr || ac != self->ac_ || self->state_ != State::kHandshake) return;
    const redisReply* reply = static_cast<const redisReply*>(r);
    intptr_t step = reinterpret_cast<intptr_t>(privdata);
    if (reply->type == REDIS_REPLY_ERROR) {
      std::string why = step == kStepAuth ? "AUTH failed: " : step == kStepSelect ? "SELECT failed: " : "PING failed: ";
      why.append(reply->str, reply->len);
      self->lose_connection(Failure::kDisconnected, why);
      return;
    }
    if (--self->handshake_left_ > 0) return;
    self->went_up();
  }

  void went_up() {
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
  void lose_connection(Failure reason, const std::string& why) {
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
  void schedule_reconnect() {
    uint64_t cap = std::max<uint64_t>(opt_.backoff_max_ms, 1);
    uint64_t ceiling = std::min(backoff_, cap);
    uint64_t delay = std::uniform_int_distribution<uint64_t>(0, ceiling)(rng_);
    backoff_ = std::min(ceiling * 2, cap);
    state_ = State::kBackoff;
    uv_timer_start(&conn_timer_, on_conn_timer, delay, 0);
  }

  static void on_conn_timer(uv_timer_t* t) {
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

  // ---- subscriber mode -------------------------------------------------------

  void subscribe(bool pattern, std::vector<std::string> channels,
                 std::function<void(std::string_view, std::string_view)> on_message,
                 std::function<void()> on_resubscribed) {
    if (closed_) return;
    if (subscriber_) {
      log::event("warn", "redis_subscribe_ignored", [&](log::Line& l) {
        l.str("client", opt_.name).str("reason", "already a subscriber");
      });
      return;
    }
    // hiredis keys its callback table by name: a duplicate would replace the entry
    // and the confirmation count would never reach zero.
    std::sort(channels.begin(), channels.end());
    channels.erase(std::unique(channels.begin(), channels.end()), channels.end());
    subscriber_ = true;
    pattern_ = pattern;
    channels_ = std::move(channels);
    on_message_ = std::move(on_message);
    on_resubscribed_ = std::move(on_resubscribed);
    // While up this sends at once; otherwise went_up() does after the next handshake.
    if (state_ == State::kUp) send_subscribe();
  }

  // Sends (P)SUBSCRIBE on the current connection, once, and arms the confirmation
  // deadline. Never calls back into the caller: a failure is handled on the next turn.
  void send_subscribe() {
    if (!subscriber_ || closed_ || state_ != State::kUp || ac_ == nullptr || sub_ != Sub::kNone) return;
    if (channels_.empty()) return;
    if (!opt_.endpoint.unix_socket) enable_keepalive(ac_->c.fd);
    Argv a;
    a.add(pattern_ ? "PSUBSCRIBE" : "SUBSCRIBE");
    for (const std::string& c : channels_) a.add(c);
    enter();
    int rc = redisAsyncCommandArgv(ac_, on_subscribe_reply, nullptr, a.argc(), a.argv(), a.lens());
    leave();
    if (rc != REDIS_OK) {
      poll_failed("cannot queue SUBSCRIBE");
      return;
    }
    sub_ = Sub::kPending;
    sub_left_ = channels_.size();
    uv_timer_start(&conn_timer_, on_conn_timer, opt_.command_timeout_ms, 0);
  }

  // A subscriber only ever reads, so a peer that vanished without a FIN or RST (host
  // down, a NAT or firewall dropping the flow) would go unnoticed for good without
  // keepalive probes. Best effort: failing to set them costs only that detection.
  static void enable_keepalive(int fd) {
    int on = 1;
    if (::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) != 0) return;
#if defined(TCP_KEEPIDLE) && defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT)
    int idle = 15;
    int interval = 5;
    int count = 3;
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
#endif
  }

  static bool is_str(const redisReply* r) { return r != nullptr && r->type == REDIS_REPLY_STRING; }
  static std::string_view view(const redisReply* r) { return std::string_view(r->str, r->len); }

  // Runs for each confirmation ["subscribe", channel, count] / ["psubscribe", ...], each
  // message ["message", channel, payload] / ["pmessage", pattern, channel, payload],
  // and with NULL (ignored) when the context is freed.
  static void on_subscribe_reply(redisAsyncContext* ac, void* r, void*) {
    Impl* self = static_cast<Impl*>(ac->data);
    if (r == nullptr || ac != self->ac_ || self->closed_ || self->state_ != State::kUp) return;
    const redisReply* reply = static_cast<const redisReply*>(r);
    if (reply->type == REDIS_REPLY_ERROR) {
      // hiredis 0.14 drops the connection itself on an error in subscribe mode (e.g. an
      // ACL denying the channel); should one reach us anyway, the outcome is the same.
      std::string why = "SUBSCRIBE failed: ";
      why.append(reply->str, reply->len);
      self->lose_connection(Failure::kDisconnected, why);
      return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 || !is_str(reply->element[0])) return;
    std::string_view kind = view(reply->element[0]);
    if (kind == "message" && reply->elements == 3) {
      if (is_str(reply->element[1]) && is_str(reply->element[2])) {
        self->deliver(view(reply->element[1]), view(reply->element[2]));
      }
      return;
    }
    if (kind == "pmessage" && reply->elements == 4) {
      if (is_str(reply->element[2]) && is_str(reply->element[3])) {
        self->deliver(view(reply->element[2]), view(reply->element[3]));
      }
      return;
    }
    if ((kind == "subscribe" || kind == "psubscribe") && self->sub_ == Sub::kPending) {
      if (--self->sub_left_ > 0) return;
      self->sub_ = Sub::kActive;
      uv_timer_stop(&self->conn_timer_);
      self->backoff_ = std::max<uint64_t>(self->opt_.backoff_min_ms, 1);
      if (self->on_resubscribed_) self->on_resubscribed_();
    }
  }

  void deliver(std::string_view channel, std::string_view payload) {
    if (on_message_) on_message_(channel, payload);
  }

  // ---- commands --------------------------------------------------------------

  Op* new_op(Callback cb) {
    Op* op = new Op;
    op->impl = this;
    op->cb = std::move(cb);
    return op;
  }

  void submit(Op* op, bool (Impl::*send_first)(Op*)) {
    // A connection in subscribe mode only accepts (P)(UN)SUBSCRIBE, PING and QUIT, and
    // hiredis 0.14 cannot match other replies there.
    if (subscriber_ || state_ != State::kUp || ac_ == nullptr) {
      fail_later(op);
      return;
    }
    op->deadline = uv_now(loop_) + opt_.command_timeout_ms;
    inflight_.push_back(op);
    if (!(this->*send_first)(op)) {
      inflight_.remove(op);
      fail_later(op);
      return;
    }
    if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&cmd_timer_))) {
      uv_timer_start(&cmd_timer_, on_cmd_timer, opt_.command_timeout_ms, 0);
    }
  }

  bool send(Op* op, redisCallbackFn* fn, Argv& a) {
    if (ac_ == nullptr) return false;
    enter();
    int rc = redisAsyncCommandArgv(ac_, fn, op, a.argc(), a.argv(), a.lens());
    leave();
    if (rc != REDIS_OK) return false;
    ++op->hiredis_refs;
    return true;
  }

  bool send_command(Op* op) {
    Argv a;
    for (const std::string& s : op->args) a.add(s);
    op->packed.add_to(a);
    bool ok = send(op, on_command_reply, a);
    // hiredis formatted its own copy; the arguments are not needed any more.
    op->args.clear();
    op->args.shrink_to_fit();
    op->packed.buf.clear();
    op->packed.buf.shrink_to_fit();
    op->packed.count = 0;
    return ok;
  }

  bool send_script_load(Op* op) {
    Argv a;
    a.add("SCRIPT");
    a.add("LOAD");
    a.add(op->script->source);
    return send(op, on_script_load_reply, a);
  }

  bool send_evalsha(Op* op) {
    std::string numkeys = std::to_string(op->packed.count > 0 ? op->packed.keys : op->keys.size());
    Argv a;
    a.add("EVALSHA");
    a.add(op->script->sha);
    a.add(numkeys);
    for (const std::string& k : op->keys) a.add(k);
    for (const std::string& v : op->args) a.add(v);
    op->packed.add_to(a);
    return send(op, on_evalsha_reply, a);
  }

  // A new op for a caller, or nullptr once closed: then the callback has already run
  // (after close() there is no loop turn left to defer to).
  Op* accept(Callback cb) {
    if (closed_) {
      Reply empty;
      if (cb) cb(Failure::kDisconnected, empty);
      return nullptr;
    }
    return new_op(std::move(cb));
  }

  bool start_eval(Op* op) {
    return op->script->sha.empty() ? send_script_load(op) : send_evalsha(op);
  }

  // Drops hiredis' reference after it ran one of our callbacks.
  static void release(Op* op) {
    --op->hiredis_refs;
    if (op->done && op->hiredis_refs == 0) delete op;
  }

  // Delivers the outcome exactly once. The op is unlinked and marked done before the
  // callback runs, so a re-entrant close() or command() never sees it again.
  void finish_op(Op* op, Failure failure, Reply& reply) {
    if (op->list) op->list->remove(op);
    op->done = true;
    Callback cb = std::move(op->cb);
    if (op->hiredis_refs == 0) delete op;
    if (cb) cb(failure, reply);
  }

  void fail_list(List<Op>& list, Failure failure) {
    while (Op* op = list.head) {
      Reply empty;
      finish_op(op, failure, empty);
    }
  }

  // Fails an op on the next loop turn, never inside the caller's own call.
  void fail_later(Op* op) {
    failed_.push_back(op);
    uv_idle_start(&sweep_, on_sweep);
  }

  static void on_command_reply(redisAsyncContext*, void* r, void* privdata) {
    Op* op = static_cast<Op*>(privdata);
    if (r == nullptr || op->done) {
      release(op);
      return;
    }
    --op->hiredis_refs;
    Reply reply;
    convert_reply(static_cast<redisReply*>(r), reply);
    op->impl->finish_op(op, Failure::kNone, reply);
  }

  // SCRIPT LOAD answers with the sha, which the EVALSHA that follows needs: the
  // script may have been given a stale sha, so it is never guessed.
  static void on_script_load_reply(redisAsyncContext*, void* r, void* privdata) {
    Op* op = static_cast<Op*>(privdata);
    if (r == nullptr || op->done) {
      release(op);
      return;
    }
    --op->hiredis_refs;
    Impl* self = op->impl;
    const redisReply* reply = static_cast<const redisReply*>(r);
    if (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_STATUS) {
      Reply out;  // e.g. a compile error in the script
      convert_reply(reply, out);
      self->finish_op(op, Failure::kNone, out);
      return;
    }
    op->script->sha.assign(reply->str, reply->len);
    if (!self->send_evalsha(op)) {
      Reply empty;
      self->finish_op(op, Failure::kDisconnected, empty);
    }
  }

  static void on_evalsha_reply(redisAsyncContext*, void* r, void* privdata) {
    Op* op = static_cast<Op*>(privdata);
    if (r == nullptr || op->done) {
      release(op);
      return;
    }
    --op->hiredis_refs;
    Impl* self = op->impl;
    const redisReply* reply = static_cast<const redisReply*>(r);
    bool noscript = reply->type == REDIS_REPLY_ERROR && reply->len >= 8 &&
                    std::memcmp(reply->str, "NOSCRIPT", 8) == 0;
    if (noscript && !op->retried) {
      // The server lost its script cache (restart, SCRIPT FLUSH) or the sha was
      // stale: load the script and retry once, keeping the original deadline.
      op->retried = true;
      if (!self->send_script_load(op)) {
        Reply empty;
        self->finish_op(op, Failure::kDisconnected, empty);
      }
      return;
    }
    Reply out;
    convert_reply(reply, out);
    self->finish_op(op, Failure::kNone, out);
  }

  // Watches the oldest op only: deadlines are assigned in submission order with one
  // timeout, so the head of inflight_ always expires first.
  static void on_cmd_timer(uv_timer_t* t) {
    Impl* self = static_cast<Impl*>(t->data);
    Op* head = self->inflight_.head;
    if (head == nullptr) return;
    uint64_t now = uv_now(self->loop_);
    if (head->deadline > now) {
      uv_timer_start(&self->cmd_timer_, on_cmd_timer, head->deadline - now, 0);
      return;
    }
    ++self->owner_->timeouts_;
    self->lose_connection(Failure::kTimeout, "command timeout");
  }

  static void on_sweep(uv_idle_t* h) {
    Impl* self = static_cast<Impl*>(h->data);
    if (self->io_failed_) {
      self->io_failed_ = false;
      if (self->ac_) self->lose_connection(Failure::kDisconnected, self->io_failed_why_);
      if (self->closed_) return;
    }
    // Only the ops queued before this turn: a caller that retries from its callback
    // while Redis is down is answered on the next turn, not in a tight loop here.
    self->sweeping_.take(self->failed_);
    while (Op* op = self->sweeping_.head) {
      Reply empty;
      self->finish_op(op, Failure::kDisconnected, empty);
      if (self->closed_) return;
    }
    if (self->failed_.head == nullptr && !self->io_failed_) uv_idle_stop(&self->sweep_);
  }

  Client* owner_;
  uv_loop_t* loop_;
  Options opt_;
  std::string where_;  // endpoint for log lines (never the password)
  bool numeric_host_ = false;
  State state_ = State::kIdle;
  bool closed_ = false;
  bool finished_ = false;
  bool failure_logged_ = false;
  bool io_failed_ = false;
  const char* io_failed_why_ = "poll failed";
  int depth_ = 0;
  int handshake_left_ = 0;
  int open_handles_ = 0;
  int live_watches_ = 0;
  int live_resolves_ = 0;
  size_t next_address_ = 0;
  uint64_t backoff_ = 0;
  std::minstd_rand rng_;
  redisAsyncContext* ac_ = nullptr;
  redisAsyncContext* doomed_ = nullptr;
  Resolve* resolving_ = nullptr;
  uv_timer_t conn_timer_;  // connect timeout, or the backoff before the next attempt
  uv_timer_t cmd_timer_;   // deadline of the oldest op in flight
  uv_idle_t sweep_;        // fails ops queued while down, on the next loop turn
  List<Op> inflight_;
  List<Op> failed_;
  List<Op> sweeping_;
  std::function<void()> on_closed_;

  // Subscriber mode (see Client::subscribe).
  enum class Sub { kNone, kPending, kActive };  // on the current connection
  bool subscriber_ = false;
  bool pattern_ = false;
  Sub sub_ = Sub::kNone;
  size_t sub_left_ = 0;  // confirmations still expected
  std::vector<std::string> channels_;
  std::function<void(std::string_view, std::string_view)> on_message_;
  std::function<void()> on_resubscribed_;
};

// ---------------------------------------------------------------------------------
// Client

Client::Client(uv_loop_t* loop, Options options) : impl_(std::make_unique<Impl>(this, loop, std::move(options))) {}

Client::~Client() {
  // Deleting with live handles would leave the loop pointing at freed memory.
  if (impl_ && !impl_->finished_) {
    std::fprintf(stderr, "fg::redis::Client destroyed before close() completed\n");
    std::abort();
  }
}

void Client::start() { impl_->start(); }

// Safe from any callback of this client, including reply callbacks and on_state.
// Every pending callback runs (kDisconnected) before it returns; on_state is not
// called for the close itself. A second call only adds its on_closed.
void Client::close(std::function<void()> on_closed) { impl_->close(std::move(on_closed)); }

bool Client::connected() const { return impl_->state_ == Impl::State::kUp; }

void Client::subscribe(std::vector<std::string> channels,
                       std::function<void(std::string_view channel, std::string_view payload)> on_message,
                       std::function<void()> on_resubscribed) {
  impl_->subscribe(false, std::move(channels), std::move(on_message), std::move(on_resubscribed));
}

void Client::psubscribe(std::vector<std::string> patterns,
                        std::function<void(std::string_view channel, std::string_view payload)> on_message,
                        std::function<void()> on_resubscribed) {
  impl_->subscribe(true, std::move(patterns), std::move(on_message), std::move(on_resubscribed));
}

bool Client::subscribed() const {
  return impl_->state_ == Impl::State::kUp && impl_->sub_ == Impl::Sub::kActive;
}

void Client::command(std::vector<std::string> argv, Callback cb) {
  Impl::Op* op = impl_->accept(std::move(cb));
  if (op == nullptr) return;
  if (argv.empty()) {
    // Nothing to send; hiredis would queue a callback that no reply ever matches.
    impl_->fail_later(op);
    return;
  }
  op->args = std::move(argv);
  impl_->submit(op, &Impl::send_command);
}

// `script` must stay alive until the callback ran; its sha is written on the loop.
void Client::eval(Script* script, std::vector<std::string> keys, std::vector<std::string> args, Callback cb) {
  Impl::Op* op = impl_->accept(std::move(cb));
  if (op == nullptr) return;
  op->script = script;
  op->keys = std::move(keys);
  op->args = std::move(args);
  impl_->submit(op, &Impl::start_eval);
}

void Client::command_view(std::span<const std::string_view> argv, Callback cb) {
  if (!Packed::fits(argv.size())) {
    command(std::vector<std::string>(argv.begin(), argv.end()), std::move(cb));
    return;
  }
  Impl::Op* op = impl_->accept(std::move(cb));
  if (op == nullptr) return;
  op->packed.set(argv, {});
  impl_->submit(op, &Impl::send_command);
}

void Client::eval_view(Script* script, std::span<const std::string_view> keys,
                       std::span<const std::string_view> args, Callback cb) {
  if (!Packed::fits(keys.size() + args.size())) {
    eval(script, std::vector<std::string>(keys.begin(), keys.end()),
         std::vector<std::string>(args.begin(), args.end()), std::move(cb));
    return;
  }
  Impl::Op* op = impl_->accept(std::move(cb));
  if (op == nullptr) return;
  op->script = script;
  op->packed.set(keys, args);
  impl_->submit(op, &Impl::start_eval);
}

}  // namespace fg::redis
