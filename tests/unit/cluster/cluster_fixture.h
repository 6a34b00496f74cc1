// The shared loop fixture with one real redis-server and one redis::Client per
// simulated instance (all on the same loop: the cluster objects only meet through
// Redis). shutdown() closes the clients, then the loop, and reports whether
// uv_loop_close() succeeded.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "redis/redis_client.h"
#include "tests/support/loop_fixture.h"
#include "tests/support/redis_server.h"

namespace fg::test {

struct ClusterFixture : LoopFixture {
  RedisServer srv;
  std::vector<std::unique_ptr<redis::Client>> clients;
  std::vector<char> up;
  bool shut = false;

  ClusterFixture();
  ~ClusterFixture();

  // Adds `n` connected clients (fails the test when they do not connect within 3 s).
  void connect(int n, uint64_t command_timeout_ms = 1000);
  redis::Client* client(int i) { return clients[static_cast<size_t>(i)].get(); }

  // A command on client 0, run to completion; the reply (empty on failure).
  redis::Reply cmd(std::vector<std::string> argv);
  bool shutdown();
};

}  // namespace fg::test
