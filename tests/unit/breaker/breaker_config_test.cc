// [upstreams.X.breaker].
#include <catch2/catch.hpp>

#include <string>

#include "tests/unit/config/config_test_support.h"
#include "floodgate/config.h"

using namespace fg::config_test;
using Catch::Contains;
using Catch::StartsWith;

TEST_CASE("[upstreams.X.breaker]", "[config][resilience]") {
  const std::string head = kMinimal + "[upstreams.shop.breaker]\n";  // keys from line 12
  SECTION("values") {
    auto cfg = load_ok(head + "enabled = false\nwindow = \"30s\"\nmin_requests = 50\nerror_rate = 0.25\n"
                              "timeout_rate = 1\nopen_for = \"100ms\"\nhalf_open_probes = 1000\n");
    const auto& b = cfg->upstreams[0].breaker;
    CHECK_FALSE(b.enabled);
    CHECK(b.window_ms == 30000);
    CHECK(b.min_requests == 50);
    CHECK(b.error_rate == 0.25);
    CHECK(b.timeout_rate == 1.0);
    CHECK(b.open_for_ms == 100);
    CHECK(b.half_open_probes == 1000);
    auto edges = load_ok(head + "window = \"10m\"\nmin_requests = 1000000\nopen_for = \"1h\"\nhalf_open_probes = 1\n");
    CHECK(edges->upstreams[0].breaker.window_ms == 600000);
    CHECK(edges->upstreams[0].breaker.min_requests == 1000000);
    CHECK(edges->upstreams[0].breaker.open_for_ms == 3600000);
    CHECK(edges->upstreams[0].breaker.half_open_probes == 1);
    CHECK(load_ok(head + "window = \"1s\"\n")->upstreams[0].breaker.window_ms == 1000);
    CHECK(load_ok(head + "window = \"2000ms\"\n")->upstreams[0].breaker.window_ms == 2000);
  }
  SECTION("inline, and defaults for what is left out") {
    auto cfg = load_ok(with_upstream("breaker = { window = \"5s\", error_rate = 0.9 }\n"));
    const auto& b = cfg->upstreams[0].breaker;
    CHECK(b.enabled);
    CHECK(b.window_ms == 5000);
    CHECK(b.error_rate == 0.9);
    CHECK(b.min_requests == 20);
    CHECK(b.timeout_rate == 0.4);
    CHECK(b.open_for_ms == 5000);
    CHECK(b.half_open_probes == 3);
  }
  SECTION("window") {
    CHECK(load_error(head + "window = \"500ms\"\n") ==
          "test.toml:12:10: upstreams.shop.breaker.window: must be between 1s and 10m, got \"500ms\"");
    CHECK(load_error(head + "window = \"11m\"\n") ==
          "test.toml:12:10: upstreams.shop.breaker.window: must be between 1s and 10m, got \"11m\"");
    CHECK(load_error(head + "window = \"1.5s\"\n") ==
          "test.toml:12:10: upstreams.shop.breaker.window: must be a whole number of seconds (the window counts 1s "
          "buckets), got \"1.5s\"");
    CHECK(load_error(head + "window = 10\n") ==
          "test.toml:12:10: upstreams.shop.breaker.window: expected a duration string such as \"10s\", got integer");
  }
  SECTION("counts and rates") {
    CHECK(load_error(head + "min_requests = 0\n") ==
          "test.toml:12:16: upstreams.shop.breaker.min_requests: must be between 1 and 1000000, got 0");
    CHECK(load_error(head + "min_requests = 1000001\n") ==
          "test.toml:12:16: upstreams.shop.breaker.min_requests: must be between 1 and 1000000, got 1000001");
    CHECK(load_error(head + "error_rate = 0\n") ==
          "test.toml:12:14: upstreams.shop.breaker.error_rate: must be greater than 0 and at most 1, got 0");
    CHECK(load_error(head + "error_rate = 1.5\n") ==
          "test.toml:12:14: upstreams.shop.breaker.error_rate: must be greater than 0 and at most 1, got 1.5");
    CHECK(load_error(head + "error_rate = \"50%\"\n") ==
          "test.toml:12:14: upstreams.shop.breaker.error_rate: expected a number, got string");
    CHECK(load_error(head + "timeout_rate = -0.1\n") ==
          "test.toml:12:16: upstreams.shop.breaker.timeout_rate: must be greater than 0 and at most 1, got -0.1");
    CHECK(load_error(head + "timeout_rate = 2\n") ==
          "test.toml:12:16: upstreams.shop.breaker.timeout_rate: must be greater than 0 and at most 1, got 2");
    CHECK(load_error(head + "half_open_probes = 0\n") ==
          "test.toml:12:20: upstreams.shop.breaker.half_open_probes: must be between 1 and 1000, got 0");
    CHECK(load_error(head + "half_open_probes = 1001\n") ==
          "test.toml:12:20: upstreams.shop.breaker.half_open_probes: must be between 1 and 1000, got 1001");
  }
  SECTION("open_for and enabled") {
    CHECK(load_error(head + "open_for = \"50ms\"\n") ==
          "test.toml:12:12: upstreams.shop.breaker.open_for: must be between 100ms and 1h, got \"50ms\"");
    CHECK(load_error(head + "open_for = \"2h\"\n") ==
          "test.toml:12:12: upstreams.shop.breaker.open_for: must be between 100ms and 1h, got \"2h\"");
    CHECK(load_error(head + "enabled = \"yes\"\n") ==
          "test.toml:12:11: upstreams.shop.breaker.enabled: expected true or false, got string");
  }
  SECTION("unknown keys and the table itself") {
    CHECK(load_error(head + "threshold = 3\n") == "test.toml:12:1: upstreams.shop.breaker.threshold: unknown key");
    CHECK(load_error(head + "open_fro = \"5s\"\n") ==
          "test.toml:12:1: upstreams.shop.breaker.open_fro: unknown key (did you mean \"open_for\"?)");
    CHECK(load_error(with_upstream("breaker = { window = \"5s\", probes = 2 }\n")) ==
          "test.toml:6:28: upstreams.shop.breaker.probes: unknown key");
    CHECK(load_error(with_upstream("breaker = true\n")) ==
          "test.toml:6:11: upstreams.shop.breaker: expected a table, got boolean");
  }
  SECTION("every problem is reported") {
    const std::string msg = load_error(head + "window = \"0s\"\nerror_rate = 0\nhalf_open_probes = 0\n");
    CHECK_THAT(msg, StartsWith("test.toml:12:10: upstreams.shop.breaker.window"));
    CHECK_THAT(msg, Contains("\ntest.toml:13:14: upstreams.shop.breaker.error_rate"));
    CHECK_THAT(msg, Contains("\ntest.toml:14:20: upstreams.shop.breaker.half_open_probes"));
  }
}
