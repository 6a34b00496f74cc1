// Health probes: a tiny HTTP/1.1 client that only needs the status line.
#include "proxy/health_checker.h"

#include <netdb.h>

#include <cstring>
#include <memory>

#include "core/log.h"
#include "loop/lifetime.h"
#include "net/stream_write.h"
#include "proxy/worker_state.h"
#include "proxy/upstream_pool.h"

namespace fg::proxy {

class HealthChecker::Probe {
 public:
  // `tls` (null: plain HTTP) and `tls_name` (the name sent and checked) follow the upstream's.
  Probe(WorkerState* w, std::string upstream, const HealthConfig& cfg, HostPort server, size_t index,
        std::shared_ptr<ServerCounters> counters, std::shared_ptr<const tls::ClientContext> tls, std::string tls_name)
      : w_(w), upstream_(std::move(upstream)), cfg_(cfg), server_(std::move(server)), index_(index),
        counters_(std::move(counters)), tls_ctx_(std::move(tls)), tls_name_(std::move(tls_name)) {
    uv_timer_init(w_->loop(), &interval_);
    uv_timer_init(w_->loop(), &deadline_);
    interval_.data = this;
    deadline_.data = this;
    pending_closes_ = 2;
    // First probe soon, so a dead server is marked before much client traffic finds it.
    uv_timer_start(&interval_, on_interval, 10, cfg_.interval_ms);
  }

  const std::string& upstream() const { return upstream_; }
  const HostPort& server() const { return server_; }
  const ServerCounters* counters() const { return counters_.get(); }

  void stop() {
    if (stopped_) return;
    stopped_ = true;
    end_attempt();
    uv_close(reinterpret_cast<uv_handle_t*>(&interval_), on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&deadline_), on_closed);
  }

 private:
  static void on_closed(uv_handle_t* h) {
    auto* self = static_cast<Probe*>(h->data);
    if (--self->pending_closes_ == 0) delete self;
  }

  static void on_interval(uv_timer_t* t) {
    auto* self = static_cast<Probe*>(t->data);
    if (self->tcp_ == nullptr) self->begin();
  }

  void begin() {
    sockaddr_storage ss{};
    if (uv_ip4_addr(server_.host.c_str(), server_.port, reinterpret_cast<sockaddr_in*>(&ss)) == 0 ||
        uv_ip6_addr(server_.host.c_str(), server_.port, reinterpret_cast<sockaddr_in6*>(&ss)) == 0) {
      connect_to(ss);
      return;
    }
    // Host names: the address this worker's pool uses now, which its resolver (the
    // system's, or the upstream's `resolver`) keeps current; so a probe checks the
    // address requests go to.
    if (UpstreamPool* pool = w_->pool_named(upstream_); pool && pool->server_sockaddr(index_, &ss)) {
      connect_to(ss);
      return;
    }
    // Not resolved there (yet): looked up for this probe, on libuv's thread pool so
    // that a slow resolver never stalls the loop.
    if (resolving_) return;
    auto* r = new Lookup{{}, anchor_.guard()};
    r->req.data = r;
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    if (uv_getaddrinfo(w_->loop(), &r->req, on_resolved, server_.host.c_str(), nullptr, &hints) != 0) {
      delete r;
      verdict(false);
      return;
    }
    resolving_ = true;
  }

  // One name on its way through the resolver; the probe may be gone when it answers.
  struct Lookup {
    uv_getaddrinfo_t req;
    loop::Guard<Probe> probe;
  };

