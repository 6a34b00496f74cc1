// SO_REUSEPORT listeners: each worker binds its own socket to the same address, so the
// kernel balances accepts across loops without a shared accept lock.
#include "net/listener.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include "net/worker.h"

namespace fg::net {

Listener::Listener(Worker* worker, const HostPort& addr) : worker_(worker), addr_(addr) {}

Status Listener::open() {
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
  initialized_ = true;
  tcp_.data = this;
  uv_os_fd_t fd;
  uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  r = uv_tcp_bind(&tcp_, reinterpret_cast<sockaddr*>(&ss), 0);
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(&tcp_), 4096, on_connection);
  if (r != 0) {
    close();
    return Status::error("listen " + addr_.text + ": " + uv_strerror(r));
  }
  return Status::ok();
}

void Listener::close() {
  if (!initialized_ || closing_) return;
  closing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), nullptr);
}

void Listener::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<Listener*>(server->data);
  if (self->closing_) return;
  if (status < 0) {
    // EMFILE/ENFILE: libuv already accepted and dropped the connection with its reserved
    // descriptor, so the loop does not spin; just say so, rate-limited by the worker.
    self->worker_->accept_from(nullptr);
    return;
  }
  self->worker_->accept_from(server);
}

}  // namespace fg::net
