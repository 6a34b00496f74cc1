// Client connections: reading, strict parsing, limits, timeouts and orderly closing.
#include "proxy/client_conn.h"

#include <charconv>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cstring>

#include "admission/gate.h"
#include "core/log.h"
#include "http/proxy_protocol.h"
#include "http/real_ip.h"
#include "http/serialize.h"
#include "net/listener.h"
#include "net/stream_write.h"
#include "pages/page_answer.h"
#include "pages/strings.h"
#include "proxy/worker_state.h"
#include "queue/ticket_endpoint.h"

namespace fg::proxy {
namespace {

// Above this many queued response bytes the upstream is paused; below the low mark
// it resumes. Keeps memory per slow client bounded whatever the response size.
constexpr size_t kHighWater = 256 * 1024;
constexpr size_t kLowWater = 64 * 1024;
// How long a refused connection keeps draining input after our answer, so the
// kernel does not reset the connection (and destroy the answer) on unread bytes.
constexpr uint64_t kLingerMs = 2000;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

bool valid_request_id(std::string_view v) {
  if (v.empty() || v.size() > 128) return false;
  for (char c : v) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

// Over TLS, the pieces of one write up to this size are encrypted as one record.
constexpr size_t kTlsCoalesceBytes = 16 * 1024;

http::RequestParser::Limits limits_of(const Config& c) {
  return {c.server.max_header_bytes, c.server.max_uri_bytes, c.server.merge_slashes, c.server.underscores_in_headers};
}

}  // namespace

ClientConn::ClientConn(WorkerState* worker)
    : worker_(worker), parser_(this, limits_of(worker->config())), session_(this) {}

void ClientConn::accept(uv_stream_t* server) {
  uv_tcp_init(worker_->loop(), &tcp_);
  uv_timer_init(worker_->loop(), &timer_);
  tcp_.data = this;
  timer_.data = this;
  pending_closes_ = 2;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0) {
    close();
    return;
  }
  auto& inst = worker_->instance();
  counted_ = true;
  if (inst.connections.fetch_add(1, std::memory_order_relaxed) >=
      static_cast<int64_t>(worker_->config().server.max_connections)) {
    close();  // over max_connections: closed at once, before reading anything
    return;
  }
  uv_tcp_nodelay(&tcp_, 1);
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    char ip[64] = {0};
    if (ss.ss_family == AF_INET6)
      uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&ss), ip, sizeof ip);
    else
      uv_ip4_name(reinterpret_cast<sockaddr_in*>(&ss), ip, sizeof ip);
    peer_ip_ = ip;
  }
  client_ip_ = peer_ip_;
  // TLS when the listener has it: the context current now stays with this connection.
  const net::Snapshot& snap = *worker_->snapshot();
  const auto& listen = snap.config->server.listen;
  const std::string& address = net::Listener::of(server).address();
  for (size_t i = 0; i < listen.size(); i++) {
    if (listen[i].text != address) continue;
    if (auto ctx = snap.listener_tls(i)) {
      tls_ = tls::Session::server(std::move(ctx));
      if (!tls_) {
        close();
        return;
      }
    }
    break;
  }
  const ServerConfig& sc = worker_->config().server;
  if (sc.proxy_protocol) {
    // The balancer's address is not the client's: the per-client cap waits for the header.
    awaiting_proxy_header_ = true;
    set_timer(Timer::kProxyHeader, sc.proxy_protocol_timeout_ms);
  } else {
    if (!count_client_connection()) return;
    // The head timeout covers the TLS handshake too: a client that never finishes it is closed.
    set_timer(Timer::kHeader, sc.header_timeout_ms);
  }
  start_read();
}

void ClientConn::start_read() {
  if (reading_ || state_ == State::kClosing) return;
  uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc, on_read);
  reading_ = true;
}

void ClientConn::stop_read() {
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
}

void ClientConn::set_timer(Timer which, uint64_t ms) {
  // Lazy re-arming: a request moves the deadline several times (head, idle, send), and
  // restarting the libuv timer each time costs a heap removal and insertion. The timer
  // only has to fire no later than the deadline: when it is armed for an earlier moment
  // it is left alone, and on_timer re-arms it for what is left. kNone just clears the
  // kind; an armed timer then fires into nothing.
  timer_kind_ = which;
  if (which == Timer::kNone) return;
  const uint64_t now = uv_now(timer_.loop);
  deadline_ms_ = now + ms;
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_)) && armed_for_ms_ <= deadline_ms_) return;
  armed_for_ms_ = deadline_ms_;
  uv_timer_start(&timer_, on_timer, ms, 0);
}

