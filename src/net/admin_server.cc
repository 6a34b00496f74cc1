// Admin connections: parse with the same strict parser as the public side, answer from
// the controller, keep the connection when the client asks for it.
#include "net/admin_server.h"

#include "core/log.h"
#include "http/serialize.h"
#include "net/controller.h"
#include "loop/lifetime.h"
#include "net/stream_write.h"

namespace fg::net {

bool token_matches(std::string_view presented, std::string_view token) {
  // Every byte of the longer string is looked at whatever matches, so the time taken
  // says nothing about how much of the token was right.
  size_t n = presented.size() > token.size() ? presented.size() : token.size();
  unsigned char diff = presented.size() == token.size() ? 0 : 1;
  for (size_t i = 0; i < n; i++) {
    unsigned char a = i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0;
    unsigned char b = i < token.size() ? static_cast<unsigned char>(token[i]) : 0;
    diff |= static_cast<unsigned char>(a ^ b);
  }
  return diff == 0;
}

class AdminConn final : public http::RequestParser::Handler {
 public:
  explicit AdminConn(AdminServer* server)
      : server_(server), parser_(this, http::RequestParser::Limits{16 * 1024, 4 * 1024}) {}

  void accept(uv_stream_t* listener) {
    server_->conns_.insert(this);
    uv_tcp_init(server_->loop_, &tcp_);
    tcp_.data = this;
    if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0) {
      close();
      return;
    }
    uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc, on_read);
  }

 private:
  void on_request_head(http::RequestHead& head) override { head_ = std::move(head); }
  void on_request_body(const char*, size_t) override {}
  void on_request_complete() override { answer(); }

  void answer() {
    Controller* c = server_->controller_;
    const AdminConfig& cfg = server_->config_;
    std::string path(head_.path());
    bool keep = head_.keep_alive;
    if (path != "/healthz" && !cfg.token.empty()) {
      const http::Header* auth = http::find_header(head_.headers, "Authorization");
      std::string_view presented;
      if (auth && auth->value.size() > 7 && http::iequals(std::string_view(auth->value).substr(0, 7), "Bearer "))
        presented = std::string_view(auth->value).substr(7);
      if (!token_matches(presented, cfg.token)) {
        send(401, "application/json", R"({"error":"unauthorized","message":"a valid bearer token is required"})",
             keep, "WWW-Authenticate: Bearer realm=\"floodgate-admin\"\r\n");
        return;
      }
    }
    bool get = head_.method == "GET" || head_.method == "HEAD";
    std::string why;
    if (path == "/healthz" && get) {
      if (c->stopping()) send(503, "text/plain", "draining\n", keep);
      else send(200, "text/plain", "ok\n", keep);
    } else if (path == "/readyz" && get) {
      if (c->ready(&why)) send(200, "text/plain", "ready\n", keep);
      else send(503, "text/plain", why + "\n", keep);
    } else if (path == "/metrics" && get) {
      send(200, "text/plain; version=0.0.4; charset=utf-8", c->metrics_text(), keep);
    } else if (path == "/status" && get) {
      send(200, "application/json", c->status_json(), keep);
    } else if (path == "/reload" && head_.method == "POST") {
      Status s = c->reload("admin");
      if (s) {
        std::string body = "{\"result\":\"ok\",\"config_hash\":\"" + c->config().hash + "\"}";
        send(200, "application/json", body, keep);
      } else {
        std::string body = "{\"error\":\"reload_failed\",\"message\":\"";
        http::append_json_escaped(body, s.message());
        body += "\"}";
        send(400, "application/json", body, keep);
      }
    } else if (path == "/dead-letters" && get) {
      answer_later();
      server_->dead_letters_.list(c->config(), query(), reply_later());
    } else if (path == "/dead-letters/redeliver" && head_.method == "POST") {
      answer_later();
      server_->dead_letters_.redeliver(c->config(), query(), reply_later());
    } else if (path == "/healthz" || path == "/readyz" || path == "/metrics" || path == "/status" || path == "/reload" ||
               path == "/dead-letters" || path == "/dead-letters/redeliver") {
      send(405, "application/json", R"({"error":"method_not_allowed"})", keep);
    } else {
      send(404, "application/json", R"({"error":"not_found"})", keep);
    }
  }

  std::string_view query() const {
    size_t q = head_.target.find('?');
    return q == std::string::npos ? std::string_view() : std::string_view(head_.target).substr(q + 1);
  }

  // An answer that needs Redis comes later: nothing more is read from this connection,
  // and it closes once the answer is written (pipelined requests behind it are dropped).
  void answer_later() {
    close_after_write_ = true;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  }
  DeadLetterAdmin::Answer reply_later() {
    return [g = anchor_.guard()](int status, std::string body) {
      if (AdminConn* self = g.get(); self && !self->closing_) self->send(status, "application/json", body, false);
    };
  }

  void send(int status, std::string_view type, std::string_view body, bool keep, std::string_view extra = {}) {
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(http::reason_phrase(status)) +
                      "\r\nContent-Type: " + std::string(type) + "\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\nCache-Control: no-store\r\n" + std::string(extra) +
                      (keep ? "" : "Connection: close\r\n") + "\r\n";
    if (head_.method != "HEAD") out.append(body);
    uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
    if (write_bufs(reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1, on_write) != 0) {
      close();
      return;
    }
    if (!keep) {
      close_after_write_ = true;
      if (uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&tcp_)) == 0) close();
    }
    // Keep-alive: the parser is re-armed by on_read once execute() has returned.
  }

  static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
    static char scratch[16 * 1024];  // main thread only
    *buf = uv_buf_init(scratch, sizeof scratch);
  }

  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
    auto* self = static_cast<AdminConn*>(s->data);
    if (self->closing_ || nread == 0) return;
    if (nread < 0) {
      self->close();
      return;
    }
    const char* p = buf->base;
    size_t n = static_cast<size_t>(nread);
    while (n > 0 && !self->closing_ && !self->close_after_write_) {
      auto out = self->parser_.execute(p, n);
      if (out.state == http::RequestParser::State::kError) {
        const auto& err = self->parser_.error();
        std::string body = http::make_error_response(err.status, err.code, err.message, "", false);
        uv_buf_t b = uv_buf_init(body.data(), static_cast<unsigned>(body.size()));
        write_bufs(s, &b, 1, on_write);
        self->close_after_write_ = true;
        if (uv_stream_get_write_queue_size(s) == 0) self->close();
        return;
      }
      p += out.consumed;
      n -= out.consumed;
      if (out.state == http::RequestParser::State::kNeedMore) break;
      // kMessageDone: answered inside the parse; re-arm for a pipelined next request.
      self->parser_.reset_for_next();
    }
  }

  static void on_write(uv_write_t* req, int) {
    auto* w = static_cast<OwnedWrite*>(req->data);
    auto* self = static_cast<AdminConn*>(req->handle->data);
    delete w;
    if (self->close_after_write_ && !self->closing_ &&
        uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&self->tcp_)) == 0)
      self->close();
  }

