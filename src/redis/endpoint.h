// Where the Redis server is: the [redis] url parsed into a value once, when the
// config is loaded. Pure value code (no hiredis, no libuv), so the config library
// can use it without linking the client.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "floodgate/status.h"

namespace fg::redis {

// Where the Sentinels of a monitored master are (redis.sentinels, redis.master_name,
// redis.sentinel_password). Empty `addresses`: no Sentinel, the URL's host is the server.
struct SentinelSet {
  struct Address {
    std::string host;  // literal address or name, no brackets
    uint16_t port = 0;
    bool operator==(const Address&) const = default;
  };
  std::vector<Address> addresses;
  std::string master_name;
  std::string password;  // AUTH sent to each Sentinel; empty: none
  bool operator==(const SentinelSet&) const = default;
};

// A parsed connection URL: redis://[:password@]host[:port][/db] or unix:///path[?db=N].
// With Sentinel the host and port are found at run time; the URL gives the password
// and the database.
struct Endpoint {
  bool unix_socket = false;
  std::string host = "127.0.0.1";
  uint16_t port = 6379;
  std::string path;      // unix socket path
  std::string password;  // empty: no AUTH
  int db = 0;
  SentinelSet sentinel;  // set by the config loader from redis.sentinels
  bool via_sentinel() const { return !sentinel.addresses.empty(); }
};

// Accepts redis://[[default]:password@]host[:port][/db] (host may be [v6]) and
// unix:///path[?db=N]; the error message quotes the URL and says what is wrong.
Result<Endpoint> parse_url(std::string_view url);

// The URL with its password replaced by "***", for messages and logs.
std::string redact_url(const std::string& url);

}  // namespace fg::redis