void ClientConn::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* self = static_cast<ClientConn*>(h->data);
  *buf = uv_buf_init(self->worker_->read_buffer(), net::Worker::kReadBufferSize);
}

void ClientConn::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<ClientConn*>(s->data);
  if (nread == 0 || self->state_ == State::kClosing) return;
  if (self->state_ == State::kLingering) {
    if (nread < 0) self->close();
    return;  // discard: we only wait for the client to finish sending
  }
  if (nread < 0) {
    self->on_peer_eof();
    return;
  }
  const char* data = buf->base;
  size_t len = static_cast<size_t>(nread);
  if (self->parser_.idle() && !self->in_request_ && self->timer_kind_ == Timer::kIdle) {
    // First byte of a new request on a kept-alive connection: the head clock starts.
    self->set_timer(Timer::kHeader, self->worker_->config().server.header_timeout_ms);
  }
  if (self->awaiting_proxy_header_) {
    // The PROXY header comes first and in the clear, on a TLS listener too.
    if (self->inbuf_off_ >= self->inbuf_.size()) {
      self->inbuf_.clear();
      self->inbuf_off_ = 0;
    }
    self->inbuf_.append(data, len);
    if (!self->take_proxy_header()) return;
    if (!self->tls_) {
      self->process_input();
      return;
    }
    // What followed the header is the start of the TLS handshake.
    std::string rest = self->inbuf_.substr(self->inbuf_off_);
    self->inbuf_.clear();
    self->inbuf_off_ = 0;
    if (!rest.empty() && self->tls_input(rest.data(), rest.size())) self->process_input();
    return;
  }
  if (self->tls_) {
    if (self->tls_input(data, len)) self->process_input();
    return;
  }
  if (self->inbuf_off_ >= self->inbuf_.size()) {
    self->inbuf_.clear();
    self->inbuf_off_ = 0;
  }
  self->inbuf_.append(data, len);
  self->process_input();
}

void ClientConn::on_peer_eof() {
  // The client went away (or half-closed). Between requests that is a clean end;
  // mid-request the exchange is abandoned and the upstream connection dropped.
  if (in_request_ && !request_body_done_) {
    session_.abort();
    if (session_.status() == 0) session_.set_status(499, net::kError);
    write_access_log();
    close();
    return;
  }
  stop_read();
  peer_eof_ = true;
  // Half-close after a complete request: the answer is still sent, then we close.
  // Between requests: close once anything queued has been flushed.
  if (!in_request_) close_after_flush();
}

void ClientConn::process_input() {
  if (processing_) return;
  processing_ = true;
  while (state_ == State::kOpen && !parse_paused_ && inbuf_off_ < inbuf_.size()) {
    const char* p = inbuf_.data() + inbuf_off_;
    size_t n = inbuf_.size() - inbuf_off_;
    auto out = parser_.execute(p, n);
    inbuf_off_ += out.consumed;
    if (out.state == http::RequestParser::State::kError) {
      const auto& err = parser_.error();
      if (in_request_ && session_.active()) session_.abort();
      if (!in_request_ || session_.status() == 0) {
        respond_error(err.status, err.code, err.message, false);
      } else {
        close();
      }
      break;
    }
    if (out.state == http::RequestParser::State::kMessageDone) {
      // One request at a time: the next is parsed once this exchange is over.
      parse_paused_ = true;
      if (!in_request_ && state_ == State::kOpen) {
        // The exchange already ended (a local answer, e.g. a 429): go straight on
        // with the next pipelined request.
        begin_next_request();
        continue;
      }
      break;
    }
    // kNeedMore consumed everything.
  }
  if (inbuf_off_ >= inbuf_.size()) {
    inbuf_.clear();
    inbuf_off_ = 0;
  } else if (inbuf_.size() - inbuf_off_ > worker_->config().server.max_header_bytes + 65536) {
    // Pipelined input piles up while we answer: stop reading until we catch up.
    stop_read();
  }
  processing_ = false;
}

