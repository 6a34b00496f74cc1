// One request's exchange with the upstream: connect (with safe retries), forward,
// stream the response back with backpressure in both directions.
#include "proxy/proxy_session.h"

#include <algorithm>
#include <cstring>

#include "net/stream_write.h"
#include "proxy/worker_state.h"
#include "proxy/client_conn.h"
#include "core/log.h"

namespace fg::proxy {
namespace {

// Request body bytes buffered before the upstream connection is ready; beyond this
// the client is paused. Nothing is buffered without bound.
constexpr size_t kMaxPending = 64 * 1024;
// Above this many queued bytes towards the client the upstream read is paused, unless
// server.response_buffering lets the response queue up to its own bound.
constexpr size_t kClientHighWater = 256 * 1024;
// A buffer that grew past this is freed when its exchange ends, not kept for the next.
constexpr size_t kKeepCapacity = 64 * 1024;
// Upstream write queue above which the client body is paused.
constexpr size_t kUpstreamHighWater = 64 * 1024;

}  // namespace

void ProxySession::proceed(const std::string& key) {
  buffering_ = false;
  if (!key.empty()) {
    // The shop sees the key the gateway deduplicated on, whatever source it came
    // from, so it can dedupe the same way.
    auto& hs = head_.headers;
    hs.erase(std::remove_if(hs.begin(), hs.end(),
                            [](const http::Header& h) { return http::iequals(h.name, "Idempotency-Key"); }),
             hs.end());
    hs.push_back({"Idempotency-Key", key});
  }
  // The body is whole now: send it with a Content-Length whatever its framing was.
  if (head_.body != http::BodyKind::kNone || !body_buf_.empty()) {
    head_.body = http::BodyKind::kContentLength;
    head_.content_length = body_buf_.size();
  }
  pending_ = std::move(body_buf_);
  body_buf_.clear();
  http::ForwardInfo info{client_->client_ip(), client_->scheme(), request_id_, client_->forwarded_for()};
  upstream_head_.clear();
  http::append_upstream_request_head(upstream_head_, head_, info);
  try_connect();
}

void ProxySession::try_connect() {
  UpstreamConn* c = nullptr;
  auto r = pool_->acquire(this, tried_, &c);
  if (r == UpstreamPool::Acquire::kBusy && attempts_ == 0 && !pool_->any_available()) {
    unavailable(true, true);
    return;
  }
  if (r == UpstreamPool::Acquire::kNoServer && connect_failures_ == attempts_) {
    // Every candidate (primaries, then backups) refused or timed out the connect, or
    // could not be tried at all (a half-open breaker whose probes are taken counts as
    // available but lets nothing through): nothing of the request reached a server, so
    // the route's on_unavailable answers, as when no server qualified to begin with.
    unavailable(false, true);
    return;
  }
  if (r == UpstreamPool::Acquire::kBusy) {
    fail(503, "upstream_busy", "every upstream server is at max_connections");
    return;
  }
  if (r == UpstreamPool::Acquire::kNoServer) {
    fail(502, "upstream_connect_failed", "no upstream server could be reached");
    return;
  }
  conn_ = c;
  attempts_++;
  upstream_addr_ = pool_->server_name(c->server());
  upstream_start_ns_ = uv_hrtime();
  if (r == UpstreamPool::Acquire::kReady) send_request();
}

bool ProxySession::retry_safe() const {
  // Safe by construction: a bodiless GET/HEAD, or a request carrying an idempotency key
  // (the shop can dedupe it); the body must still be in hand to send it again.
  if (head_.body != http::BodyKind::kNone) return false;
  if (head_.method == "GET" || head_.method == "HEAD") return true;
  return http::find_header(head_.headers, "Idempotency-Key") != nullptr;
}

bool ProxySession::has_untried() const {
  if (deadline_ns_ != 0 && uv_hrtime() >= deadline_ns_) return false;
  for (bool t : tried_)
    if (!t) return true;
  return false;
}

void ProxySession::on_upstream_connected(UpstreamConn* conn) {
  if (!active_ || conn != conn_) return;
  send_request();
}

void ProxySession::send_request() {
  head_sent_ = true;
  uv_buf_t bufs[2] = {net::buf_of(upstream_head_.data(), upstream_head_.size()),
                      net::buf_of(pending_.data(), pending_.size())};
  // One deadline covers every try of this request, from its first sending.
  uint64_t now = uv_hrtime();
  if (deadline_ns_ == 0) {
    const UpstreamConfig& up = snap_->config->upstreams[upstream_index_];
    deadline_ns_ = now + snap_->upstreams[upstream_index_].timeout_ms(up, client_->worker()->now_ms()) * 1000000ULL;
  }
  uint64_t left_ms = deadline_ns_ > now ? (deadline_ns_ - now) / 1000000 : 1;
  conn_->expect_response(head_.is_head(), std::max<uint64_t>(left_ms, 1));
  UpstreamConn* c = conn_;
  if (!c->write(bufs, pending_.empty() ? 1 : 2)) return;  // the error callback handled it
  pending_.clear();
  if (!body_done_) client_->resume_body();
}

void ProxySession::send_prebuffered() {
  // The request keeps the framing it came with (a chunked body is sent as one chunk);
  // when the body is not complete yet, the rest streams after it as it arrives.
  prebuffer_ = false;
  uncount_prebuffered();
  pending_.clear();
  if (head_.body == http::BodyKind::kChunked) {
    if (!body_buf_.empty()) {
      http::append_chunk_header(pending_, body_buf_.size());
      pending_ += body_buf_;
      pending_ += http::kChunkTrailer;
    }
    if (body_done_) pending_ += http::kLastChunk;
  } else {
    pending_ = std::move(body_buf_);
  }
  std::string().swap(body_buf_);
  http::ForwardInfo info{client_->client_ip(), client_->scheme(), request_id_, client_->forwarded_for()};
  upstream_head_.clear();
  http::append_upstream_request_head(upstream_head_, head_, info);
  try_connect();
}

void ProxySession::forward(const char* data, size_t len) {
  if (!head_sent_) {
    pending_.append(data, len);
    if (pending_.size() > kMaxPending) client_->pause_body();
    return;
  }
  uv_buf_t b = net::buf_of(data, len);
  UpstreamConn* c = conn_;
  if (!c->write(&b, 1)) return;
  c->touch_timer();
  if (c->write_queue_size() > kUpstreamHighWater) client_->pause_body();
}

void ProxySession::body(const char* data, size_t len) {
  if (!active_ || len == 0) return;
  if (buffering_) {
    body_buf_.append(data, len);
    return;
  }
  if (prebuffer_) {
    // Larger than request_buffering, or the instance holds request_buffering_total
    // already: from here on the body streams as it arrives.
    auto& total = client_->worker()->instance().request_buffered;
    if (body_buf_.size() + len > prebuffer_limit_ ||
        total.load(std::memory_order_relaxed) + static_cast<int64_t>(len) >
            static_cast<int64_t>(snap_->config->server.request_buffering_total)) {
      send_prebuffered();
      if (active_) body(data, len);
      return;
    }
    body_buf_.append(data, len);
    prebuffer_counted_ += len;
    total.fetch_add(static_cast<int64_t>(len), std::memory_order_relaxed);
    return;
  }
  if (head_.body == http::BodyKind::kChunked) {
    std::string framed;
    framed.reserve(len + 16);
    http::append_chunk_header(framed, len);
    framed.append(data, len);
    framed.append(http::kChunkTrailer);
    forward(framed.data(), framed.size());
  } else {
    forward(data, len);
  }
}

void ProxySession::body_done() {
  if (!active_) return;
  body_done_ = true;
  if (cache_resume_) {
    cache_resume_ = false;
    try_connect();
    return;
  }
  if (buffering_) {
    decide_idempotency();
    return;
  }
  if (prebuffer_) {
    // Read and validated whole: only now is a server chosen and the request sent.
    send_prebuffered();
    return;
  }
  if (head_.body == http::BodyKind::kChunked) forward(http::kLastChunk.data(), http::kLastChunk.size());
}

void ProxySession::on_upstream_drained() {
  if (active_ && !body_done_) client_->resume_body();
}

void ProxySession::client_drained() {
  if (active_ && upstream_paused_ && conn_) {
    upstream_paused_ = false;
    conn_->resume_reading();
  }
}

void ProxySession::on_upstream_head(http::ResponseHead& resp) {
  if (!active_) return;
  response_started_ = true;
  status_ = resp.status;
  uint64_t upstream_ns = uv_hrtime() - upstream_start_ns_;
  upstream_ms_ = static_cast<int64_t>(upstream_ns / 1000000);
  if (conn_) {
    pool_->record(conn_->server(), resp.status >= 500 ? breaker::Outcome::kError : breaker::Outcome::kSuccess);
    if (resp.status >= 500 && conn_->server() < snap_->upstreams[upstream_index_].errors.size())
      metrics::Registry::get().add(client_->worker()->id(), snap_->upstreams[upstream_index_].errors[conn_->server()][4]);
  }
  if (auto& lat = snap_->upstreams[upstream_index_].latency) lat->record(upstream_ns / 1000000, client_->worker()->now_ms());
  cache::Hit stale;
  if (cache_route_ && resp.status >= 500 && conn_ && cache_find(true, &stale)) {
    // stale_if_error: a usable stale entry beats the upstream's 5xx.
    UpstreamConn* c = conn_;
    conn_ = nullptr;
    c->pool()->release(c, false);
    cache_release();
    serve_cache(true);
    return;
  }
  // A 502/503/504 before anything reached the client: another server may do better,
  // when sending the request again is safe and the retry budget allows it.
  if (resp.status >= 502 && resp.status <= 504 && conn_ && retry_safe() && client_->worker()->retry_allowed()) {
    UpstreamConn* c = conn_;
    conn_ = nullptr;
    c->pool()->release(c, false);
    if (has_untried()) {
      client_->worker()->note_retry();
      response_started_ = false;
      status_ = 0;
      head_sent_ = false;
      try_connect();
      return;
    }
  }
  metrics::Registry::get().observe(client_->worker()->id(),
                                   snap_->upstreams[upstream_index_].duration,
                                   static_cast<double>(upstream_ns) / 1e9);
  framing_ = http::choose_client_framing(resp, head_);
  // Keep the client connection only when this request was read whole (otherwise its
  // unread rest would be taken for the next request) and the framing allows it.
  client_keep_alive_ = head_.keep_alive && body_done_ && !client_->worker()->draining() &&
                       framing_ != http::ClientFraming::kClose;
  if (cache_leader_) {
    for (const auto& h : resp.headers) cache_rec_.note(h.name, h.value);
  }
  if (idem_.capturing() || cache_leader_) {
    capture_status_ = resp.status;
    capture_reason_ = resp.reason.empty() ? std::string(http::reason_phrase(resp.status)) : resp.reason;
    std::string tokens = http::connection_tokens(resp.headers);
    for (const auto& h : resp.headers) {
      if (http::is_hop_by_hop(h.name, tokens) || http::iequals(h.name, "Content-Length")) continue;
      capture_headers_ += h.name;
      capture_headers_ += ": ";
      capture_headers_ += h.value;
      capture_headers_ += "\r\n";
    }
  }
  // The head is held back and leaves with the first body bytes (or the end of the
  // response): one write instead of two, and an upstream that fails before any body
  // byte still gets an honest 502/504 instead of a cut connection.
  head_out_.clear();
  thread_local std::string extra;  // keeps its capacity: no allocation per response
  extra.assign("X-Request-Id: ").append(request_id_).append("\r\n").append(extra_headers_);
  http::append_client_response_head(head_out_, resp, head_, framing_, client_keep_alive_, extra);
}

bool ProxySession::write_client(const char* data, size_t len, bool last) {
  uv_buf_t bufs[4];
  unsigned n = 0;
  if (!head_out_.empty()) bufs[n++] = net::buf_of(head_out_.data(), head_out_.size());
  char hdr[24];
  if (len > 0 && framing_ == http::ClientFraming::kChunked) {
    std::string h;
    http::append_chunk_header(h, len);
    std::memcpy(hdr, h.data(), h.size());
    bufs[n++] = net::buf_of(hdr, h.size());
    bufs[n++] = net::buf_of(data, len);
    bufs[n++] = net::buf_of(http::kChunkTrailer.data(), http::kChunkTrailer.size());
  } else if (len > 0 && framing_ != http::ClientFraming::kNone) {
    bufs[n++] = net::buf_of(data, len);
  }
  if (last && framing_ == http::ClientFraming::kChunked)
    bufs[n++] = net::buf_of(http::kLastChunk.data(), http::kLastChunk.size());
  if (n == 0) return true;
  if (idem_.holding()) {
    // The answer leaves only once Redis holds it: a duplicate sent the moment the
    // client has its answer must find the record, not a claim in flight.
    for (unsigned i = 0; i < n; i++) idem_.hold(bufs[i].base, bufs[i].len);
    head_out_.clear();
    return true;
  }
  if (batching_) {
    // Chunk headers are stored in batch_framing_, which must not reallocate while
    // batch_ points into it: flush first when it is nearly full.
    bool framing_full = framing_ == http::ClientFraming::kChunked &&
                        batch_framing_.capacity() - batch_framing_.size() < 32;
    if (framing_full || batch_.size() > 256) {
      if (!flush_batch()) return false;
      batching_ = true;
    }
    for (unsigned i = 0; i < n; i++) {
      uv_buf_t b = bufs[i];
      if (b.base == head_out_.data()) {
        batch_head_ = std::move(head_out_);
        b = net::buf_of(batch_head_.data(), batch_head_.size());
      } else if (b.base == hdr) {
        size_t at = batch_framing_.size();
        batch_framing_.append(hdr, b.len);
        b = net::buf_of(batch_framing_.data() + at, b.len);
      }
      batch_.push_back(b);
    }
    head_out_.clear();
    return true;
  }
  bool ok = client_->write(bufs, n);
  head_out_.clear();
  return ok;
}

bool ProxySession::flush_batch() {
  batching_ = false;
  if (batch_.empty()) return true;
  bool ok = client_->write(batch_.data(), static_cast<unsigned>(batch_.size()));
  batch_.clear();
  batch_head_.clear();
  batch_framing_.clear();
  return ok;
}

void ProxySession::on_upstream_parsed() {
  if (!active_) return;
  if (!flush_batch() || !active_) return;
  if (conn_ && !room_for_response(client_->write_queue_size())) {
    // A slow reader: stop pulling from the upstream until the client drains.
    upstream_paused_ = true;
    conn_->pause_reading();
  }
}

bool ProxySession::room_for_response(size_t queued) const {
  if (queued <= kClientHighWater) return true;
  // Within response_buffering the whole answer may queue up, so an upstream that has
  // sent it all is released while the client reads; past the instance-wide total every
  // response is held to the streaming bound again.
  const ServerConfig& s = snap_->config->server;
  return queued <= s.response_buffering &&
         client_->worker()->instance().response_buffered.load(std::memory_order_relaxed) <=
             static_cast<int64_t>(s.response_buffering_total);
}

bool ProxySession::flush_held() {
  std::string_view held = idem_.stop_holding();
  if (held.empty()) return true;
  uv_buf_t b = net::buf_of(held.data(), held.size());
  bool ok = client_->write(&b, 1);  // copies what the socket does not take at once
  idem_.drop_held();                // a second flush (overflow, then the end) writes nothing
  return ok;
}

void ProxySession::on_upstream_body(const char* data, size_t len) {
  if (!active_ || len == 0) return;
  if ((idem_.capturing() || cache_leader_) && !capture_overflow_) {
    const RouteConfig& rcap = snap_->config->routes[static_cast<size_t>(route_)];
    uint64_t cap = idem_.capturing() ? rcap.idempotency.max_response_bytes : rcap.cache.max_entry_bytes;
    if (capture_body_.size() + len > cap) {
      capture_overflow_ = true;  // forwarded, but recorded as not replayable
      std::string().swap(capture_body_);
      if (!flush_held() || !active_) return;
    } else {
      capture_body_.append(data, len);
    }
  }
  // Chunk headers of one read live here; only chunked answers need the room.
  if (framing_ == http::ClientFraming::kChunked && batch_framing_.capacity() < 1024) batch_framing_.reserve(1024);
  batching_ = true;
  write_client(data, len, false);  // collected; on_upstream_parsed/complete writes it
}

void ProxySession::on_upstream_complete() {
  if (!active_) return;
  if (cache_leader_) {
    cache_store();
    cache_release();
  }
  // Reuse the upstream connection only if it saw our whole request. It goes back to
  // the pool before the client sees the end of the answer.
  UpstreamConn* c = conn_;
  conn_ = nullptr;
  pool_->release(c, body_done_);
  if (!write_client(nullptr, 0, true) || !active_) return;
  if (!flush_batch() || !active_) return;
  if (idem_.capturing()) {
    // The answer leaves once Redis holds its record (or released a 5xx's claim).
    loop::Guard<ProxySession> g = anchor_.guard();
    auto after = [g] {
      ProxySession* s = live(g);
      if (s == nullptr) return;
      if (!s->flush_held() || !s->active_) return;
      s->finish(s->client_keep_alive_);
    };
    uint64_t ttl = snap_->config->routes[static_cast<size_t>(route_)].idempotency.ttl_ms;
    if (idem_.complete(client_->worker()->idem_link(), capture_status_, capture_reason_, capture_headers_,
                       capture_body_, capture_overflow_, ttl, std::move(after)))
      return;
  }
  if (!flush_held() || !active_) return;
  finish(client_keep_alive_);
}

void ProxySession::on_upstream_error(UpstreamError kind, bool connect_timed_out) {
  if (!active_) return;
  bool will_retry = (kind == UpstreamError::kConnect && !response_started_);
  if (!will_retry && !(kind == UpstreamError::kReset && conn_ && conn_->reused() && !response_started_ &&
                       head_.body == http::BodyKind::kNone)) {
    idem_release();
  }
  UpstreamConn* c = conn_;
  conn_ = nullptr;
  if (c && c->server() < snap_->upstreams[upstream_index_].errors.size()) {
    metrics::Registry::get().add(client_->worker()->id(),
                                 snap_->upstreams[upstream_index_].errors[c->server()][static_cast<size_t>(kind)]);
    pool_->record(c->server(), kind == UpstreamError::kTimeout ? breaker::Outcome::kTimeout : breaker::Outcome::kError);
    if (kind == UpstreamError::kTimeout) {
      // A timeout is a latency sample of at least the timeout: without it an adaptive
      // timeout could never rise above itself.
      if (auto& lat = snap_->upstreams[upstream_index_].latency) {
        uint64_t waited = (uv_hrtime() - upstream_start_ns_) / 1000000;
        lat->record(waited, client_->worker()->now_ms());
      }
    }
  }
  if (batching_ && !batch_.empty() && head_out_.empty() && !batch_head_.empty() && batch_.front().base == batch_head_.data()) {
    // The head and first body bytes were only collected, never written: the client has
    // seen nothing yet, so it can still get an honest error.
    head_out_ = std::move(batch_head_);
  }
  batching_ = false;
  batch_.clear();
  batch_head_.clear();
  batch_framing_.clear();
  if (response_started_ && !head_out_.empty()) {
    // Only the (held back) head had arrived: nothing reached the client yet.
    head_out_.clear();
    response_started_ = false;
    status_ = 0;
  }
  bool nothing_sent = kind == UpstreamError::kConnect;
  if (nothing_sent) connect_failures_++;
  // A pooled connection that the server had already closed: a bodiless GET/HEAD can be
  // sent again on a fresh connection (it changes nothing on the server).
  bool stale_safe = kind == UpstreamError::kReset && c && c->reused() && !response_started_ &&
                    head_.body == http::BodyKind::kNone &&
                    (head_.method == "GET" || head_.method == "HEAD") && stale_retries_ < 1;
  if (nothing_sent && !response_started_) {
    head_sent_ = false;
    try_connect();
    (void)connect_timed_out;
    return;
  }
  if (!stale_safe && !response_started_ && (kind == UpstreamError::kReset || kind == UpstreamError::kBadResponse) &&
      retry_safe() && has_untried() && client_->worker()->retry_allowed()) {
    // Nothing reached the client and repeating the request is safe: next server.
    client_->worker()->note_retry();
    head_sent_ = false;
    try_connect();
    return;
  }
  if (stale_safe) {
    stale_retries_++;
    head_sent_ = false;
    if (c) tried_[c->server()] = false;
    try_connect();
    return;
  }
  if (response_started_) {
    // The head is already out: the only honest signal left is cutting the connection.
    status_ = status_ ? status_ : 502;
    outcome_ = net::kError;
    active_ = false;
    client_->abort();
    return;
  }
  if (kind == UpstreamError::kTimeout)
    fail(504, "upstream_timeout", "the upstream did not answer within its timeout");
  else if (kind == UpstreamError::kBadResponse)
    fail(502, "upstream_bad_response", "the upstream sent an invalid HTTP response");
  else
    fail(502, "upstream_reset", "the upstream closed the connection before answering");
}

void ProxySession::fail(int status, const char* code, const char* message) {
  idempotency::Link& link = client_->worker()->idem_link();
  if (!idem_.key().empty() && link.client != nullptr) {
    // Answer only once the key is released: a retry sent at once must not be told
    // "in flight" by a claim that is about to go.
    if (conn_) {
      pool_->release(conn_, false);
      conn_ = nullptr;
    }
    loop::Guard<ProxySession> g = anchor_.guard();
    idem_.release_then(link, [g, status, code, message] {
      if (ProxySession* s = live(g)) s->fail(status, code, message);
    });
    return;
  }
  idem_release();
  if (cache_route_) {
    cache_release();
    // stale_if_error: a stale answer beats an error.
    if (conn_) {
      pool_->release(conn_, false);
      conn_ = nullptr;
    }
    if (serve_cache(true)) return;
  }
  active_ = false;
  outcome_ = net::kError;
  status_ = status;
  if (conn_) {
    pool_->release(conn_, false);
    conn_ = nullptr;
  }
  // The request body may still be arriving: keep-alive only if it is complete.
  client_->respond_error(status, code, message, body_done_ || head_.body == http::BodyKind::kNone);
}

ProxySession::~ProxySession() { uncount_prebuffered(); }

void ProxySession::uncount_prebuffered() {
  if (prebuffer_counted_ == 0) return;
  client_->worker()->instance().request_buffered.fetch_sub(static_cast<int64_t>(prebuffer_counted_),
                                                           std::memory_order_relaxed);
  prebuffer_counted_ = 0;
}

void ProxySession::release_buffers() {
  uncount_prebuffered();
  // An idle keep-alive connection keeps nothing of its last exchange's buffers.
  if (batch_framing_.capacity() > 0) std::string().swap(batch_framing_);
  if (batch_.capacity() > 16) std::vector<uv_buf_t>().swap(batch_);
  for (std::string* b : {&pending_, &body_buf_, &capture_body_})
    if (b->capacity() > kKeepCapacity) std::string().swap(*b);
}

void ProxySession::finish(bool keep_alive) {
  active_ = false;
  release_buffers();
  client_->request_done(keep_alive);
}

void ProxySession::abort() {
  if (!active_) return;
  idem_release();
  cache_release();
  active_ = false;
  if (conn_) {
    pool_->release(conn_, false);
    conn_ = nullptr;
  }
  release_buffers();
}

}  // namespace fg::proxy
