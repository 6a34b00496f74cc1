// The exchange of one client request with the upstream: routing target, connection
// from the pool, request head and body forwarding (a body within request_buffering is
// read whole before a server is chosen; a larger one streams, buffered only until
// connected, bounded by backpressure), response forwarding (queued up to
// response_buffering so the upstream is released early, then backpressure), retries that are
// safe by construction (only when nothing reached the server, or for a bodiless
// GET/HEAD on a pooled connection that turned out stale), and the access-log facts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cache/stage.h"
#include "http/message.h"
#include "http/serialize.h"
#include "idempotency/exchange.h"
#include "loop/lifetime.h"
#include "net/snapshot.h"
#include "queue/queue_store.h"
#include "queue/ticket_service.h"
#include "proxy/upstream_pool.h"

namespace fg::proxy {

class ClientConn;

class ProxySession final : public UpstreamUser {
 public:
  explicit ProxySession(ClientConn* client)
      : client_(client) {}
  ~ProxySession() override;
  ProxySession(const ProxySession&) = delete;
  ProxySession& operator=(const ProxySession&) = delete;

  // Starts a new exchange for a routed request. `head` is moved in.
  // `extra_headers` ("Name: value\r\n" lines) are added to the client's response.
  // `park`: the request goes to the route's durable queue (overflow or
  // store_and_forward) instead of the upstream.
  void start(std::shared_ptr<const net::Snapshot> snap, http::RequestHead&& head, int route, uint64_t start_ns,
             std::string request_id, std::string extra_headers, bool park = false);
  // GET (or DELETE when `cancel`) of a ticket; `wait_s` > 0 long-polls.
  void start_ticket(std::shared_ptr<const net::Snapshot> snap, http::RequestHead&& head, uint64_t start_ns,
                    std::string request_id, std::string ticket, bool cancel, int wait_s);
  // A long-poll's ticket changed (or its wait ended): answer with the current state.
  void ticket_changed();
  // The fetch this request was waiting for (same cache key) has ended.
  void cache_ready();
  // Request body bytes (decoded) and the end of the request from the client.
  void body(const char* data, size_t len);
  void body_done();
  // The client went away or the connection must close: drop the upstream side.
  void abort();
  // The client's write queue drained: resume reading the upstream.
  void client_drained();

  bool active() const { return active_; }
  // Facts for the access log of the current/last exchange.
  const http::RequestHead& head() const { return head_; }
  const std::string& request_id() const { return request_id_; }
  // The finished request's id string, handed back for the next request's id to be
  // written into (its capacity is reused: no allocation per request).
  std::string take_request_id() {
    std::string out = std::move(request_id_);
    request_id_.clear();
    return out;
  }
  int route() const { return route_; }
  int status() const { return status_; }
  int outcome() const { return outcome_; }
  const net::Snapshot* snapshot() const { return snap_.get(); }
  const std::string& upstream_addr() const { return upstream_addr_; }
  int64_t upstream_ms() const { return upstream_ms_; }
  uint64_t start_ns() const { return start_ns_; }
  // Records a locally answered request (404, 413, ...) for the access log.
  void record_local(std::shared_ptr<const net::Snapshot> snap, http::RequestHead&& head, int route,
                    uint64_t start_ns, std::string request_id, int status, int outcome);
  void set_status(int status, int outcome) {
    status_ = status;
    outcome_ = outcome;
  }

  // UpstreamUser
  void on_upstream_connected(UpstreamConn* conn) override;
  void on_upstream_head(http::ResponseHead& head) override;
  void on_upstream_body(const char* data, size_t len) override;
  void on_upstream_complete() override;
  void on_upstream_error(UpstreamError kind, bool connect_timed_out) override;
  void on_upstream_drained() override;
  void on_upstream_parsed() override;

