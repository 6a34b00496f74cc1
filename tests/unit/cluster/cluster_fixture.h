// A loop with one real redis-server and one redis::Client per simulated instance (all
// on the same loop: the cluster objects only meet through Redis). shutdown() closes the
// clients, drains the loop and reports whether uv_loop_close() succeeded.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "redis/redis_client.h"
#include "tests/support/redis_server.h"

namespace fg::test {

inline uint64_t mono_ms() { return uv_hrtime() / 1000000; }

struct ClusterFixture {
  RedisServer srv;
  uv_loop_t loop;
  uv_timer_t tick;
  std::vector<std::unique_ptr<redis::Client>> clients;
  std::vector<char> up;
  bool shut = false;

  ClusterFixture();
  ~ClusterFixture();

  // Adds `n` connected clients (fails the test when they do not connect within 3 s).
  void connect(int n, uint64_t command_timeout_ms = 1000);
  redis::Client* client(int i) { return clients[static_cast<size_t>(i)].get(); }

  // Runs the loop until pred() holds or timeout_ms pass (a 2 ms tick keeps
  // UV_RUN_ONCE from sleeping past either).
  bool run_until(const std::function<bool()>& pred, uint64_t timeout_ms);
  void run_for(uint64_t ms);
  // A command on client 0, run to completion; the reply (empty on failure).
  redis::Reply cmd(std::vector<std::string> argv);
  bool shutdown();
};

}  // namespace fg::test
