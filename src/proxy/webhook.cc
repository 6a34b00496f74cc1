// The failure webhook of a queued route (on_failure_webhook): its URL parsed once, a
// pool of its own per dispatcher, and each POST retried a few times with backoff.
#include <charconv>

#include "core/log.h"
#include "loop/handles.h"
#include "net/stream_write.h"
#include "proxy/dispatcher.h"
#include "proxy/upstream_pool.h"
#include "proxy/worker_state.h"

namespace fg::proxy {
namespace {

constexpr int kWebhookAttempts = 4;

}  // namespace

// ------------------------------------------------------------------ WebhookPost

// A POST of a failed ticket's JSON to the route's on_failure_webhook, retried a few
// times with backoff. Fire and forget: it deletes itself.
class WebhookPost final : public UpstreamUser {
 public:
  WebhookPost(std::shared_ptr<UpstreamPool> pool, std::string head, std::string body)
      : pool_(std::move(pool)), head_(std::move(head)), body_(std::move(body)) {
    timer_ = loop::new_timer(pool_->worker()->loop(), this);
  }
  ~WebhookPost() override { loop::close_timer(timer_); }

  void send() {
    tried_.assign(pool_->server_count(), false);
    UpstreamConn* c = nullptr;
    auto r = pool_->acquire(this, tried_, &c);
    if (r == UpstreamPool::Acquire::kBusy || r == UpstreamPool::Acquire::kNoServer) {
      again();
      return;
    }
    conn_ = c;
    if (r == UpstreamPool::Acquire::kReady) write();
  }

 private:
  void write() {
    uv_buf_t bufs[2] = {net::buf_of(head_.data(), head_.size()), net::buf_of(body_.data(), body_.size())};
    conn_->expect_response(false, 5000);
    conn_->write(bufs, 2);
  }
  void on_upstream_connected(UpstreamConn* c) override {
    if (c == conn_) write();
  }
  void on_upstream_head(http::ResponseHead& h) override { status_ = h.status; }
  void on_upstream_body(const char*, size_t) override {}
  void on_upstream_complete() override {
    UpstreamConn* c = conn_;
    conn_ = nullptr;
    pool_->release(c, false);
    if (status_ >= 200 && status_ < 300) {
      done();
      return;
    }
    again();
  }
  void on_upstream_error(UpstreamError, bool) override {
    conn_ = nullptr;
    again();
  }
  void on_upstream_drained() override {}

  void again() {
    if (++attempts_ >= kWebhookAttempts || pool_->worker()->draining()) {
      log::event("warn", "webhook_failed", [&](log::Line& l) {
        l.str("url", pool_->server_name(0)).num("status", status_).num("attempts", attempts_);
      });
      done();
      return;
    }
    uint64_t wait = 1000ULL << (attempts_ - 1);
    uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<WebhookPost*>(t->data)->send(); }, wait, 0);
  }

  // Called from the post's own callbacks: the reaper frees it once they returned.
  void done() { pool_->worker()->reaper().retire(this); }

  std::shared_ptr<UpstreamPool> pool_;
  std::string head_;
  std::string body_;
  uv_timer_t* timer_;
  UpstreamConn* conn_ = nullptr;
  std::vector<bool> tried_;
  int status_ = 0;
  int attempts_ = 0;
};

bool parse_webhook_url(const std::string& url, WebhookUrl* out) {
  constexpr std::string_view kScheme = "http://";
  if (url.compare(0, kScheme.size(), kScheme) != 0) return false;
  std::string rest = url.substr(kScheme.size());
  size_t slash = rest.find('/');
  out->hostport = slash == std::string::npos ? rest : rest.substr(0, slash);
  out->path = slash == std::string::npos ? "/" : rest.substr(slash);
  const std::string& hp = out->hostport;
  size_t colon = hp.rfind(':');
  // A colon inside "[v6]" is not a port separator.
  if (colon != std::string::npos && hp.find(']', colon) != std::string::npos) colon = std::string::npos;
  std::string host = colon == std::string::npos ? hp : hp.substr(0, colon);
  unsigned port = 80;
  if (colon != std::string::npos) {
    std::string_view digits = std::string_view(hp).substr(colon + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (ec != std::errc() || end != digits.data() + digits.size() || port < 1 || port > 65535) return false;
  }
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) return false;
  out->server.host = host;
  out->server.port = static_cast<uint16_t>(port);
  out->server.text = hp;
  return true;
}

void Dispatcher::post_webhook(const std::string& url, std::string body) {
  if (url != webhook_url_ || !webhook_pool_) {
    // Parsed once per URL (a reload may change it), not per post.
    WebhookUrl parsed;
    if (!parse_webhook_url(url, &parsed)) {
      log::event("warn", "webhook_unresolved", [&](log::Line& l) { l.str("url", url); });
      return;
    }
    webhook_path_ = parsed.path;
    UpstreamConfig uc;
    uc.name = "webhook";
    uc.servers.push_back(parsed.server);
    uc.keepalive = 0;
    uc.timeout_ms = 5000;
    if (webhook_pool_) worker_->keep_pool(std::move(webhook_pool_));
    webhook_pool_ = std::make_shared<UpstreamPool>(worker_, uc, std::make_shared<ServerCounters>(1));
    // A post made before the name resolves finds no server and tries again after its
    // backoff (one of its attempts), the resolver being far quicker than that.
    webhook_pool_->resolve([url](Status s) {
      if (!s) log::event("warn", "webhook_unresolved", [&](log::Line& l) { l.str("url", url); });
    });
    webhook_url_ = url;
    webhook_host_ = parsed.hostport;
  }
  std::string head = "POST " + webhook_path_ + " HTTP/1.1\r\nHost: " + webhook_host_ +
                     "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\nConnection: close\r\n\r\n";
  auto* post = new WebhookPost(webhook_pool_, std::move(head), std::move(body));
  post->send();
}

}  // namespace fg::proxy