 private:
  void decide_idempotency();
  void enqueue();
  void answer_parked(const std::string& ticket, int64_t ahead, int outcome = net::kQueued);
  // answer_parked() for a repeat that found its key's ticket: with redis.wait_replicas,
  // only once WAIT confirms (else replication_refused()).
  void answer_replicated(const std::string& ticket, int64_t ahead, int outcome);
  void replication_refused();
  void poll_ticket(bool final);
  // A ticket's state, read from Redis or from the worker's memory: answered, or waited on.
  void ticket_read(queue::TicketView& v, bool final, bool from_memory, bool overtaken = false);
  void answer_ticket(queue::TicketView& v);
  // How ticket answers are framed for this request, and writing one (`outcome` >= 0
  // overrides the reply's own).
  queue::ReplyTo reply_to() const;
  void send_reply(const queue::TicketReply& r, int outcome = -1);
  // Carries out the idempotency stage's decision.
  void act(idempotency::Decision& d);
  idempotency::Rules idem_rules() const;
  void proceed(const std::string& key);
  void local_answer(int status, const char* code, const char* message, int outcome, std::string extra = {});
  void replay(std::string_view blob);
  // Writes a complete stored answer (replay, ticket result, cache hit) with its own
  // Content-Length, `extra` header lines, X-Request-Id and Connection, and ends the
  // exchange.
  void respond_stored(int status, std::string_view reason, std::string_view header_lines, std::string_view body,
                      std::string_view extra, bool keep_alive);
  void count_idem(int result);
  void idem_release();
  // The facts of a new exchange that the access log reports, however it ends.
  void set_facts(std::shared_ptr<const net::Snapshot> snap, http::RequestHead&& head, int route, uint64_t start_ns,
                 std::string request_id, int status, int outcome);
  void try_connect();
  // The route's on_unavailable answer; false when the caller should go on (never).
  // `prepared`: decided in try_connect, after the request was made ready to send and
  // nothing of it reached a server (queue then parks it if its body is whole in hand).
  bool unavailable(bool busy = false, bool prepared = false);
  bool retry_safe() const;
  bool has_untried() const;
  // Serves a cached response (fresh, or stale within stale_if_error when `stale_ok`).
  bool serve_cache(bool stale_ok);
  // Cache lookup and coalescing at the start of a GET/HEAD on a cached route; true
  // when the request was answered (or is waiting for another fetch).
  bool cache_lookup();
  void cache_store();
  cache::RouteSettings cache_settings() const;
  cache::SharedCache* route_cache() const;  // the route's instance-wide cache, or null
  bool cache_find(bool stale_ok, cache::Hit* hit);
  void cache_release();  // the leading fetch ended: wake the waiters
  void send_request();
  // The body read under server.request_buffering is complete, or outgrew the bound:
  // choose a server and send what was read (the rest streams).
  void send_prebuffered();
  // Whether the upstream may keep sending with `queued` response bytes waiting for the
  // client (server.response_buffering, response_buffering_total).
  bool room_for_response(size_t queued) const;
  // Frees buffers that grew large, so an idle connection holds no body or answer.
  void release_buffers();
  // Takes the body bytes read ahead out of the instance's request_buffered.
  void uncount_prebuffered();
  void forward(const char* data, size_t len);
  // Writes response bytes to the client with any held-back head in front, framed for
  // the client (chunk header/trailer), plus the last chunk when `last`.
  bool write_client(const char* data, size_t len, bool last);
  // Writes what was held back while the answer was being recorded.
  bool flush_held();
  void fail(int status, const char* code, const char* message);
  void finish(bool keep_alive);

  ClientConn* client_;
  UpstreamPool* pool_ = nullptr;
  UpstreamConn* conn_ = nullptr;
  http::RequestHead head_;
  std::string request_id_;
  std::string upstream_head_;   // serialized request head, kept for a safe retry
  std::string pending_;         // framed body bytes not yet written upstream
  std::string head_out_;        // response head not yet written to the client
  // Response bytes of the current upstream read, written in one go once the parser is
  // done with the read (and, for the last read, after the upstream connection went
  // back to the pool: a client that sends its next request the moment it has this
  // answer must find the connection free). Body pointers refer to the worker's read
  // buffer, valid until the read callback returns.
  bool batching_ = false;
  std::vector<uv_buf_t> batch_;
  std::string batch_head_;
  std::string batch_framing_;   // chunk headers; reserved so pointers stay valid
  bool flush_batch();
  std::vector<bool> tried_;
  std::string upstream_addr_;
  http::ClientFraming framing_ = http::ClientFraming::kNone;
  int outcome_ = net::kForwarded;
  std::shared_ptr<const net::Snapshot> snap_;
  std::string extra_headers_;
  uint64_t start_ns_ = 0;
  uint64_t upstream_start_ns_ = 0;
  int64_t upstream_ms_ = -1;
  int route_ = -1;
  size_t upstream_index_ = 0;
  int status_ = 0;
  int stale_retries_ = 0;
  int attempts_ = 0;
  int connect_failures_ = 0;  // attempts whose connect failed (nothing reached that server)
  uint64_t deadline_ns_ = 0;
  bool active_ = false;
  bool head_sent_ = false;       // the request head went to the upstream
  bool body_done_ = false;       // the client finished sending the request
  bool response_started_ = false;
  bool client_keep_alive_ = true;
  bool upstream_paused_ = false;

  // Idempotency (routes with `idempotency`): the body is buffered whole so the key and
  // the fingerprint can be computed, the key is claimed in Redis, and the answer is
  // captured to be stored for replay.
  // Asynchronous callbacks (Redis, ticket and cache waiters) hold guards from it;
  // renewed per exchange, so that a callback of an earlier exchange is ignored.
  loop::Anchor<ProxySession> anchor_{this};
  // The session behind `g` if its exchange is still the current one and still going.
  static ProxySession* live(const loop::Guard<ProxySession>& g) {
    ProxySession* s = g.get();
    return s != nullptr && s->active_ ? s : nullptr;
  }
  bool buffering_ = false;
  // server.request_buffering: the body is read whole (while it stays within the bound)
  // before a server is chosen, so a malformed or stalled body never reaches one.
  bool prebuffer_ = false;
  uint64_t prebuffer_limit_ = 0;   // the route's request_buffering
  size_t prebuffer_counted_ = 0;   // bytes of body_buf_ counted in Instance::request_buffered
  bool park_ = false;            // this exchange ends as a ticket
  std::string ticket_;           // ticket polls: the ticket id
  int ticket_wait_s_ = 0;
  int ticket_first_kind_ = -1;   // long-polls answer once the state differs from this
  uint64_t ticket_deadline_ms_ = 0;
  std::string body_buf_;
  idempotency::Exchange idem_;   // key, claim, held answer
  bool cache_route_ = false;     // GET/HEAD on a route with a cache
  bool cache_leader_ = false;    // this request fetches for everyone waiting on the key
  bool cache_resume_ = false;    // woken before its body was read: fetch once it is
  std::string cache_key_;
  cache::Recorded cache_rec_;    // the leader's response headers the store decision needs
  bool capture_overflow_ = false;
  int capture_status_ = 0;
  std::string capture_reason_;
  std::string capture_headers_;
  std::string capture_body_;
};

}  // namespace fg::proxy
