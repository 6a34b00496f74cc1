// Client connections, the edge of the connection before HTTP: the per-client
// connection cap, the PROXY protocol header an L4 balancer sends first, and the TLS
// session (ciphertext in and out, handshake metrics). The HTTP side is client_conn.cc.
#include "proxy/client_conn.h"

#include "core/log.h"
#include "http/proxy_protocol.h"
#include "http/serialize.h"
#include "net/stream_write.h"
#include "proxy/worker_state.h"

namespace fg::proxy {

bool ClientConn::count_client_connection() {
  if (uint64_t cap = worker_->config().server.max_connections_per_client; cap > 0) {
    // One address holding many connections (slow readers, idle floods) must not take
    // every slot: beyond its cap its new connections are closed before anything is read.
    client_slot_ = static_cast<uint32_t>(std::hash<std::string>{}(peer_ip_) % net::Instance::kClientSlots);
    auto& inst = worker_->instance();
    if (inst.client_connections[client_slot_].fetch_add(1, std::memory_order_relaxed) >= cap) {
      inst.refused_per_client.fetch_add(1, std::memory_order_relaxed);
      close();
      return false;
    }
  }
  return true;
}

bool ClientConn::take_proxy_header() {
  const std::string_view data(inbuf_.data() + inbuf_off_, inbuf_.size() - inbuf_off_);
  const http::ProxyHeader h = http::parse_proxy_header(data);
  if (h.state == http::ProxyHeader::State::kNeedMore) return false;
  if (h.state == http::ProxyHeader::State::kError) {
    reject_proxy_header(static_cast<int>(h.error), h.version == 0 ? "no PROXY protocol header before the request"
                                                                  : "malformed PROXY protocol header");
    return false;
  }
  inbuf_off_ += h.length;
  awaiting_proxy_header_ = false;
  if (!h.local) peer_ip_ = h.source.text();
  client_ip_ = peer_ip_;
  if (!count_client_connection()) return false;
  set_timer(Timer::kHeader, worker_->config().server.header_timeout_ms);
  return true;
}

void ClientConn::reject_proxy_header(int reason, std::string_view detail) {
  // No HTTP answer: whatever sent this does not speak the protocol the listener
  // expects, and an answer could be read as coming from the real server.
  const auto reason_name = http::proxy_header_error_name(static_cast<http::ProxyHeaderError>(reason));
  metrics::Registry::get().add(worker_->id(), worker_->snapshot()->proxy_protocol_rejected[static_cast<size_t>(reason)]);
  if (worker_->note_proxy_rejection()) {
    log::event("warn", "proxy_protocol_rejected", [&](log::Line& l) {
      l.str("peer", peer_ip_).str("reason", reason_name).str("detail", detail);
    });
  }
  close();
}

bool ClientConn::tls_input(const char* data, size_t len) {
  tls_->feed(data, len);
  if (inbuf_off_ >= inbuf_.size()) {
    inbuf_.clear();
    inbuf_off_ = 0;
  }
  // The ciphertext is in the session now, so the worker's read buffer is free to take
  // the plaintext.
  char* plain = worker_->read_buffer();
  while (size_t n = tls_->read_plain(plain, net::Worker::kReadBufferSize)) inbuf_.append(plain, n);
  tls_count_handshake();
  // Handshake replies, tickets, alerts and our close_notify all go out here.
  if (!tls_flush()) return false;
  switch (tls_->state()) {
    case tls::State::kHandshaking:
    case tls::State::kOpen:
      return true;
    case tls::State::kClosed:
      // close_notify from the client: what it sent before still counts, then as an EOF.
      if (inbuf_off_ < inbuf_.size()) process_input();
      if (state_ == State::kOpen) on_peer_eof();
      return false;
    case tls::State::kFailed:
      break;
  }
  uint64_t now = worker_->now_ms();
  if (now - worker_->tls_error_logged_ms >= 1000) {
    worker_->tls_error_logged_ms = now;
    log::event("warn", "tls_error", [&](log::Line& l) {
      l.str("client", client_ip_).str("kind", tls::error_name(tls_->error())).str("detail", tls_->error_detail());
    });
  }
  if (in_request_ && session_.active()) session_.abort();
  if (tls_->error() == tls::Error::kProtocolError && !tls_->handshake_done() && tls_->error_detail() == "http request") {
    // Plain HTTP to the TLS port: say so in plain HTTP, as the client can read nothing else.
    std::string rid;
    worker_->next_request_id(rid);
    tls_out_ = http::make_error_response(400, "tls_required", "this port speaks HTTPS; send the request over TLS",
                                         rid, false, false, {});
    uv_buf_t b = net::buf_of(tls_out_.data(), tls_out_.size());
    if (net::write_bufs(reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1, on_write) != 0) {
      close();
      return false;
    }
    tls_.reset();  // nothing more is encrypted on this connection
  }
  close_after_flush();
  return false;
}

void ClientConn::tls_count_handshake() {
  if (tls_counted_) return;
  const net::Snapshot& snap = *worker_->snapshot();
  auto& reg = metrics::Registry::get();
  if (tls_->handshake_done()) {
    tls_counted_ = true;
    reg.add(worker_->id(), snap.tls_handshakes[tls_->resumed() ? net::kTlsResumed : net::kTlsFull]);
  } else if (tls_->state() == tls::State::kFailed) {
    tls_counted_ = true;
    reg.add(worker_->id(), snap.tls_handshakes[net::kTlsFailed]);
  }
  if (tls_->state() == tls::State::kFailed && tls_->error() != tls::Error::kNone) {
    reg.add(worker_->id(), snap.tls_errors[static_cast<size_t>(tls_->error()) - 1]);
  }
}

bool ClientConn::tls_flush() {
  if (tls_->pending_ciphertext() == 0) return true;
  tls_out_.clear();
  tls_->take_ciphertext(tls_out_);
  uv_buf_t b = net::buf_of(tls_out_.data(), tls_out_.size());
  int r = net::write_bufs(reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1, on_write);
  if (r != 0) {
    if (in_request_ && session_.active()) session_.abort();
    close();
    return false;
  }
  count_queued();  // the ciphertext counts as queued response bytes, as plaintext does
  return true;
}

}  // namespace fg::proxy