void ClientConn::on_request_head(http::RequestHead& head) {
  const auto& snap = worker_->snapshot();
  const Config& cfg = *snap->config;
  uint64_t now = uv_hrtime();  // request start, for durations
  std::string request_id = session_.take_request_id();
  const http::Header* rid = http::find_header(head.headers, "X-Request-Id");
  if (rid && valid_request_id(rid->value))
    request_id.assign(rid->value);
  else
    worker_->next_request_id(request_id);
  in_request_ = true;
  request_body_done_ = false;
  body_paused_ = false;
  body_bytes_ = 0;
  worker_->note_request();
  if (!cfg.server.trusted_proxies.empty()) {
    http::RealIp real =
        http::resolve_real_ip(peer_ip_, head.headers, cfg.server.real_ip_header, cfg.server.trusted_proxies);
    client_ip_ = std::move(real.client);
    forwarded_for_ = std::move(real.forwarded_for);
  }

  // Ticket endpoint (queue/ticket_endpoint.h): before routing, no route limit applies.
  if (cfg.redis.enabled) {
    queue::TicketRequest t = queue::parse_ticket_request(head.method, head.target, head.path(), cfg.server.tickets_path);
    if (t.matches) {
      if (!t.method_allowed) {
        session_.record_local(snap, std::move(head), -1, now, std::move(request_id), 405, net::kError);
        respond_error(405, "method_not_allowed", "tickets answer GET, HEAD and DELETE", true,
                      "Allow: GET, HEAD, DELETE\r\n");
        return;
      }
      set_timer(Timer::kNone, 0);
      session_.start_ticket(snap, std::move(head), now, std::move(request_id), std::move(t.id), t.cancel, t.wait_s);
      return;
    }
  }

  int route = cfg.match_route(head.method, head.path());
  if (route < 0) {
    session_.record_local(snap, std::move(head), -1, now, std::move(request_id), 404, net::kError);
    // The body (if any) is read and discarded so the connection can stay open.
    respond_error(404, "no_route", "no route matches this request", true);
    return;
  }
  const RouteConfig& rc = cfg.routes[static_cast<size_t>(route)];
  const net::RouteRuntime& rt = snap->routes[static_cast<size_t>(route)];
  uint64_t max_body = rc.max_body_bytes ? rc.max_body_bytes : cfg.server.max_body_bytes;
  if (head.body == http::BodyKind::kContentLength && head.content_length > max_body) {
    session_.record_local(snap, std::move(head), route, now, std::move(request_id), 413, net::kError);
    // Refused before reading the body: no 100 Continue, and the connection closes.
    respond_error(413, "body_too_large", "request body exceeds max_body_bytes", false);
    return;
  }

  // Admission (admission/gate.h): shedding, the client's limit, the route budget.
  admission::Request ar;
  ar.now_ns = now;  // uv_hrtime and mono_ns read the same CLOCK_MONOTONIC
  ar.under_pressure = worker_->under_pressure();
  ar.queue_waiting = rt.queue && rt.queue->depth.load(std::memory_order_relaxed) > 0;
  if (rt.clients) {
    ar.client_key = client_ip_;
    if (rc.client_key.by_header) {
      const http::Header* h = http::find_header(head.headers, rc.client_key.header);
      if (h && !h->value.empty()) ar.client_key = h->value;
    }
  }
  admission::Gate gate(rc, rt.budget.get(), rt.clients.get(), rt.policy_header, rt.shared);
  admission::Verdict v = gate.decide(ar);
  if (rc.dry_run) {
    auto& reg = metrics::Registry::get();
    int wid = worker_->id();
    if (v.would_shed) reg.add(wid, rt.dry_run[net::kWouldShed]);
    if (v.would_client_limit) reg.add(wid, rt.dry_run[net::kWouldClientLimit]);
    if (v.would_degrade) reg.add(wid, rt.dry_run[net::kWouldDegrade]);
    if (v.would_reject) reg.add(wid, rt.dry_run[net::kWouldReject]);
  }
  switch (v.kind) {
    case admission::Verdict::Kind::kDegrade:
      session_.record_local(snap, std::move(head), route, now, std::move(request_id), cfg.degrade.status,
                            net::kDegraded);
      respond_degrade();
      return;
    case admission::Verdict::Kind::kClientLimited:
    case admission::Verdict::Kind::kRateLimited: {
      // The refusal's extra headers are built in a buffer that keeps its capacity: a
      // 429 under a storm allocates nothing for them.
      thread_local std::string extra;
      extra.clear();
      append_retry_after(extra, v.retry_after_ns);
      gate.append_headers(v, extra);
      session_.record_local(snap, std::move(head), route, now, std::move(request_id), 429, net::kRejected);
      if (v.kind == admission::Verdict::Kind::kClientLimited)
        respond_error(429, "client_rate_limited", "too many requests from this client", true, extra);
      else
        respond_error(429, "rate_limited", "the route is over its admission rate", true, extra);
      return;
    }
    case admission::Verdict::Kind::kAdmit:
    case admission::Verdict::Kind::kPark:
      break;
  }
  bool park = v.kind == admission::Verdict::Kind::kPark;
  std::string extra = gate.headers(v);

  if (head.expect_continue && head.version_minor >= 1 && head.body != http::BodyKind::kNone) {
    uv_buf_t b = net::buf_of(kContinue.data(), kContinue.size());
    write(&b, 1);
  }
  if (head.body != http::BodyKind::kNone) set_timer(Timer::kBody, cfg.server.body_timeout_ms);
  else set_timer(Timer::kNone, 0);
  session_.start(snap, std::move(head), route, now, std::move(request_id), std::move(extra), park);
}

