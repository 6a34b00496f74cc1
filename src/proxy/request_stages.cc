// The stages a request passes through inside its exchange, in order: the cache
// (cache::Stage: hit, stale hit, coalescing), the route's on_unavailable answer when
// no server can take it, idempotency (idempotency::Exchange: key, claim, replay), then
// the queue (a ticket, queue::TicketService answers) or the upstream (proxy_session.cc).
// Ticket polls (the ticket endpoint) are answered here too. Each stage's decisions
// live in its own module; this file only carries them out for one client connection.
#include <algorithm>

#include "cache/stage.h"
#include "core/log.h"
#include "idempotency/exchange.h"
#include "pages/page_answer.h"
#include "proxy/worker_state.h"
#include "proxy/client_conn.h"
#include "proxy/dispatcher.h"
#include "proxy/proxy_session.h"
#include "queue/ticket_service.h"

namespace fg::proxy {
namespace {

constexpr uint64_t kClaimDeadlineMarginMs = 5;

// Done tickets hold responses in the idempotency store's format.
const queue::StoredFormat kStoredFormat{
    [](std::string_view stored, int* status) {
      idempotency::StoredResponse r;
      if (!idempotency::decode_response(stored, &r)) return false;
      *status = r.status;
      return true;
    },
    [](std::string_view data) { return idempotency::digest_hex(data); }};

}  // namespace

void ProxySession::start(std::shared_ptr<const net::Snapshot> snap, http::RequestHead&& head, int route,
                         uint64_t start_ns, std::string request_id, std::string extra_headers, bool park) {
  WorkerState* w = client_->worker();
  set_facts(std::move(snap), std::move(head), route, start_ns, std::move(request_id), 0, net::kForwarded);
  extra_headers_ = std::move(extra_headers);
  const Config& cfg = *snap_->config;
  pending_.clear();
  head_sent_ = false;
  body_done_ = false;
  response_started_ = false;
  head_out_.clear();
  batching_ = false;
  batch_.clear();
  upstream_paused_ = false;
  stale_retries_ = 0;
  conn_ = nullptr;
  active_ = true;
  anchor_.renew();  // callbacks of the previous exchange stop here
  buffering_ = false;
  prebuffer_ = false;
  uncount_prebuffered();
  body_buf_.clear();
  idem_.reset();
  capture_overflow_ = false;
  capture_headers_.clear();
  capture_body_.clear();
  park_ = park;
  ticket_.clear();
  upstream_index_ = cfg.routes[static_cast<size_t>(route)].upstream_index;
  pool_ = &w->pool(upstream_index_);
  tried_.assign(pool_->server_count(), false);

  deadline_ns_ = 0;  // set when the request is first sent
  attempts_ = 0;
  connect_failures_ = 0;
  cache_resume_ = false;
  const RouteConfig& rc0 = cfg.routes[static_cast<size_t>(route)];
  cache_route_ = rc0.cache.enabled && !park_ && (head_.method == "GET" || head_.method == "HEAD");
  cache_leader_ = false;
  cache_rec_ = cache::Recorded{};
  if (cache_route_ && cache_lookup()) return;
  if (!park_ && !pool_->any_available()) {
    // No server can take it (breakers open, health checks down, all at capacity):
    // the route's on_unavailable decides, before anything is read or sent.
    if (rc0.on_unavailable == OnUnavailable::kQueue && cfg.redis.enabled) {
      park_ = true;
    } else if (unavailable(pool_->any_usable())) {
      return;
    }
  }
  if (park_ || !snap_->routes[static_cast<size_t>(route)].idem_sources.empty()) {
    // The key may live in the body and the fingerprint covers it: read it all first
    // (bounded by max_body_bytes), then decide.
    buffering_ = true;
    return;
  }
  prebuffer_limit_ = rc0.request_buffering.value_or(cfg.server.request_buffering);
  uint64_t rb = prebuffer_limit_;
  if (rb > 0 && (head_.body == http::BodyKind::kChunked ||
                 (head_.body == http::BodyKind::kContentLength && head_.content_length <= rb))) {
    // A body within request_buffering is read and validated whole (framing,
    // max_body_bytes, body_timeout) before a server is chosen or a byte is sent.
    prebuffer_ = true;
    return;
  }
  http::ForwardInfo info{client_->client_ip(), client_->scheme(), request_id_, client_->forwarded_for()};
  upstream_head_.clear();
  http::append_upstream_request_head(upstream_head_, head_, info);
  try_connect();
}

void ProxySession::count_idem(int result) {
  const auto& rt = snap_->routes[static_cast<size_t>(route_)];
  metrics::Registry::get().add(client_->worker()->id(), rt.idem[static_cast<size_t>(result)]);
}

idempotency::Rules ProxySession::idem_rules() const {
  const RouteConfig& rc = snap_->config->routes[static_cast<size_t>(route_)];
  return {rc.idempotency.required, rc.idempotency.per_client, rc.store_and_forward, snap_->config->redis.fail_open};
}

void ProxySession::decide_idempotency() {
  const RouteConfig& rc = snap_->config->routes[static_cast<size_t>(route_)];
  const auto& rt = snap_->routes[static_cast<size_t>(route_)];
  WorkerState* w = client_->worker();
  idempotency::Link& link = w->idem_link();
  idempotency::Rules rules = idem_rules();
  idempotency::Decision d = idem_.begin(rules, rt.idem_sources, head_, body_buf_, park_, link.up());
  if (d.next != idempotency::Decision::Next::kClaim) {
    act(d);
    return;
  }
  const Config& cfg = *snap_->config;
  std::string_view ck = client_->client_ip();
  if (rc.client_key.by_header) {
    const http::Header* h = http::find_header(head_.headers, rc.client_key.header);
    if (h && !h->value.empty()) ck = h->value;
  }
  idem_.prepare(rules, cfg.redis.prefix, rc.name, ck, w->random_token());
  const UpstreamConfig& up = cfg.upstreams[upstream_index_];
  // The lease outlives any honest attempt (connect + first byte + margin), so only a
  // claim whose gateway died is released by expiry.
  uint64_t lease_ms = up.connect_timeout_ms * up.servers.size() + up.timeout_ms + 5000;
  loop::Guard<ProxySession> g = anchor_.guard();
  // Redis refuses the claim once its own clock is past `deadline` (idempotency/store.cc).
  // The deadline lies a few ms before this gateway gives the command up: Redis rounds
  // its wall clock to ms and the loop's timer fires on ms-rounded monotonic time, so
  // without the margin a claim that Redis ran in the very millisecond after the 503
  // could still take the key and refuse the client's retry for a whole lease.
  uint64_t margin = std::min<uint64_t>(kClaimDeadlineMarginMs, cfg.redis.timeout_ms / 2);
  uint64_t deadline = log::wall_ms() + cfg.redis.timeout_ms - margin;
  idem_.claim(link, head_, body_buf_, lease_ms, deadline,
              [g, l = &link, key = idem_.claiming(), owner = idem_.owner()](idempotency::ClaimResult& r) {
                ProxySession* s = live(g);
                if (s == nullptr) {
                  // The client is gone: give the key back at once.
                  idempotency::Exchange::abandon(*l, r, key, owner);
                  return;
                }
                idempotency::Decision next = s->idem_.claimed(r, s->idem_rules(), s->park_);
                s->act(next);
              });
}

void ProxySession::act(idempotency::Decision& d) {
  using Next = idempotency::Decision::Next;
  if (d.counted >= 0) count_idem(d.counted);
  switch (d.next) {
    case Next::kClaim:  // begin() only; decide_idempotency() claims
    case Next::kForward:
      proceed(idem_.forward_key());
      return;
    case Next::kPark:
      enqueue();
      return;
    case Next::kAcknowledge:
      answer_replicated(d.ticket, 0, net::kReplayed);
      return;
    case Next::kTicket:
      answer_replicated(d.ticket, -1, net::kQueued);
      return;
    case Next::kReplay:
      replay(d.stored);
      return;
    case Next::kRefuse:
      local_answer(d.status, d.code, d.message, d.conflict ? net::kConflict : net::kError,
                   d.retry_after_s > 0 ? "Retry-After: " + std::to_string(d.retry_after_s) + "\r\n" : std::string());
      return;
  }
}

void ProxySession::answer_replicated(const std::string& ticket, int64_t ahead, int outcome) {
  // A repeat that found the key's ticket gets the ticket (or the ack) only under the
  // promise of a first attempt: with wait_replicas, once enough replicas hold it. The
  // first attempt may have been refused exactly because WAIT did not confirm it; answering
  // its repeat without WAIT would acknowledge a ticket a failover can still lose. WAIT
  // counts the replicas that have this connection's last write, so a small write goes
  // first: its offset is past the ticket's, whichever connection wrote the ticket.
  WorkerState* w = client_->worker();
  const Config& cfg = *snap_->config;
  uint64_t replicas = cfg.redis.wait_replicas;
  redis::Client* redis = w->redis();
  if (replicas == 0) {
    answer_parked(ticket, ahead, outcome);
    return;
  }
  if (redis == nullptr || !redis->connected()) {
    local_answer(503, "redis_unavailable", "the queue is unavailable; retry shortly", net::kError,
                 "Retry-After: 1\r\n");
    return;
  }
  const RouteConfig& rc = cfg.routes[static_cast<size_t>(route_)];
  redis->command({"SET", cfg.redis.prefix + "sync:{" + rc.name + "}", ticket, "PX", "60000"},
                 [](redis::Failure, redis::Reply&) {});
  loop::Guard<ProxySession> g = anchor_.guard();
  redis->command({"WAIT", std::to_string(replicas), std::to_string(cfg.redis.wait_timeout_ms)},
                 [g, ticket, ahead, outcome, replicas](redis::Failure f, redis::Reply& rep) {
                   ProxySession* s = live(g);
                   if (s == nullptr) return;
                   if (f != redis::Failure::kNone || rep.integer < static_cast<int64_t>(replicas)) {
                     s->replication_refused();
                     return;
                   }
                   s->answer_parked(ticket, ahead, outcome);
                 });
}

void ProxySession::replication_refused() {
  local_answer(503, "replication_timeout",
               "the ticket is not yet on enough replicas; retry with the same idempotency key", net::kError,
               "Retry-After: 1\r\n");
}

void ProxySession::enqueue() {
  WorkerState* w = client_->worker();
  redis::Client* redis = w->redis();
  if (redis == nullptr || !redis->connected()) {
    idem_.release(w->idem_link());
    local_answer(503, "redis_unavailable", "the queue is unavailable; retry shortly", net::kError,
                 "Retry-After: 1\r\n");
    return;
  }
  const Config& cfg = *snap_->config;
  const RouteConfig& rc = cfg.routes[static_cast<size_t>(route_)];
  queue::NewTicket t;
  t.id = queue::new_ticket_id(rc.name);
  t.route = rc.name;
  t.created_ms = log::wall_ms();
  t.method = head_.method;
  t.target = head_.target;
  // Every delivery attempt carries an Idempotency-Key so the shop can make it exactly
  // once: the client's key, or the ticket id.
  t.forward_key = idem_.forward_key();
  if (t.forward_key.empty()) {
    // No idempotency on the route: the client's own Idempotency-Key still travels.
    const http::Header* own = http::find_header(head_.headers, "Idempotency-Key");
    t.forward_key = own && !own->value.empty() ? own->value : t.id;
  }
  auto& hs = head_.headers;
  hs.erase(std::remove_if(hs.begin(), hs.end(),
                          [](const http::Header& h) { return http::iequals(h.name, "Idempotency-Key"); }),
           hs.end());
  hs.push_back({"Idempotency-Key", t.forward_key});
  if (head_.body != http::BodyKind::kNone || !body_buf_.empty()) {
    head_.body = http::BodyKind::kContentLength;
    head_.content_length = body_buf_.size();
  }
  http::ForwardInfo info{client_->client_ip(), client_->scheme(), request_id_, client_->forwarded_for()};
  http::append_upstream_request_head(t.header_lines, head_, info);
  t.body = std::move(body_buf_);
  body_buf_.clear();
  if (rc.client_max_tickets > 0) {
    t.client_key = client_->client_ip();
    if (rc.client_key.by_header) {
      const http::Header* h = http::find_header(head_.headers, rc.client_key.header);
      if (h && !h->value.empty()) t.client_key = h->value;
    }
  }
  t.idem_key = idem_.key();
  t.idem_owner = idem_.owner();
  uint64_t hash_ttl = rc.queue.max_wait_ms + rc.queue.processing_timeout_ms * 4 + rc.queue.ticket_ttl_ms;
  loop::Guard<ProxySession> g = anchor_.guard();
  std::string id = t.id;
  std::string ikey = idem_.key(), iowner = idem_.owner();
  uint64_t replicas = cfg.redis.wait_replicas, wait_ms = cfg.redis.wait_timeout_ms;
  queue::enqueue(*redis, w->queue_scripts(), queue::Keys{cfg.redis.prefix}, t, rc.queue.max_depth, hash_ttl,
                 rc.client_max_tickets, [g, id, w, ikey, iowner, replicas, wait_ms](queue::EnqueueResult& r) {
                   ProxySession* s = live(g);
                   bool alive = s != nullptr;
                   if (r.kind != queue::EnqueueResult::Kind::kOk) {
                     auto kind = r.kind;
                     // The refusal is answered only once the key is free again, so a retry
                     // sent at once (perhaps to another worker) is not told "in flight".
                     auto answer = [g, kind] {
                       ProxySession* s2 = live(g);
                       if (s2 == nullptr) return;
                       s2->idem_.hand_over();
                       if (kind == queue::EnqueueResult::Kind::kFull) {
                         s2->local_answer(503, "queue_full", "the queue is full; retry later", net::kRejected,
                                          "Retry-After: 5\r\n");
                       } else if (kind == queue::EnqueueResult::Kind::kTooMany) {
                         s2->local_answer(429, "too_many_tickets", "this client already holds its maximum of tickets",
                                          net::kRejected, "Retry-After: 5\r\n");
                       } else {
                         s2->local_answer(503, "redis_unavailable", "the queue is unavailable; retry shortly",
                                          net::kError, "Retry-After: 1\r\n");
                       }
                     };
                     if (alive) s->idem_.hand_over();
                     idempotency::Link& link = w->idem_link();
                     if (!ikey.empty() && link.client != nullptr) {
                       auto hold = link.hold();
                       idempotency::release(*link.client, link.scripts, ikey, iowner, [hold, answer] {
                         hold();
                         answer();
                       });
                     } else {
                       answer();
                     }
                     return;
                   }
                   // The ticket is durable now (it is delivered whether or not this
                   // client is still here to hear about it).
                   if (!alive) return;
                   s->idem_.hand_over();
                   const auto& rt = s->snap_->routes[static_cast<size_t>(s->route_)];
                   metrics::Registry::get().add(w->id(), rt.tickets[net::kTicketQueued]);
                   if (rt.queue) rt.queue->raise_depth(r.depth);
                   if (proxy::Dispatcher* d = w->dispatcher(s->snap_->config->routes[static_cast<size_t>(s->route_)].name))
                     d->nudge();
                   int64_t ahead = r.depth > 0 ? r.depth - 1 : 0;
                   if (replicas == 0 || w->redis() == nullptr) {
                     s->answer_parked(id, ahead);
                     return;
                   }
                   // Acknowledged only once enough replicas hold it.
                   w->redis()->command({"WAIT", std::to_string(replicas), std::to_string(wait_ms)},
                                       [g, id, ahead, replicas](redis::Failure f, redis::Reply& rep) {
                                         ProxySession* s2 = live(g);
                                         if (s2 == nullptr) return;
                                         if (f != redis::Failure::kNone || rep.integer < static_cast<int64_t>(replicas)) {
                                           s2->replication_refused();
                                           return;
                                         }
                                         s2->answer_parked(id, ahead);
                                       });
                 });
}

queue::ReplyTo ProxySession::reply_to() const {
  queue::ReplyTo to{head_, request_id_, head_.keep_alive && !client_->worker()->draining(),
                    snap_->config->server.tickets_path};
  // A browser that navigates (a form POST that got a ticket, the ticket URL opened or
  // reloaded) sees pages; DELETE and the page's own polls keep the JSON contract.
  if (head_.method != "DELETE") to.pages = pages::page_set_for(snap_->config->pages.get(), head_);
  return to;
}

void ProxySession::send_reply(const queue::TicketReply& r, int outcome) {
  static constexpr int kOutcomes[] = {net::kQueued, net::kReplayed, net::kConflict, net::kError};
  active_ = false;
  status_ = r.status;
  outcome_ = outcome >= 0 ? outcome : kOutcomes[static_cast<int>(r.outcome)];
  bool keep_alive = head_.keep_alive && !client_->worker()->draining();
  switch (r.kind) {
    case queue::TicketReply::Kind::kError:
      client_->respond_error(r.status, r.code, r.message, true, r.extra);
      return;
    case queue::TicketReply::Kind::kRaw:
      client_->respond_raw(r.out, keep_alive);
      return;
    case queue::TicketReply::Kind::kStored: {
      idempotency::StoredResponse stored;
      idempotency::decode_response(r.stored, &stored);  // view_reply checked it
      respond_stored(stored.status, stored.reason, stored.header_lines, stored.body, r.extra, keep_alive);
      return;
    }
  }
}

void ProxySession::answer_parked(const std::string& ticket, int64_t ahead, int outcome) {
  const RouteConfig& rc = snap_->config->routes[static_cast<size_t>(route_)];
  if (rc.store_and_forward) {
    send_reply(queue::ack_reply(reply_to(), rc.ack.status, rc.ack.content_type, rc.ack.body, ticket), outcome);
    return;
  }
  if (ahead < 0) {
    // A duplicate of a parked request: read its ticket for a fresh position.
    outcome_ = outcome;
    ticket_ = ticket;
    ticket_wait_s_ = 0;
    poll_ticket(true);
    return;
  }
  const auto& rt = snap_->routes[static_cast<size_t>(route_)];
  int64_t eta = rt.queue ? rt.queue->estimate_ms(ahead, rc.rate) : 0;
  send_reply(queue::parked_reply(reply_to(), ticket, ahead, eta), outcome);
}

void ProxySession::start_ticket(std::shared_ptr<const net::Snapshot> snap, http::RequestHead&& head,
                                uint64_t start_ns, std::string request_id, std::string ticket, bool cancel,
                                int wait_s) {
  set_facts(std::move(snap), std::move(head), -1, start_ns, std::move(request_id), 0, net::kQueued);
  conn_ = nullptr;
  active_ = true;
  anchor_.renew();  // callbacks of the previous exchange stop here
  buffering_ = false;
  park_ = false;
  body_done_ = true;
  ticket_ = std::move(ticket);
  ticket_wait_s_ = wait_s;
  ticket_first_kind_ = -1;
  WorkerState* w = client_->worker();
  redis::Client* redis = w->redis();
  if (redis == nullptr || !redis->connected()) {
    send_reply(queue::unavailable_reply());
    return;
  }
  if (!queue::valid_ticket_id(ticket_)) {
    send_reply(queue::unknown_reply(reply_to()));
    return;
  }
  if (cancel) {
    loop::Guard<ProxySession> g = anchor_.guard();
    const Config& cfg = *snap_->config;
    queue::cancel(*redis, w->queue_scripts(), queue::Keys{cfg.redis.prefix}, ticket_, log::wall_ms(), 3600 * 1000,
                  [g, w, ticket = ticket_](queue::CancelResult r, const std::string& route) {
                    // This worker's next poll must not wait for the published change.
                    if (r == queue::CancelResult::kCancelled) w->ticket_memory().changed(ticket);
                    ProxySession* s = live(g);
                    if (s == nullptr) return;
                    if (r == queue::CancelResult::kCancelled) {
                      for (size_t i = 0; i < s->snap_->config->routes.size(); i++) {
                        if (s->snap_->config->routes[i].name == route && s->snap_->routes[i].queue)
                          metrics::Registry::get().add(w->id(), s->snap_->routes[i].tickets[net::kTicketCancelled]);
                      }
                    }
                    s->send_reply(queue::cancel_reply(s->reply_to(), r, s->ticket_));
                  });
    return;
  }
  if (ticket_wait_s_ > 0) ticket_deadline_ms_ = w->now_ms() + static_cast<uint64_t>(ticket_wait_s_) * 1000;
  poll_ticket(ticket_wait_s_ == 0);
}

void ProxySession::ticket_changed() {
  if (!active_) return;
  bool final = client_->worker()->now_ms() >= ticket_deadline_ms_;
  poll_ticket(final);
}

void ProxySession::poll_ticket(bool final) {
  WorkerState* w = client_->worker();
  redis::Client* redis = w->redis();
  if (redis == nullptr || !redis->connected()) {
    send_reply(queue::unavailable_reply());
    return;
  }
  queue::TicketMemory& memory = w->ticket_memory();
  queue::TicketView seen;
  if (memory.find(ticket_, w->now_ms(), &seen)) {
    ticket_read(seen, final, true);
    return;
  }
  loop::Guard<ProxySession> g = anchor_.guard();
  memory.begin_read(ticket_);
  queue::poll(*redis, w->queue_scripts(), queue::Keys{snap_->config->redis.prefix}, ticket_,
              [g, final, w, ticket = ticket_](queue::TicketView& v) {
                bool overtaken = w->ticket_memory().end_read(ticket, v, v.ttl_ms, w->now_ms());
                if (ProxySession* s = live(g)) s->ticket_read(v, final, false, overtaken);
              });
}

void ProxySession::ticket_read(queue::TicketView& v, bool final, bool from_memory, bool overtaken) {
  WorkerState* w = client_->worker();
  bool first = ticket_first_kind_ < 0;
  int kind = static_cast<int>(v.kind);
  if (!queue::keep_waiting(v, final, &ticket_first_kind_)) {
    answer_ticket(v);
    return;
  }
  if (overtaken) {
    // A change of this ticket was published while the read was out, so this answer
    // may predate it and its notification has passed: read again instead of waiting.
    poll_ticket(final);
    return;
  }
  // Long-poll: wait for a published change (or the deadline).
  loop::Guard<ProxySession> g = anchor_.guard();
  w->tickets().wait(ticket_, ticket_deadline_ms_, [g] {
    if (ProxySession* s2 = g.get()) s2->ticket_changed();
  });
  // A change published between a read from Redis and the wait's registration would be
  // missed: read once more now that the wait is in place. (Memory is current up to the
  // last change received, and the wait was registered in the same turn.)
  if (first && !from_memory && w->redis()) {
    queue::poll(*w->redis(), w->queue_scripts(), queue::Keys{snap_->config->redis.prefix}, ticket_,
                [g, kind](queue::TicketView& v2) {
                  ProxySession* s2 = g.get();
                  if (s2 && static_cast<int>(v2.kind) != kind) s2->ticket_changed();
                });
  }
}

void ProxySession::answer_ticket(queue::TicketView& v) {
  const Config& cfg = *snap_->config;
  size_t ri = cfg.routes.size();
  for (size_t i = 0; i < cfg.routes.size(); i++)
    if (cfg.routes[i].name == v.route) ri = i;
  const RouteConfig* rc = ri < cfg.routes.size() ? &cfg.routes[ri] : nullptr;
  uint64_t now = log::wall_ms();
  if (rc && queue::lazily_expired(v, now, rc->queue.max_wait_ms)) {
    // Lazy expiry: nobody dispatched it within max_wait.
    WorkerState* w = client_->worker();
    if (w->redis()) {
      std::string ticket = ticket_;
      std::string webhook = rc->on_failure_webhook;
      std::string route = rc->name;
      queue::expire(*w->redis(), w->queue_scripts(), queue::Keys{cfg.redis.prefix}, ticket_, now,
                    rc->queue.ticket_ttl_ms, [w, ticket, webhook, route](bool expired_now) {
                      // Only the caller that actually moved it to expired reports it.
                      if (!expired_now || webhook.empty()) return;
                      if (proxy::Dispatcher* d = w->dispatcher(route))
                        d->post_webhook(webhook, queue::expired_webhook_body(ticket, route));
                    });
    }
    w->ticket_memory().forget(ticket_);
    v.kind = queue::TicketView::Kind::kFailed;
    v.reason = "expired";
  }
  int64_t eta = 0;
  if (rc && snap_->routes[ri].queue) eta = snap_->routes[ri].queue->estimate_ms(queue::position(v), rc->rate);
  send_reply(queue::view_reply(reply_to(), v, ticket_, eta, kStoredFormat));
}

void ProxySession::local_answer(int status, const char* code, const char* message, int outcome, std::string extra) {
  active_ = false;
  status_ = status;
  outcome_ = outcome;
  client_->respond_error(status, code, message, true, extra);
}

void ProxySession::replay(std::string_view blob) {
  idempotency::StoredResponse stored;
  if (!idempotency::decode_response(blob, &stored)) {
    local_answer(500, "bad_stored_response", "the stored response could not be read", net::kError);
    return;
  }
  active_ = false;
  status_ = stored.status;
  outcome_ = net::kReplayed;
  bool keep_alive = head_.keep_alive && !client_->worker()->draining();
  respond_stored(stored.status, stored.reason, stored.header_lines, stored.body, "Idempotent-Replayed: true\r\n",
                 keep_alive);
}

void ProxySession::respond_stored(int status, std::string_view reason, std::string_view header_lines,
                                  std::string_view body, std::string_view extra, bool keep_alive) {
  std::string out;
  out.reserve(256 + header_lines.size() + body.size());
  out += head_.version_minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ";
  out += std::to_string(status);
  out += ' ';
  out.append(reason);
  out += "\r\n";
  out.append(header_lines);
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out.append(extra);
  out += "X-Request-Id: " + request_id_ + "\r\n";
  if (!keep_alive) out += "Connection: close\r\n";
  else if (head_.version_minor == 0) out += "Connection: keep-alive\r\n";
  out += "\r\n";
  if (!head_.is_head()) out.append(body);
  client_->respond_raw(out, keep_alive);
}

void ProxySession::idem_release() { idem_.release(client_->worker()->idem_link()); }

cache::RouteSettings ProxySession::cache_settings() const {
  const RouteConfig& rc = snap_->config->routes[static_cast<size_t>(route_)];
  return {rc.cache.ttl_ms, rc.cache.stale_if_error_ms};
}

cache::SharedCache* ProxySession::route_cache() const {
  return snap_->routes[static_cast<size_t>(route_)].cache.get();
}

bool ProxySession::cache_lookup() {
  // HEAD is answered from the GET entry (same representation, no body sent).
  cache::cache_key("GET", head_.target, &cache_key_);
  if (serve_cache(false)) return true;
  cache::Stage& stage = client_->worker()->cache_stage();
  uint64_t waiter = 0;
  switch (stage.join(*route_cache(), cache_key_, &waiter)) {
    case cache::Stage::Join::kLead:
      cache_leader_ = true;
      capture_status_ = 0;
      capture_headers_.clear();
      capture_body_.clear();
      capture_overflow_ = false;
      return false;
    case cache::Stage::Join::kWait: {
      // Another request, on this worker or another, is fetching this very response:
      // wait for it (coalescing).
      loop::Guard<ProxySession> g = anchor_.guard();
      stage.wait(waiter, [g] {
        if (ProxySession* s = g.get()) s->cache_ready();
      });
      return true;
    }
    case cache::Stage::Join::kFetch:
      return false;
  }
  return false;
}

void ProxySession::cache_ready() {
  if (!active_) return;
  if (serve_cache(false)) return;
  if (cache_lookup()) return;
  // Not cacheable after all (or the fetch failed): fetch it ourselves.
  http::ForwardInfo info{client_->client_ip(), client_->scheme(), request_id_, client_->forwarded_for()};
  upstream_head_.clear();
  http::append_upstream_request_head(upstream_head_, head_, info);
  if (!body_done_) {
    cache_resume_ = true;  // body_done() starts the exchange
    return;
  }
  try_connect();
}

bool ProxySession::cache_find(bool stale_ok, cache::Hit* hit) {
  // Only a GET or HEAD on a cached route has a key (set by cache_lookup() when the
  // exchange started): another method on the route is never answered from the cache,
  // nor is a request with the key of an earlier exchange on this connection.
  cache::SharedCache* c = route_cache();
  if (!cache_route_ || c == nullptr) return false;
  WorkerState* w = client_->worker();
  return w->cache_stage().find(*c, cache_key_, w->now_ms(), stale_ok, hit);
}

bool ProxySession::serve_cache(bool stale_ok) {
  cache::Hit hit;
  if (!cache_find(stale_ok, &hit)) return false;
  // The entry is shared and immutable: it is read here without any lock.
  const cache::CachedResponse& e = *hit.entry;
  active_ = false;
  status_ = e.status;
  outcome_ = net::kCached;
  WorkerState* w = client_->worker();
  bool keep_alive = head_.keep_alive && !w->draining() && (body_done_ || head_.body == http::BodyKind::kNone);
  respond_stored(e.status, e.reason, e.header_lines, e.body, hit.header_lines, keep_alive);
  return true;
}

void ProxySession::cache_store() {
  if (capture_overflow_) return;
  bool auth = http::find_header(head_.headers, "Authorization") != nullptr;
  client_->worker()->cache_stage().store(*route_cache(), cache_settings(), cache_key_, capture_status_,
                                         capture_reason_, capture_headers_, capture_body_, cache_rec_, auth,
                                         client_->worker()->now_ms());
}

void ProxySession::cache_release() {
  if (!cache_leader_) return;
  cache_leader_ = false;
  client_->worker()->cache_stage().finish(*route_cache(), cache_key_);
}

bool ProxySession::unavailable(bool busy, bool prepared) {
  cache_release();  // whatever the answer, others waiting on this key must not hang
  const Config& cfg = *snap_->config;
  const RouteConfig& rc = cfg.routes[static_cast<size_t>(route_)];
  if (prepared && rc.on_unavailable == OnUnavailable::kQueue && cfg.redis.enabled && body_done_ &&
      head_.body != http::BodyKind::kChunked) {
    // No server took the connect: nothing was sent, and the whole body is still in
    // hand (never written), so the request is parked like one that found no server
    // before it was read. A claimed idempotency key becomes "parked as this ticket" in the same script.
    body_buf_ = std::move(pending_);
    pending_.clear();
    enqueue();
    return true;
  }
  // A claimed idempotency key is given back: this answer is not the shop's.
  if (prepared) idem_release();
  switch (rc.on_unavailable) {
    case OnUnavailable::kDegrade:
      active_ = false;
      status_ = cfg.degrade.status;
      outcome_ = net::kDegraded;
      client_->respond_degrade();
      return true;
    case OnUnavailable::kCache:
      if (serve_cache(true)) return true;
      [[fallthrough]];
    case OnUnavailable::kQueue:  // without [redis] (the loader requires it) or mid-request
    case OnUnavailable::kError:
      if (busy) fail(503, "upstream_busy", "every upstream server is at max_connections");
      else if (attempts_ > 0) fail(503, "upstream_unavailable", "no upstream server could be reached");
      else fail(503, "upstream_unavailable", "no upstream server is available");
      return true;
  }
  return false;
}

void ProxySession::record_local(std::shared_ptr<const net::Snapshot> snap, http::RequestHead&& head,
                                int route, uint64_t start_ns, std::string request_id, int status,
                                int outcome) {
  set_facts(std::move(snap), std::move(head), route, start_ns, std::move(request_id), status, outcome);
  active_ = false;
}

void ProxySession::set_facts(std::shared_ptr<const net::Snapshot> snap, http::RequestHead&& head, int route,
                             uint64_t start_ns, std::string request_id, int status, int outcome) {
  snap_ = std::move(snap);
  head_ = std::move(head);
  route_ = route;
  start_ns_ = start_ns;
  request_id_ = std::move(request_id);
  status_ = status;
  outcome_ = outcome;
  upstream_addr_.clear();
  upstream_ms_ = -1;
}

}  // namespace fg::proxy