  static void on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
    std::unique_ptr<Lookup> r(static_cast<Lookup*>(req->data));
    Probe* self = r->probe.get();
    sockaddr_storage ss{};
    bool ok = status == 0 && res != nullptr;
    if (ok) {
      std::memcpy(&ss, res->ai_addr, res->ai_addrlen);
      if (ss.ss_family == AF_INET) {
        reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(self ? self->server_.port : 0);
      } else {
        reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(self ? self->server_.port : 0);
      }
    }
    uv_freeaddrinfo(res);
    if (self == nullptr || self->stopped_) return;
    self->resolving_ = false;
    if (!ok) {
      self->verdict(false);
      return;
    }
    self->connect_to(ss);
  }

  void connect_to(const sockaddr_storage& ss) {
    tcp_ = new uv_tcp_t;
    uv_tcp_init(w_->loop(), tcp_);
    tcp_->data = this;
    connect_.data = this;
    reply_.clear();
    if (uv_tcp_connect(&connect_, tcp_, reinterpret_cast<const sockaddr*>(&ss), on_connect) != 0) {
      end_attempt();
      verdict(false);
      return;
    }
    uv_timer_start(&deadline_, on_deadline, cfg_.timeout_ms, 0);
  }

  static void on_connect(uv_connect_t* req, int status) {
    auto* self = static_cast<Probe*>(req->data);
    if (self->tcp_ == nullptr || req->handle != reinterpret_cast<uv_stream_t*>(self->tcp_)) return;
    if (status < 0) {
      self->end_attempt();
      self->verdict(false);
      return;
    }
    self->request_ = "GET " + self->cfg_.path + " HTTP/1.1\r\nHost: " + self->server_.text +
                     "\r\nUser-Agent: floodgate-health\r\nConnection: close\r\n\r\n";
    if (self->tls_ctx_) {
      // Over TLS the request waits in the session until the handshake is done.
      self->tls_ = tls::Session::client(self->tls_ctx_, self->tls_name_.empty() ? self->server_.host : self->tls_name_);
      if (!self->tls_ || !self->tls_->write_plain(self->request_) || !self->tls_send()) {
        self->end_attempt();
        self->verdict(false);
        return;
      }
    } else {
      uv_buf_t b = uv_buf_init(self->request_.data(), static_cast<unsigned>(self->request_.size()));
      self->write_.data = self;
      uv_write(&self->write_, reinterpret_cast<uv_stream_t*>(self->tcp_), &b, 1, [](uv_write_t*, int) {});
    }
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(self->tcp_),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* p = static_cast<Probe*>(h->data);
          *buf = uv_buf_init(p->buf_, sizeof p->buf_);
        },
        on_read);
  }

  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
    auto* self = static_cast<Probe*>(s->data);
    if (self == nullptr || self->tcp_ != reinterpret_cast<uv_tcp_t*>(s) || nread == 0) return;
    if (nread > 0 && self->tls_) {
      self->tls_->feed(buf->base, static_cast<size_t>(nread));
      char plain[512];
      while (size_t n = self->tls_->read_plain(plain, sizeof plain)) self->reply_.append(plain, n);
      if (self->tls_->state() == tls::State::kFailed || !self->tls_send()) {
        self->end_attempt();
        self->verdict(false);
        return;
      }
    } else if (nread > 0) {
      self->reply_.append(buf->base, static_cast<size_t>(nread));
    }
    // "HTTP/1.x NNN": the status is all a health check needs.
    if (self->reply_.size() >= 12 || nread < 0) {
      bool ok = self->reply_.size() >= 12 && self->reply_.compare(0, 5, "HTTP/") == 0 &&
                (self->reply_[9] == '2' || self->reply_[9] == '3');
      self->end_attempt();
      self->verdict(ok);
    }
  }

  static void on_deadline(uv_timer_t* t) {
    auto* self = static_cast<Probe*>(t->data);
    if (self->tcp_ == nullptr) return;
    self->end_attempt();
    self->verdict(false);
  }

  // The session's pending ciphertext to the socket.
  bool tls_send() {
    if (tls_->pending_ciphertext() == 0) return true;
    std::string out;
    tls_->take_ciphertext(out);
    uv_buf_t b = net::buf_of(out.data(), out.size());
    return net::write_bufs(reinterpret_cast<uv_stream_t*>(tcp_), &b, 1,
                           [](uv_write_t* r, int) { delete static_cast<net::OwnedWrite*>(r->data); }) == 0;
  }

  void end_attempt() {
    tls_.reset();
    uv_timer_stop(&deadline_);
    if (tcp_ == nullptr) return;
    tcp_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(tcp_), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    tcp_ = nullptr;
  }

  void verdict(bool ok) {
    if (stopped_) return;
    auto& down = const_cast<ServerCounters*>(counters_.get())->down[index_];
    bool is_down = down.load(std::memory_order_relaxed);
    if (ok) {
      fails_ = 0;
      if (is_down && ++rises_ >= cfg_.rise) {
        down.store(false, std::memory_order_relaxed);
        rises_ = 0;
        log::event("info", "server_up", [&](log::Line& l) { l.str("upstream", upstream_).str("server", server_.text); });
      }
    } else {
      rises_ = 0;
      if (!is_down && ++fails_ >= cfg_.fall) {
        down.store(true, std::memory_order_relaxed);
        fails_ = 0;
        log::event("warn", "server_down", [&](log::Line& l) {
          l.str("upstream", upstream_).str("server", server_.text).str("reason", "health check failed");
        });
      }
    }
  }

  WorkerState* w_;
  std::string upstream_;
  HealthConfig cfg_;
  HostPort server_;
  size_t index_;
  std::shared_ptr<ServerCounters> counters_;
  std::shared_ptr<const tls::ClientContext> tls_ctx_;
  std::string tls_name_;
  std::unique_ptr<tls::Session> tls_;
  uv_timer_t interval_;
  uv_timer_t deadline_;
  uv_tcp_t* tcp_ = nullptr;
  uv_connect_t connect_;
  uv_write_t write_;
  std::string request_;
  std::string reply_;
  char buf_[512];
  uint64_t fails_ = 0;
  uint64_t rises_ = 0;
  int pending_closes_ = 0;
  bool stopped_ = false;
  bool resolving_ = false;
  loop::Anchor<Probe> anchor_{this};  // resolver answers reach the probe through it
};

HealthChecker::HealthChecker(WorkerState* worker) : worker_(worker) {}

HealthChecker::~HealthChecker() = default;

void HealthChecker::sync() {
  // Probes follow the snapshot: a reload replaces them all (cheap: a few handles).
  stop();
  const auto& snap = worker_->snapshot();
  const Config& cfg = *snap->config;
  for (size_t u = 0; u < cfg.upstreams.size(); u++) {
    const UpstreamConfig& uc = cfg.upstreams[u];
    if (!uc.health.enabled) {
      // Checks switched off: no verdict of theirs may linger.
      for (auto& d : snap->upstreams[u].counters->down) d.store(false, std::memory_order_relaxed);
      continue;
    }
    std::vector<HostPort> all = uc.servers;
    all.insert(all.end(), uc.backup.begin(), uc.backup.end());
    for (size_t i = 0; i < all.size(); i++)
      probes_.push_back(new Probe(worker_, uc.name, uc.health, all[i], i, snap->upstreams[u].counters,
                                  snap->upstream_tls(u), uc.tls.server_name));
  }
}

void HealthChecker::stop() {
  for (auto* p : probes_) p->stop();  // each frees itself in its close callbacks
  probes_.clear();
}

}  // namespace fg::proxy