void ClientConn::append_retry_after(std::string& out, uint64_t retry_after_ns) {
  uint64_t secs = (retry_after_ns + 999999999ULL) / 1000000000ULL;
  if (secs == 0) secs = 1;
  char num[24];
  out += "Retry-After: ";
  out.append(num, static_cast<size_t>(std::to_chars(num, num + sizeof num, secs).ptr - num));
  out += "\r\n";
}

void ClientConn::respond_degrade() {
  const Config& cfg = worker_->config();
  const auto& head = session_.head();
  bool keep_alive = !draining_ && head.keep_alive;
  std::string retry_after;
  append_retry_after(retry_after, cfg.degrade.retry_after_ms * 1000000ULL);
  std::string out;
  if (const pages::PageSet* ps = pages::page_set_for(cfg.pages.get(), head)) {
    pages::PageValues v = pages::request_values(head, session_.request_id());
    v.retry_after = pages::retry_after_in(retry_after);
    out = pages::page_answer(*ps, pages::Page::kDegraded, v,
                             {cfg.degrade.status, head.version_minor == 0, keep_alive, head.is_head(),
                              session_.request_id(), retry_after});
  } else {
    out.reserve(256 + cfg.degrade.body.size());
    out += head.version_minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ";
    out += std::to_string(cfg.degrade.status);
    out += ' ';
    out += http::reason_phrase(cfg.degrade.status);
    out += "\r\nContent-Type: " + cfg.degrade.content_type;
    out += "\r\nContent-Length: " + std::to_string(cfg.degrade.body.size());
    out += "\r\n" + retry_after;
    out += "X-Request-Id: " + session_.request_id() + "\r\n";
    out += keep_alive ? (head.version_minor == 0 ? "Connection: keep-alive\r\n" : "") : "Connection: close\r\n";
    out += "\r\n";
    if (!head.is_head()) out += cfg.degrade.body;
  }
  uv_buf_t b = net::buf_of(out.data(), out.size());
  if (!write(&b, 1)) return;
  request_done(keep_alive);
}

void ClientConn::on_request_body(const char* data, size_t len) {
  if (state_ != State::kOpen) return;
  if (timer_kind_ == Timer::kBody || timer_kind_ == Timer::kHeader)
    set_timer(Timer::kBody, worker_->config().server.body_timeout_ms);
  if (!session_.active()) return;  // answered locally: discard
  // Chunked bodies have no declared length: enforce the cap as they stream.
  const Config& cfg = *session_.snapshot()->config;
  uint64_t max_body = cfg.routes[static_cast<size_t>(session_.route())].max_body_bytes;
  if (max_body == 0) max_body = cfg.server.max_body_bytes;
  body_bytes_ += len;
  if (body_bytes_ > max_body) {
    session_.abort();
    if (session_.status() == 0) {
      session_.set_status(413, net::kError);
      respond_error(413, "body_too_large", "request body exceeds max_body_bytes", false);
    } else {
      abort();
    }
    return;
  }
  session_.body(data, len);
}

void ClientConn::on_request_complete() {
  request_body_done_ = true;
  body_bytes_ = 0;
  if (timer_kind_ == Timer::kBody) set_timer(Timer::kNone, 0);
  if (session_.active()) session_.body_done();
}

