// Upstream name lookups on the loop (see name_resolver.h).
#include "proxy/name_resolver.h"

#include <ares.h>
#include <netdb.h>
#include <netinet/in.h>

#include <cstring>
#include <memory>
#include <mutex>

#include "loop/handles.h"

namespace fg::proxy {
namespace {

// c-ares per try; with two tries a dead name server costs two seconds, well inside
// resolve_every, and the last good address stays in use meanwhile.
constexpr int kCaresTimeoutMs = 1000;
constexpr int kCaresTries = 2;
// How often c-ares looks for timed-out queries while some are out.
constexpr uint64_t kCaresTimerMs = 50;

void set_port(sockaddr_storage& ss, uint16_t port) {
  if (ss.ss_family == AF_INET)
    reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(port);
  else
    reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(port);
}

// "127.0.0.1:53,[::1]:5353": the form ares_set_servers_ports_csv takes.
std::string servers_csv(const std::vector<HostPort>& servers) {
  std::string out;
  for (const HostPort& s : servers) {
    if (!out.empty()) out += ',';
    if (s.host.find(':') != std::string::npos) {
      out += '[';
      out += s.host;
      out += ']';
    } else {
      out += s.host;
    }
    out += ':';
    out += std::to_string(s.port);
  }
  return out;
}

}  // namespace

struct NameResolver::SystemLookup {
  uv_getaddrinfo_t req;
  loop::Guard<NameResolver> owner;
  uint16_t port;
  std::function<void(NameAnswer)> done;
};

struct NameResolver::CaresLookup {
  NameResolver* owner;
  uint16_t port;
  std::function<void(NameAnswer)> done;
};

struct NameResolver::Poll {
  uv_poll_t handle;
  NameResolver* owner;
  int fd;
};

NameResolver::NameResolver(uv_loop_t* loop, std::vector<HostPort> servers)
    : loop_(loop), servers_(std::move(servers)) {}

NameResolver::~NameResolver() {
  destroying_ = true;
  anchor_.revoke();
  // ares_destroy answers every pending query with ARES_EDESTRUCTION (dropped, see
  // on_cares) and reports each socket closed (on_sock_state closes its poll).
  if (channel_ != nullptr) ares_destroy(channel_);
  while (!polls_.empty()) close_poll(polls_.begin()->first);
  if (timer_ != nullptr) loop::close_timer(timer_);
}

Status NameResolver::init() {
  if (servers_.empty() || channel_ != nullptr) return Status::ok();
  static std::once_flag once;
  std::call_once(once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
  ares_options opts{};
  opts.sock_state_cb = on_sock_state;
  opts.sock_state_cb_data = this;
  opts.timeout = kCaresTimeoutMs;
  opts.tries = kCaresTries;
  char lookups[] = "b";  // DNS only: the configured servers are the source
  opts.lookups = lookups;
  const int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_LOOKUPS;
  int rc = ares_init_options(&channel_, &opts, mask);
  if (rc != ARES_SUCCESS) {
    channel_ = nullptr;
    return Status::error(std::string("cannot start the c-ares resolver: ") + ares_strerror(rc));
  }
  timer_ = loop::new_timer(loop_, this);
  rc = ares_set_servers_ports_csv(channel_, servers_csv(servers_).c_str());
  if (rc != ARES_SUCCESS) return Status::error(std::string("c-ares refused the resolver list: ") + ares_strerror(rc));
  return Status::ok();
}

void NameResolver::lookup(const std::string& host, uint16_t port, std::function<void(NameAnswer)> done) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  if (channel_ != nullptr) {
    auto* q = new CaresLookup{this, port, std::move(done)};
    if (pending_++ == 0) uv_timer_start(timer_, on_timer, kCaresTimerMs, kCaresTimerMs);
    ares_addrinfo_hints ah{};
    ah.ai_family = AF_UNSPEC;
    ah.ai_socktype = SOCK_STREAM;
    ares_getaddrinfo(channel_, host.c_str(), nullptr, &ah, on_cares, q);
    return;
  }
  auto* r = new SystemLookup{{}, anchor_.guard(), port, std::move(done)};
  r->req.data = r;
  int rc = uv_getaddrinfo(loop_, &r->req, on_getaddrinfo, host.c_str(), nullptr, &hints);
  if (rc != 0) {
    std::unique_ptr<SystemLookup> owned(r);
    NameAnswer a;
    a.error = uv_strerror(rc);
    owned->done(std::move(a));
  }
}

void NameResolver::on_getaddrinfo(uv_getaddrinfo_t* req, int status, addrinfo* res) {
  std::unique_ptr<SystemLookup> r(static_cast<SystemLookup*>(req->data));
  NameAnswer a;
  if (status != 0 || res == nullptr) {
    a.error = uv_strerror(status != 0 ? status : UV_EAI_NONAME);
  } else {
    std::memcpy(&a.addr, res->ai_addr, res->ai_addrlen);
    set_port(a.addr, r->port);
    a.ok = true;
  }
  uv_freeaddrinfo(res);
  if (r->owner.get() != nullptr) r->done(std::move(a));
}

void NameResolver::on_cares(void* arg, int status, int, ares_addrinfo* res) {
  std::unique_ptr<CaresLookup> q(static_cast<CaresLookup*>(arg));
  if (status == ARES_EDESTRUCTION || q->owner->destroying_) {
    if (res) ares_freeaddrinfo(res);
    return;
  }
  if (--q->owner->pending_ == 0) uv_timer_stop(q->owner->timer_);
  NameAnswer a;
  const ares_addrinfo_node* node = res ? res->nodes : nullptr;
  if (status != ARES_SUCCESS || node == nullptr) {
    a.error = status != ARES_SUCCESS ? ares_strerror(status) : "no address in the answer";
  } else {
    std::memcpy(&a.addr, node->ai_addr, static_cast<size_t>(node->ai_addrlen));
    set_port(a.addr, q->port);
    a.ttl_s = node->ai_ttl > 0 ? static_cast<uint64_t>(node->ai_ttl) : 0;
    a.ok = true;
  }
  if (res) ares_freeaddrinfo(res);
  q->done(std::move(a));
}

void NameResolver::on_sock_state(void* data, int fd, int readable, int writable) {
  auto* self = static_cast<NameResolver*>(data);
  if (!readable && !writable) {
    self->close_poll(fd);
    return;
  }
  Poll*& p = self->polls_[fd];
  if (p == nullptr) {
    p = new Poll{{}, self, fd};
    if (uv_poll_init_socket(self->loop_, &p->handle, fd) != 0) {
      delete p;
      self->polls_.erase(fd);
      return;
    }
    p->handle.data = p;
  }
  const int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
  uv_poll_start(&p->handle, events, on_poll);
}

void NameResolver::on_poll(uv_poll_t* handle, int status, int events) {
  auto* p = static_cast<Poll*>(handle->data);
  NameResolver* self = p->owner;
  const int fd = p->fd;
  // An error on the socket: let c-ares read and write it, and find out.
  const bool rd = status < 0 || (events & UV_READABLE);
  const bool wr = status < 0 || (events & UV_WRITABLE);
  ares_process_fd(self->channel_, rd ? fd : ARES_SOCKET_BAD, wr ? fd : ARES_SOCKET_BAD);
}

void NameResolver::close_poll(int fd) {
  auto it = polls_.find(fd);
  if (it == polls_.end()) return;
  Poll* p = it->second;
  polls_.erase(it);
  uv_close(reinterpret_cast<uv_handle_t*>(&p->handle),
           [](uv_handle_t* h) { delete static_cast<Poll*>(h->data); });
}

void NameResolver::on_timer(uv_timer_t* t) {
  auto* self = static_cast<NameResolver*>(t->data);
  ares_process_fd(self->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

}  // namespace fg::proxy
