// A listening socket bound with SO_REUSEPORT on one worker's loop: the kernel spreads
// new connections across the workers' listeners.
#pragma once

#include <uv.h>

#include "floodgate/config.h"
#include "floodgate/status.h"

namespace fg::net {

class Worker;

class Listener {
 public:
  Listener(Worker* worker, const HostPort& addr);
  // Binds and listens. On failure the handle is already closing.
  Status open();
  // Stops accepting; idempotent. Memory is released in the close callback, which
  // runs before the loop ends; the object must outlive the loop run.
  void close();
  const std::string& address() const { return addr_.text; }

 private:
  static void on_connection(uv_stream_t* server, int status);
  Worker* worker_;
  HostPort addr_;
  uv_tcp_t tcp_;
  bool initialized_ = false;
  bool closing_ = false;
};

}  // namespace fg::net
