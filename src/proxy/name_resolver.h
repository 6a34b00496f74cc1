// Looking up upstream host names on a worker loop without blocking it: the system
// resolver (getaddrinfo on libuv's thread pool) by default, or the name servers of an
// upstream's `resolver = ["IP:port", ...]` through c-ares, driven by the loop (its
// sockets polled with uv_poll, its timeouts processed by a timer while a query is
// out). Only c-ares reports a record's TTL.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <sys/socket.h>
#include <vector>

#include "floodgate/config.h"
#include "floodgate/status.h"
#include "loop/lifetime.h"

struct ares_channeldata;
struct ares_addrinfo;

namespace fg::proxy {

struct NameAnswer {
  bool ok = false;
  sockaddr_storage addr{};  // the first address, with the asked port
  uint64_t ttl_s = 0;       // the record's TTL (c-ares only; 0: unknown)
  std::string error;        // when !ok
};

class NameResolver {
 public:
  // `servers` empty: the system resolver. Otherwise c-ares asking only these servers
  // (over DNS: /etc/hosts is not read).
  NameResolver(uv_loop_t* loop, std::vector<HostPort> servers);
  // Pending lookups never answer after this.
  ~NameResolver();
  NameResolver(const NameResolver&) = delete;
  NameResolver& operator=(const NameResolver&) = delete;

  // Sets the c-ares channel up (nothing to do for the system resolver).
  Status init();
  // Looks `host` up; `done` runs once, on the loop, possibly before lookup() returns.
  void lookup(const std::string& host, uint16_t port, std::function<void(NameAnswer)> done);
  bool uses_cares() const { return !servers_.empty(); }

 private:
  struct SystemLookup;
  struct CaresLookup;
  struct Poll;
  static void on_getaddrinfo(uv_getaddrinfo_t* req, int status, addrinfo* res);
  static void on_cares(void* arg, int status, int timeouts, ares_addrinfo* res);
  static void on_sock_state(void* data, int fd, int readable, int writable);
  static void on_poll(uv_poll_t* handle, int status, int events);
  void close_poll(int fd);
  static void on_timer(uv_timer_t* t);

  uv_loop_t* loop_;
  std::vector<HostPort> servers_;
  ares_channeldata* channel_ = nullptr;
  std::map<int, Poll*> polls_;  // c-ares sockets by descriptor
  uv_timer_t* timer_ = nullptr;  // c-ares timeouts; freed in its close callback
  size_t pending_ = 0;           // c-ares queries out
  bool destroying_ = false;
  loop::Anchor<NameResolver> anchor_{this};  // system lookups reach the resolver through it
};

}  // namespace fg::proxy
