// A listen or server address as written in the config, split into host and port.
#pragma once

#include <cstdint>
#include <string>

namespace fg {

struct HostPort {
  std::string host;  // literal IPv4 or IPv6 address (no brackets) or a host name
  uint16_t port = 0;
  std::string text;  // as written in the config, e.g. "[::1]:8080"
};

}  // namespace fg