public:
  void close() {
    if (closing_) return;
    closing_ = true;
    server_->conns_.erase(this);
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), [](uv_handle_t* h) { delete static_cast<AdminConn*>(h->data); });
  }

  AdminServer* server_;
  uv_tcp_t tcp_;
  http::RequestParser parser_;
  http::RequestHead head_;
  bool closing_ = false;
  bool close_after_write_ = false;
  loop::Anchor<AdminConn> anchor_{this};  // Redis answers reach this connection through it
};

AdminServer::AdminServer(uv_loop_t* loop, Controller* controller)
    : loop_(loop),
      controller_(controller),
      dead_letters_(loop, [controller](const std::string& route, int64_t n) { controller->count_redelivered(route, n); }) {}

Status AdminServer::open(const AdminConfig& config) {
  config_ = config;
  if (config.enabled) dead_letters_.configure(controller_->config());
  if (!config.enabled) return Status::ok();
  sockaddr_storage ss{};
  if (uv_ip4_addr(config.listen.host.c_str(), config.listen.port, reinterpret_cast<sockaddr_in*>(&ss)) != 0 &&
      uv_ip6_addr(config.listen.host.c_str(), config.listen.port, reinterpret_cast<sockaddr_in6*>(&ss)) != 0) {
    return Status::error("admin.listen " + config.listen.text + ": not a literal IP address");
  }
  tcp_ = new uv_tcp_t;
  uv_tcp_init(loop_, tcp_);
  tcp_->data = this;
  int r = uv_tcp_bind(tcp_, reinterpret_cast<sockaddr*>(&ss), 0);
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(tcp_), 128, on_connection);
  if (r != 0) {
    close_listener();
    return Status::error("admin.listen " + config.listen.text + ": " + uv_strerror(r));
  }
  return Status::ok();
}

void AdminServer::update(const AdminConfig& config) {
  if (config.enabled) dead_letters_.configure(controller_->config());
  else dead_letters_.close();
  bool rebind = config.enabled != config_.enabled || config.listen.text != config_.listen.text;
  if (!rebind) {
    config_ = config;
    return;
  }
  close_listener();
  Status s = open(config);
  if (!s) {
    log::event("error", "admin_listen_failed", [&](log::Line& l) { l.str("error", s.message()); });
  }
}

void AdminServer::close() {
  close_listener();
  dead_letters_.close();
  auto conns = conns_;
  for (auto* c : conns) c->close();
}

void AdminServer::close_listener() {
  if (tcp_ == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(tcp_), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  tcp_ = nullptr;
}

void AdminServer::on_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  auto* self = static_cast<AdminServer*>(server->data);
  auto* conn = new AdminConn(self);
  conn->accept(server);
}

}  // namespace fg::net
