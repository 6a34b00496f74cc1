// A listening socket bound with SO_REUSEPORT on one worker's loop: the kernel spreads
// new connections across the workers' listeners. When the process runs out of file
// descriptors the listener closes itself and re-opens a moment later, so a full
// descriptor table never turns the accept path into a busy loop.
#pragma once

#include <uv.h>

#include <string>

#include "floodgate/config.h"
#include "floodgate/status.h"

namespace fg::net {

class Worker;

class Listener {
 public:
  Listener(Worker* worker, const HostPort& addr);
  // Binds and listens. On failure the handles are already closing.
  Status open();
  // Stops accepting; idempotent. Handles finish closing before the loop ends; the
  // object must outlive the loop run.
  void close();
  const std::string& address() const { return addr_.text; }
  // The listener a connection arrived on (the `server` of Service::on_accept).
  static const Listener& of(const uv_stream_t* server) { return *static_cast<const Listener*>(server->data); }

 private:
  enum class State { kIdle, kListening, kPaused, kClosed };
  Status bind_and_listen();
  void pause();
  static void on_connection(uv_stream_t* server, int status);
  static void on_tcp_closed(uv_handle_t* h);
  static void on_retry(uv_timer_t* t);

  Worker* worker_;
  HostPort addr_;
  uv_tcp_t tcp_;
  uv_timer_t retry_;
  State state_ = State::kIdle;
  bool tcp_open_ = false;
  bool timer_open_ = false;
};

}  // namespace fg::net
