// The admin listener (SPEC §9) on the main thread's loop: /metrics, /healthz, /status,
// POST /reload and the dead letters of queued routes (GET /dead-letters, POST
// /dead-letters/redeliver), with an optional bearer token. Never reachable from the public
// listeners: it has its own socket and its own tiny request loop.
#pragma once

#include <uv.h>

#include <string>
#include <unordered_set>

#include "floodgate/config.h"
#include "http/request_parser.h"
#include "net/dead_letter_admin.h"

namespace fg::net {

class Controller;
class AdminConn;

class AdminServer {
 public:
  AdminServer(uv_loop_t* loop, Controller* controller);
  Status open(const AdminConfig& config);
  // Follows a reload: a new address re-binds, a new token applies to the next request,
  // a new Redis URL re-opens the dead-letter endpoints' connection.
  void update(const AdminConfig& config);
  // Closes the listener and every admin connection (on stop).
  void close();

 private:
  void close_listener();
  friend class AdminConn;
  static void on_connection(uv_stream_t* server, int status);
  uv_loop_t* loop_;
  Controller* controller_;
  AdminConfig config_;
  uv_tcp_t* tcp_ = nullptr;
  std::unordered_set<AdminConn*> conns_;
  DeadLetterAdmin dead_letters_;
};

// Constant-time comparison of a presented credential with the configured token.
bool token_matches(std::string_view presented, std::string_view token);

}  // namespace fg::net
