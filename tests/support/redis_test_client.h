// Client options for unit tests that talk to a RedisServer: a short connect timeout
// and backoff, so reconnects are quick, and a generous command timeout, since other
// builds may share the machine's cores.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "redis/redis_client.h"

namespace fg::test {

inline redis::Client::Options test_client_options(redis::Endpoint endpoint, std::string name,
                                                  uint64_t command_timeout_ms = 2000) {
  redis::Client::Options o;
  o.endpoint = std::move(endpoint);
  o.name = std::move(name);
  o.command_timeout_ms = command_timeout_ms;
  o.connect_timeout_ms = 500;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 100;
  return o;
}

}  // namespace fg::test
