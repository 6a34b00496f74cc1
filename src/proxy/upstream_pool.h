// Per-worker pools of keep-alive connections to the servers of one upstream, and the
// upstream connection itself. A pool belongs to one worker loop and dies there; the only
// cross-worker state is the instance-wide per-server connection counter (an atomic).
#pragma once

#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <cstdint>
#include <string>
#include <vector>

#include "floodgate/config.h"
#include "breaker/breaker.h"
#include "breaker/server_counters.h"
#include "http/response_parser.h"
#include "loop/lifetime.h"
#include "tls/session.h"
#include "proxy/name_resolver.h"

namespace fg::proxy {

class WorkerState;

class UpstreamConn;
class UpstreamPool;

// How an upstream exchange failed (breaker/server_counters.h, where the per-server
// error metrics are declared too).
using UpstreamError = breaker::UpstreamError;
using breaker::upstream_error_name;

// The session that currently holds a connection receives its events. Every callback
// runs on the worker loop; the user may call UpstreamPool::release() from inside any of
// them (the connection object stays valid until its close callback).
class UpstreamUser {
 public:
  virtual ~UpstreamUser() = default;
  virtual void on_upstream_connected(UpstreamConn* conn) = 0;
  virtual void on_upstream_head(http::ResponseHead& head) = 0;
  virtual void on_upstream_body(const char* data, size_t len) = 0;
  virtual void on_upstream_complete() = 0;
  virtual void on_upstream_error(UpstreamError kind, bool connect_timed_out) = 0;
  // The connection's write queue drained below the low-water mark.
  virtual void on_upstream_drained() = 0;
  // One read's worth of response has been parsed (head/body callbacks are done) and
  // the response is not complete yet. Called after the parser returned.
  virtual void on_upstream_parsed() {}
};

class UpstreamConn final : public http::ResponseParser::Handler {
 public:
  enum class State { kConnecting, kBusy, kIdle, kClosing };

  UpstreamConn(UpstreamPool* pool, size_t server);
  // Starts connecting; the user gets on_upstream_connected or on_upstream_error(kConnect).
  void connect(UpstreamUser* user);

  // Sends request bytes (copied only if the socket cannot take them at once).
  // Returns false when the connection is broken (an error callback follows).
  bool write(uv_buf_t* bufs, unsigned n);
  size_t write_queue_size() const;

  // Arms the parser for the response and starts the first-byte timer.
  void expect_response(bool request_was_head, uint64_t timeout_ms);
  // Restarts the first-byte timer (called while request body bytes still flow).
  void touch_timer();
  // Moves the read deadline to timeout_ms_ from now. The libuv timer is restarted only
  // when it would fire too late; firing early re-arms it for what is left (on_timer).
  void arm_read_timer();

  void pause_reading();
  void resume_reading();

  bool reused() const { return requests_ > 0; }
  bool response_started() const { return parser_.started(); }
  size_t server() const { return server_; }
  State state() const { return state_; }
  UpstreamPool* pool() const { return pool_; }

  // Closes the connection; callbacks stop at once. Memory is freed in the close callback.
  void close();

 private:
  friend class UpstreamPool;
  void on_response_head(http::ResponseHead& head) override;
  void on_response_body(const char* data, size_t len) override;
  void on_response_complete() override;

  static void on_connect(uv_connect_t* req, int status);
  static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_timer(uv_timer_t* t);
  static void on_write(uv_write_t* req, int status);
  static void on_close(uv_handle_t* h);
  void fail(UpstreamError kind, bool connect_timed_out = false);
  void handle_data(const char* data, size_t len);
  // TLS (the upstream has tls = true): decrypts into tls_plain_; false when the
  // connection failed or closed (callbacks already ran).
  bool tls_input(const char* data, size_t len);
  bool tls_flush();
  void deliver_complete();

  UpstreamPool* pool_;
  size_t server_;
  State state_ = State::kConnecting;
  UpstreamUser* user_ = nullptr;
  uv_tcp_t tcp_;
  uv_timer_t timer_;
  uv_connect_t connect_req_;
  http::ResponseParser parser_;
  std::unique_ptr<tls::Session> tls_;  // null: plain HTTP
  std::string tls_out_;                // ciphertext on its way to the socket (reused)
  std::string tls_plain_;              // decrypted response bytes of one read
  bool tls_saved_ = false;             // this connection's ticket went to the server's slot
  uint64_t timeout_ms_ = 0;
  // The read timeout re-arms lazily (see arm_read_timer): the loop time by which the
  // next byte must arrive (0: none), and the loop time the libuv timer is set for.
  uint64_t read_deadline_ms_ = 0;
  uint64_t armed_for_ms_ = 0;
  uint64_t requests_ = 0;
  uint64_t idle_since_ms_ = 0;
  uint64_t address_gen_ = 0;  // the server's address generation it connected to
  int pending_closes_ = 0;
  bool reading_ = false;
  bool complete_ = false;
  bool spoiled_ = false;  // must not be reused (stray bytes, close-delimited body)
  bool counted_ = false;  // holds an in-use slot of the instance-wide per-server counter
};

// The instance-wide per-server state lives with the breakers (breaker/server_counters.h):
// the snapshot carries it across reloads without knowing about pools.
using ServerCounters = breaker::ServerCounters;

class UpstreamPool {
 public:
  // `tls` is the upstream's client context (null: plain HTTP).
  UpstreamPool(WorkerState* worker, const UpstreamConfig& config, std::shared_ptr<ServerCounters> counters,
               std::shared_ptr<const tls::ClientContext> tls = nullptr);
  ~UpstreamPool();
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // Resolves the server addresses without blocking the loop: literal addresses at
  // once, host names through uv_getaddrinfo on libuv's thread pool. `done` runs once
  // every server has its answer, with the first failure or ok (at once when every
  // address is literal). The pool may be used meanwhile. Choice: a server whose name
  // is not resolved yet counts as unavailable, so a request arriving before its
  // upstream's names resolve fails at once like one with no server up (503
  // upstream_unavailable, or it goes to another, resolved server) instead of waiting
  // an unbounded resolver time.
  // At worker start-up nothing is served before every pool answered (net/worker.cc),
  // so this only shows for the pools a reload adds, and for webhook pools.
  void resolve(std::function<void(Status)> done);
  // Names still waiting for the resolver.
  size_t resolving() const { return resolving_; }
  // Worker tick: looks host names up again when due (every resolve_every, or on the
  // record's TTL with c-ares). A new address is used for new connections at once;
  // pooled connections to the old one close (idle ones now, busy ones when released),
  // so requests in flight finish where they started. A failed lookup keeps the last
  // good address.
  void refresh(uint64_t now_ms);
  // Stops looking names up and frees the resolver's handles (worker stop: the loop
  // must still run for them to close). Addresses already known stay.
  void stop_lookups() { resolver_.reset(); }
  // The address server `i` connects to now ("" while unresolved).
  std::string server_address(size_t i) const;
  // The same as a socket address; false while unresolved.
  bool server_sockaddr(size_t i, sockaddr_storage* out) const {
    if (i >= servers_.size() || !servers_[i].resolved) return false;
    *out = servers_[i].addr;
    return true;
  }

