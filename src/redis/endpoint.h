// Where the Redis server is: the [redis] url parsed into a value once, when the
// config is loaded. Pure value code (no hiredis, no libuv), so the config library
// can use it without linking the client.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "floodgate/status.h"

namespace fg::redis {

// A parsed connection URL: redis://[:password@]host[:port][/db] or unix:///path[?db=N].
struct Endpoint {
  bool unix_socket = false;
  std::string host = "127.0.0.1";
  uint16_t port = 6379;
  std::string path;      // unix socket path
  std::string password;  // empty: no AUTH
  int db = 0;
};

// Accepts redis://[[default]:password@]host[:port][/db] (host may be [v6]) and
// unix:///path[?db=N]; the error message quotes the URL and says what is wrong.
Result<Endpoint> parse_url(std::string_view url);

// The URL with its password replaced by "***", for messages and logs.
std::string redact_url(const std::string& url);

}  // namespace fg::redis