void ClientConn::pause_body() {
  body_paused_ = true;
  stop_read();
  if (timer_kind_ == Timer::kBody) set_timer(Timer::kNone, 0);
}

void ClientConn::resume_body() {
  if (!body_paused_) return;
  body_paused_ = false;
  if (state_ != State::kOpen) return;
  if (!request_body_done_) set_timer(Timer::kBody, worker_->config().server.body_timeout_ms);
  start_read();
}

bool ClientConn::write(uv_buf_t* bufs, unsigned n) {
  if (state_ == State::kClosing) return false;
  if (tls_) {
    size_t total = 0;
    for (unsigned i = 0; i < n; i++) total += bufs[i].len;
    uv_buf_t joined;
    if (n > 1 && total <= kTlsCoalesceBytes) {
      // A response head and its body in one record: one MAC, one header, one send.
      tls_plain_.clear();
      for (unsigned i = 0; i < n; i++) tls_plain_.append(bufs[i].base, bufs[i].len);
      joined = net::buf_of(tls_plain_.data(), tls_plain_.size());
      bufs = &joined;
      n = 1;
    }
    for (unsigned i = 0; i < n; i++) {
      if (!tls_->write_plain(bufs[i].base, bufs[i].len)) {
        if (in_request_ && session_.active()) session_.abort();
        close();
        return false;
      }
    }
    if (!tls_flush()) return false;
    if (write_queue_size() > 0 && timer_kind_ != Timer::kSend && timer_kind_ != Timer::kLinger)
      set_timer(Timer::kSend, worker_->config().server.send_timeout_ms);
    return true;
  }
  int r = net::write_bufs(reinterpret_cast<uv_stream_t*>(&tcp_), bufs, n, on_write);
  if (r != 0) {
    if (in_request_ && session_.active()) session_.abort();
    close();
    return false;
  }
  count_queued();
  if (write_queue_size() > 0 && timer_kind_ != Timer::kSend && timer_kind_ != Timer::kLinger)
    set_timer(Timer::kSend, worker_->config().server.send_timeout_ms);
  return true;
}

void ClientConn::count_queued() {
  size_t q = write_queue_size();
  if (q == queued_) return;
  worker_->note_queued(static_cast<int64_t>(q) - static_cast<int64_t>(queued_));
  queued_ = q;
}

size_t ClientConn::write_queue_size() const {
  return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&tcp_));
}

void ClientConn::on_write(uv_write_t* req, int status) {
  auto* w = static_cast<net::OwnedWrite*>(req->data);
  auto* self = static_cast<ClientConn*>(req->handle->data);
  delete w;
  if (self->state_ == State::kClosing) return;
  if (status < 0) {
    if (self->in_request_ && self->session_.active()) self->session_.abort();
    self->close();
    return;
  }
  self->count_queued();
  size_t queued = self->write_queue_size();
  if (self->timer_kind_ == Timer::kSend) {
    if (queued > 0)
      self->set_timer(Timer::kSend, self->worker_->config().server.send_timeout_ms);  // progress
    else
      self->set_timer(Timer::kNone, 0);
  }
  if (queued <= kLowWater && self->session_.active()) self->session_.client_drained();
  if (queued == 0 && self->close_after_flush_ && self->state_ == State::kOpen) self->linger();
}

void ClientConn::respond_error(int status, std::string_view code, std::string_view message,
                               bool keep_alive, std::string_view extra) {
  const auto& head = session_.head();
  bool http10 = in_request_ && head.version_minor == 0;
  keep_alive = keep_alive && !draining_ && in_request_ && head.keep_alive;
  std::string fresh_id;
  if (!in_request_ || session_.request_id().empty()) worker_->next_request_id(fresh_id);
  const std::string& rid = fresh_id.empty() ? session_.request_id() : fresh_id;
  // The answer is assembled in a buffer that keeps its capacity (write() copies what
  // the socket does not take at once).
  thread_local std::string resp;
  const pages::PageSet* ps = nullptr;
  if (in_request_ && (status == 429 || status == 503)) {
    // Floodgate's own refusals become the error page for a browser navigation.
    const net::Snapshot* snap = session_.snapshot() ? session_.snapshot() : worker_->snapshot().get();
    ps = pages::page_set_for(snap->config->pages.get(), head);
  }
  if (ps != nullptr) {
    pages::PageValues v = pages::request_values(head, rid);
    v.retry_after = pages::retry_after_in(extra);
    v.message = pages::refusal_message(status, code, v.lang);
    resp = pages::page_answer(*ps, pages::Page::kError, v, {status, http10, keep_alive, head.is_head(), rid, extra});
  } else {
    resp.clear();
    http::append_error_response(resp, status, code, message, rid, keep_alive, http10, extra);
  }
  if (session_.status() == 0 || !in_request_) session_.set_status(status, session_.outcome());
  uv_buf_t b = net::buf_of(resp.data(), resp.size());
  if (!write(&b, 1)) return;
  if (!in_request_) {
    // Refused before a request was accepted (malformed head, timeout): log it too.
    session_.record_local(worker_->snapshot(), http::RequestHead(), -1, uv_hrtime(), rid, status,
                          net::kError);
    in_request_ = true;
  }
  request_done(keep_alive);
}

