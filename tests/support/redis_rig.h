// One fresh redis-server, a loop and a connected client for a unit test that drives
// asynchronous Redis code: pump() turns the loop until a condition holds, wait_for()
// waits for a callback's value, raw() runs one command. finish() (or the destructor)
// closes the client and requires the loop to close empty.
#pragma once

#include <catch2/catch.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "redis/redis_client.h"
#include "tests/support/loop_fixture.h"
#include "tests/support/redis_server.h"
#include "tests/support/redis_test_client.h"

namespace fg::test {

class RedisRig {
 public:
  explicit RedisRig(const std::string& client_name) {
    INFO(server_.error());
    REQUIRE(server_.ok());
    auto ep = redis::parse_url(server_.url());
    REQUIRE(ep.is_ok());
    client_ = std::make_unique<redis::Client>(&fx_.loop, test_client_options(ep.value(), client_name));
    client_->start();
    REQUIRE(pump([this] { return client_->connected(); }));
  }
  ~RedisRig() {
    if (!finished_) finish();
  }
  RedisRig(const RedisRig&) = delete;
  RedisRig& operator=(const RedisRig&) = delete;

  // Closes the client and the loop; false when a handle was left open.
  bool finish() {
    finished_ = true;
    bool closed = false;
    client_->close([&closed] { closed = true; });
    bool ok = pump([&closed] { return closed; });
    if (ok) client_.reset();
    else (void)client_.release();  // ~Client would abort; the test reports the failure
    return fx_.close() && ok;
  }

  // Runs the loop until `done()` or 5 s passed.
  bool pump(const std::function<bool()>& done) { return fx_.run_until(done, 5000); }

  // Runs `start(cb)` and waits for cb's value.
  template <class T>
  T wait_for(const std::function<void(std::function<void(T)>)>& start) {
    std::optional<T> got;
    start([&got](T v) { got = std::move(v); });
    REQUIRE(pump([&got] { return got.has_value(); }));
    return std::move(*got);
  }

  // One command; its failure is checked after the loop returned (a REQUIRE must not
  // throw through libuv's frames).
  redis::Reply raw(std::vector<std::string> argv) {
    auto got = wait_for<std::pair<redis::Failure, redis::Reply>>([&](auto cb) {
      client_->command(std::move(argv), [cb](redis::Failure f, redis::Reply& r) { cb({f, r}); });
    });
    REQUIRE(got.first == redis::Failure::kNone);
    return got.second;
  }

  redis::Client& client() { return *client_; }
  RedisServer& server() { return server_; }

 private:
  RedisServer server_;
  LoopFixture fx_;
  std::unique_ptr<redis::Client> client_;
  bool finished_ = false;
};

}  // namespace fg::test