  // True when some server (primary or backup) could take a request now: not down,
  // breaker not open, under max_connections.
  bool any_available() const;
  // True when some server is healthy (not down, breaker not open), at capacity or not.
  bool any_usable() const;
  // Reports how an exchange with server `i` went (feeds its breaker).
  void record(size_t i, breaker::Outcome outcome);

  enum class Acquire { kReady, kConnecting, kNoServer, kBusy };
  // Picks a server not yet in `tried` (balance policy) and gives `user` either a pooled
  // connection (kReady: use it now) or a new one (kConnecting: wait for a callback).
  // `tried` has one flag per server and is updated with the chosen one.
  Acquire acquire(UpstreamUser* user, std::vector<bool>& tried, UpstreamConn** out);

  // Gives a connection back after a response. Reusable ones go to the idle stack; the
  // rest are closed. The user receives no further callbacks.
  void release(UpstreamConn* conn, bool reusable);

  // Closes every idle connection; busy ones close when released (used on drain).
  void close_idle();
  // Periodic trim: idle connections past keepalive_timeout, and those beyond the
  // `keepalive` cap that have been idle for a second (so a burst does not churn).
  void sweep(uint64_t now_ms);

  const UpstreamConfig& config() const { return config_; }
  // Reload with the same server list: new timeouts and caps apply to the next use.
  void update_config(const UpstreamConfig& config, std::shared_ptr<const tls::ClientContext> tls) {
    config_ = config;
    tls_ = std::move(tls);
  }
  // A pool replaced by a reload: connections close when released, none are pooled.
  void retire() {
    retired_ = true;
    close_idle();
    stop_lookups();
  }
  bool retired() const { return retired_; }
  const ServerCounters* counters() const { return counters_.get(); }
  const std::string& server_name(size_t i) const { return servers_[i].name; }
  size_t server_count() const { return servers_.size(); }
  WorkerState* worker() const { return worker_; }
  size_t open_connections() const { return open_; }

 private:
  friend class UpstreamConn;
  struct Server {
    std::string name;
    sockaddr_storage addr{};
    std::vector<UpstreamConn*> idle;  // stack: most recently used last
    int64_t active = 0;               // this worker's connecting + busy connections
    bool resolved = false;            // addr holds the server's address
    tls::SavedSession ticket;         // TLS: offered on the next connection to resume
    bool named = false;               // a host name (looked up again), not a literal address
    bool looking_up = false;
    uint64_t address_gen = 0;         // bumped when addr changes
    uint64_t next_lookup_ms = 0;
  };
  const HostPort& host_port(size_t i) const {
    return i < primaries_ ? config_.servers[i] : config_.backup[i - primaries_];
  }
  void look_up(size_t i, bool initial);
  void on_answer(size_t i, bool initial, NameAnswer answer);
  void count_resolution(int result);
  void resolution_done(Status s);
  void forget(UpstreamConn* conn);  // a connection closed
  size_t pick(const std::vector<bool>& tried);
  // Server i is resolved, not marked down and its breaker is not open.
  bool serves(size_t i) const;
  // ... and was not tried yet by this request.
  bool usable(size_t i, const std::vector<bool>& tried) const;
  size_t primaries_ = 0;

  WorkerState* worker_;
  UpstreamConfig config_;
  std::shared_ptr<ServerCounters> counters_;
  std::shared_ptr<const tls::ClientContext> tls_;
  std::vector<Server> servers_;
  bool retired_ = false;
  size_t rr_ = 0;
  size_t open_ = 0;
  size_t resolving_ = 0;
  Status resolve_status_;
  std::function<void(Status)> resolve_done_;
  std::unique_ptr<NameResolver> resolver_;   // created when some server is a host name
  loop::Anchor<UpstreamPool> anchor_{this};  // resolver answers reach the pool through it
};

}  // namespace fg::proxy
