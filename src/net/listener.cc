// SO_REUSEPORT listeners: each worker binds its own socket to the same address, so the
// kernel balances accepts across loops without a shared accept lock.
#include "net/listener.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "net/worker.h"

namespace fg::net {
namespace {

// How long accepting pauses after the descriptor table was full.
constexpr uint64_t kEmfilePauseMs = 100;

}  // namespace

Listener::Listener(Worker* worker, const HostPort& addr) : worker_(worker), addr_(addr) {}

Status Listener::open() {
  uv_timer_init(worker_->loop(), &retry_);
  retry_.data = this;
  timer_open_ = true;
  Status s = bind_and_listen();
  if (!s) {
    close();
    return s;
  }
  state_ = State::kListening;
  return s;
}

Status Listener::bind_and_listen() {
  sockaddr_storage ss{};
  int family = AF_INET;
  if (uv_ip4_addr(addr_.host.c_str(), addr_.port, reinterpret_cast<sockaddr_in*>(&ss)) != 0) {
    if (uv_ip6_addr(addr_.host.c_str(), addr_.port, reinterpret_cast<sockaddr_in6*>(&ss)) != 0) {
      return Status::error("listen " + addr_.text + ": not a literal IPv4/IPv6 address");
    }
    family = AF_INET6;
  }
  int r = uv_tcp_init_ex(worker_->loop(), &tcp_, static_cast<unsigned>(family));
  if (r != 0) return Status::error("listen " + addr_.text + ": " + uv_strerror(r));
  tcp_open_ = true;
  tcp_.data = this;
  uv_os_fd_t fd;
  uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  r = uv_tcp_bind(&tcp_, reinterpret_cast<sockaddr*>(&ss), 0);
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(&tcp_), 4096, on_connection);
  if (r != 0) return Status::error("listen " + addr_.text + ": " + uv_strerror(r));
  return Status::ok();
}

void Listener::close() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  if (tcp_open_) {
    tcp_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), nullptr);
  }
  if (timer_open_) {
    timer_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&retry_), nullptr);
  }
}

void Listener::pause() {
  // libuv's own remedy for EMFILE (a reserved descriptor) is per loop and can be lost
  // to another worker's thread; then it retries accept() without returning to the
  // loop. Closing the socket ends that loop; the other workers' listeners keep taking
  // connections, and this one comes back after a short pause.
  state_ = State::kPaused;
  tcp_open_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_tcp_closed);
}

void Listener::on_tcp_closed(uv_handle_t* h) {
  auto* self = static_cast<Listener*>(h->data);
  if (self->state_ == State::kPaused && self->timer_open_)
    uv_timer_start(&self->retry_, on_retry, kEmfilePauseMs, 0);
}

void Listener::on_retry(uv_timer_t* t) {
  auto* self = static_cast<Listener*>(t->data);
  if (self->state_ != State::kPaused) return;
  Status s = self->bind_and_listen();
  if (s) {
    self->state_ = State::kListening;
    return;
  }
  // Still no descriptor to spare (or the bind failed): try again later.
  if (self->tcp_open_) {
    self->tcp_open_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&self->tcp_), on_tcp_closed);
  } else {
    uv_timer_start(&self->retry_, on_retry, kEmfilePauseMs, 0);
  }
}

void Listener::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<Listener*>(server->data);
  if (self->state_ != State::kListening) return;
  if (status < 0) {
    self->worker_->accept_from(nullptr);
    if (status == UV_EMFILE || status == UV_ENFILE) self->pause();
    return;
  }
  self->worker_->accept_from(server);
}

}  // namespace fg::net