void ClientConn::respond_raw(const std::string& bytes, bool keep_alive) {
  uv_buf_t b = net::buf_of(bytes.data(), bytes.size());
  if (!write(&b, 1)) return;
  request_done(keep_alive);
}

void ClientConn::request_done(bool keep_alive) {
  write_access_log();
  in_request_ = false;
  if (!keep_alive || draining_ || peer_eof_) {
    parse_paused_ = true;
    close_after_flush();
    return;
  }
  if (parser_.in_body() || !parse_paused_) {
    // The answer went out before the request finished arriving (404 with a body):
    // keep parsing to discard the rest, then continue with the next request.
    set_timer(Timer::kBody, worker_->config().server.body_timeout_ms);
    start_read();
    return;
  }
  begin_next_request();
}

void ClientConn::begin_next_request() {
  parser_.reset_for_next();
  client_ip_ = peer_ip_;
  forwarded_for_.clear();
  parse_paused_ = false;
  if (write_queue_size() == 0) set_timer(Timer::kIdle, worker_->config().server.idle_timeout_ms);
  else set_timer(Timer::kSend, worker_->config().server.send_timeout_ms);
  start_read();
  if (inbuf_off_ < inbuf_.size()) {
    set_timer(Timer::kHeader, worker_->config().server.header_timeout_ms);
    if (!processing_) {
      process_input();
    }
  }
}

void ClientConn::close_after_flush() {
  close_after_flush_ = true;
  if (write_queue_size() == 0) linger();
}

void ClientConn::linger() {
  if (state_ != State::kOpen) return;
  state_ = State::kLingering;
  if (tls_) {
    // close_notify first, so the client can tell the end of the answer from a cut.
    tls_->close();
    tls_flush();
    if (state_ == State::kClosing) return;
  }
  // Half-close our side so the client sees the end of the answer, and keep reading
  // (discarding) for a while so unread input does not turn the close into a reset.
  int r = uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&tcp_), on_shutdown);
  if (r != 0) {
    close();
    return;
  }
  start_read();
  set_timer(Timer::kLinger, kLingerMs);
}

void ClientConn::on_shutdown(uv_shutdown_t* req, int status) {
  auto* self = static_cast<ClientConn*>(req->handle->data);
  if (status < 0 && self->state_ == State::kLingering) self->close();
}

void ClientConn::abort() {
  // Close without lingering: the client must see the response was cut.
  close();
}

void ClientConn::drain() {
  draining_ = true;
  if (state_ != State::kOpen) return;
  if (!in_request_ && parser_.idle()) close();
  // else: the response in progress carries Connection: close and the exchange ends it.
}

