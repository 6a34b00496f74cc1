// One client connection: reads and strictly parses requests (one at a time, so pipelined
// responses stay in order), applies the [server] limits and timeouts, and hands each
// routed request to its ProxySession. Owned by its worker; freed only in the last close
// callback, never from inside a read or parser callback.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "http/request_parser.h"
#include "proxy/proxy_session.h"
#include "tls/session.h"

namespace fg::proxy {

class WorkerState;

class ClientConn final : public http::RequestParser::Handler {
 public:
  explicit ClientConn(WorkerState* worker);

  // Accepts from `server`; on failure the connection closes itself.
  void accept(uv_stream_t* server);

  // Graceful drain: close now when between requests, else after the current response.
  void drain();
  // Closes at once (drain timeout, shutdown).
  void close();

  size_t list_index = 0;  // position in the worker's connection list

  // ---- used by ProxySession (same loop) ----
  WorkerState* worker() const { return worker_; }
  // The client's address for this request: the connection's peer (or the PROXY
  // header's source), or the address a trusted proxy named (http/real_ip.h).
  const std::string& client_ip() const { return client_ip_; }
  // The X-Forwarded-For value to send upstream, or "" for "incoming chain + client".
  const std::string& forwarded_for() const { return forwarded_for_; }
  // X-Forwarded-Proto: how the client reached us.
  std::string_view scheme() const { return tls_ ? "https" : "http"; }
  // Writes response bytes; false when the connection is closing or broken.
  bool write(uv_buf_t* bufs, unsigned n);
  size_t write_queue_size() const;
  // The session finished the exchange. `keep_alive` false closes after the flush.
  void request_done(bool keep_alive);
  // The upstream paused/resumed feeding this client (backpressure on request bodies).
  void pause_body();
  void resume_body();
  // The response failed after its head was sent: the client only learns by a close.
  void abort();
  // Answers with a gateway-made JSON error and ends the exchange.
  void respond_error(int status, std::string_view code, std::string_view message, bool keep_alive,
                     std::string_view extra = {});
  // The [degrade] answer; ends the exchange.
  void respond_degrade();
  // Writes a complete response made elsewhere (a replay) and ends the exchange.
  void respond_raw(const std::string& bytes, bool keep_alive);
  bool closing() const { return state_ != State::kOpen; }

 private:
  enum class State { kOpen, kLingering, kClosing };
  enum class Timer { kNone, kProxyHeader, kHeader, kIdle, kBody, kSend, kLinger };

  // RequestParser::Handler
  void on_request_head(http::RequestHead& head) override;
  void on_request_body(const char* data, size_t len) override;
  void on_request_complete() override;

  void process_input();
  // TLS (a listener with `tls`): ciphertext in, plaintext appended to inbuf_; false when
  // the session ended or failed and the connection is closing.
  bool tls_input(const char* data, size_t len);
  // Moves the session's pending ciphertext to the socket.
  bool tls_flush();
  void tls_count_handshake();
  void on_peer_eof();
  // Reads the PROXY header at the start of inbuf_; false while it is incomplete or
  // when the connection was refused.
  bool take_proxy_header();
  void reject_proxy_header(int reason, std::string_view detail);
  // Counts the connection against server.max_connections_per_client; false (and the
  // connection is closing) when the client is over its cap.
  bool count_client_connection();
  void set_timer(Timer which, uint64_t ms);
  void start_read();
  void stop_read();
  void close_after_flush();
  void linger();
  void begin_next_request();
  void write_access_log();
  // Brings this connection's share of the queued response bytes up to date.
  void count_queued();
  // Appends "Retry-After: <whole seconds, at least 1>\r\n".
  static void append_retry_after(std::string& out, uint64_t retry_after_ns);

  static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_timer(uv_timer_t* t);
  static void on_shutdown(uv_shutdown_t* req, int status);
  static void on_close(uv_handle_t* h);

  WorkerState* worker_;
  uv_tcp_t tcp_;
  uv_timer_t timer_;
  uv_shutdown_t shutdown_req_;
  http::RequestParser parser_;
  ProxySession session_;
  State state_ = State::kOpen;
  Timer timer_kind_ = Timer::kNone;
  uint64_t deadline_ms_ = 0;   // loop time at which timer_kind_ fires
  uint64_t armed_for_ms_ = 0;  // loop time the libuv timer is armed for (<= deadline_ms_)
  std::unique_ptr<tls::Session> tls_;  // null: plain HTTP
  std::string tls_out_;      // ciphertext on its way to uv_try_write (reused)
  std::string tls_plain_;    // the pieces of one small write, joined (reused)
  bool tls_counted_ = false; // the handshake's outcome went to the metrics
  std::string peer_ip_;        // TCP peer, or the PROXY header's source address
  std::string client_ip_;      // per request (see client_ip())
  std::string forwarded_for_;  // per request (see forwarded_for())
  std::string inbuf_;        // received bytes not yet parsed (pipelining, pauses)
  size_t inbuf_off_ = 0;
  uint64_t body_bytes_ = 0;      // body bytes of the current request so far
  size_t queued_ = 0;            // write queue bytes counted in the worker's total
  int pending_closes_ = 0;
  bool reading_ = false;
  bool in_request_ = false;      // a request head was accepted and its exchange is not done
  bool request_body_done_ = false;
  bool parse_paused_ = false;    // waiting for the current exchange before parsing more
  bool body_paused_ = false;     // the session asked to stop reading the body
  bool processing_ = false;      // re-entrancy guard for process_input()
  bool close_after_flush_ = false;
  bool draining_ = false;
  bool peer_eof_ = false;        // the client half-closed its side
  bool counted_ = false;
  bool awaiting_proxy_header_ = false;  // server.proxy_protocol: no HTTP before the header
  // Slot of this client's address in Instance::client_connections, when counted there.
  static constexpr uint32_t kNoSlot = UINT32_MAX;
  uint32_t client_slot_ = kNoSlot;
};

}  // namespace fg::proxy