void ClientConn::on_timer(uv_timer_t* t) {
  auto* self = static_cast<ClientConn*>(t->data);
  Timer kind = self->timer_kind_;
  if (kind == Timer::kNone) return;
  if (const uint64_t now = uv_now(t->loop); now < self->deadline_ms_) {
    // Armed for an earlier deadline that has since moved on (set_timer).
    self->armed_for_ms_ = self->deadline_ms_;
    uv_timer_start(t, on_timer, self->deadline_ms_ - now, 0);
    return;
  }
  self->timer_kind_ = Timer::kNone;
  switch (kind) {
    case Timer::kProxyHeader:
      self->reject_proxy_header(static_cast<int>(http::ProxyHeaderError::kTimeout),
                                "no complete PROXY protocol header within proxy_protocol_timeout");
      break;
    case Timer::kHeader:
      // The whole head did not arrive in time (slowloris): 408 and close. A TLS
      // handshake that did not finish gets no answer: there is nothing to answer on.
      if (self->in_request_ || (self->tls_ && !self->tls_->handshake_done())) {
        self->close();
      } else {
        self->respond_error(408, "request_timeout", "request head not received within header_timeout",
                            false);
      }
      break;
    case Timer::kBody:
    case Timer::kSend:
      if (self->in_request_ && self->session_.active()) {
        self->session_.abort();
        if (self->session_.status() == 0) self->session_.set_status(408, net::kError);
        self->write_access_log();
        self->in_request_ = false;
      }
      self->close();
      break;
    case Timer::kIdle:
    case Timer::kLinger:
      self->close();
      break;
    case Timer::kNone:
      break;
  }
}

void ClientConn::close() {
  if (state_ == State::kClosing) return;
  if (tls_ && tls_->state() == tls::State::kOpen && write_queue_size() == 0) {
    // Closing between requests (idle, drain): a close_notify if the socket takes it now.
    tls_->close();
    tls_out_.clear();
    tls_->take_ciphertext(tls_out_);
    uv_buf_t b = net::buf_of(tls_out_.data(), tls_out_.size());
    uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1);
  }
  state_ = State::kClosing;
  if (in_request_ && session_.active()) session_.abort();
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_close);
}

void ClientConn::on_close(uv_handle_t* h) {
  auto* self = static_cast<ClientConn*>(h->data);
  if (--self->pending_closes_ > 0) return;
  if (self->counted_) self->worker_->instance().connections.fetch_sub(1, std::memory_order_relaxed);
  self->worker_->note_queued(-static_cast<int64_t>(self->queued_));
  if (self->client_slot_ != kNoSlot)
    self->worker_->instance().client_connections[self->client_slot_].fetch_sub(1, std::memory_order_relaxed);
  self->worker_->conn_closed(self);
  delete self;
}

void ClientConn::write_access_log() {
  const auto& s = session_;
  if (s.status() == 0 || s.snapshot() == nullptr) return;
  const Config& cfg = *s.snapshot()->config;
  uint64_t total_ns = uv_hrtime() - s.start_ns();
  uint64_t total_ms = total_ns / 1000000;
  if (s.route() >= 0) {
    const auto& rt = s.snapshot()->routes[static_cast<size_t>(s.route())];
    auto& reg = metrics::Registry::get();
    reg.add(worker_->id(), rt.requests[static_cast<size_t>(s.outcome())]);
    reg.observe(worker_->id(), rt.duration, static_cast<double>(total_ns) / 1e9);
  }
  // Metrics above count every request; the line itself may be sampled (never an error).
  if (!cfg.log.access || !log::keep_access_line(s.status())) return;
  std::string& out = worker_->access_log().buffer();
  char ts_buf[log::kTimestampMax];
  std::string_view ts(ts_buf, log::format_timestamp(ts_buf, log::wall_ms()));
  std::string_view route = s.route() >= 0 ? std::string_view(cfg.routes[static_cast<size_t>(s.route())].name)
                                          : std::string_view();
  // Only the fields log.access_fields selects, always in this order.
  const LogConfig& lc = cfg.log;
  log::Line line(out);
  if (lc.has_field(kFieldTs)) line.str("ts", ts);
  if (lc.has_field(kFieldRequestId)) line.str("request_id", s.request_id());
  if (lc.has_field(kFieldClient)) line.str("client", client_ip_);
  if (lc.has_field(kFieldMethod)) line.str("method", s.head().method);
  if (lc.has_field(kFieldPath)) line.str("path", s.head().path());
  if (lc.has_field(kFieldRoute)) line.str("route", route);
  if (lc.has_field(kFieldStatus)) line.num("status", s.status());
  if (lc.has_field(kFieldOutcome)) line.str("outcome", net::outcome_name(s.outcome()));
  if (lc.has_field(kFieldUpstream)) line.str("upstream", s.upstream_addr());
  if (lc.has_field(kFieldUpstreamMs)) line.num("upstream_ms", s.upstream_ms());
  if (lc.has_field(kFieldTotalMs)) line.num("total_ms", static_cast<int64_t>(total_ms));
  line.finish();
  worker_->access_log().maybe_flush();
}

}  // namespace fg::proxy
