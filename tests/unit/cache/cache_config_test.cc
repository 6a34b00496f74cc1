// A route's cache table.
#include <catch2/catch.hpp>

#include <string>

#include "tests/unit/config/config_test_support.h"
#include "floodgate/config.h"

using namespace fg::config_test;
using Catch::StartsWith;

TEST_CASE("route cache", "[config][resilience]") {
  SECTION("an empty table switches it on with the defaults") {
    const auto cfg_2 = load_ok(route_with("cache = {}\n"));
    const auto& c = cfg_2->routes[0].cache;
    CHECK(c.enabled);
    CHECK(c.ttl_ms == 0);
    CHECK(c.stale_if_error_ms == 0);
    CHECK(c.max_bytes == 64ULL * 1024 * 1024);
    CHECK(c.max_entry_bytes == 1024 * 1024);
  }
  SECTION("values on a GET/HEAD route") {
    auto cfg = load_ok(methods_route("[\"GET\", \"head\"]", "cache = { ttl = \"2s\", stale_if_error = \"5m\", "
                                                            "max_bytes = \"8MiB\", max_entry_bytes = \"256KiB\" }\n"));
    const auto& c = cfg->routes[0].cache;
    CHECK(c.enabled);
    CHECK(c.ttl_ms == 2000);
    CHECK(c.stale_if_error_ms == 300000);
    CHECK(c.max_bytes == 8ULL * 1024 * 1024);
    CHECK(c.max_entry_bytes == 256 * 1024);
    CHECK(load_ok(methods_route("[\"GET\"]", "cache = { ttl = \"0s\" }\n"))->routes[0].cache.ttl_ms == 0);
    auto small = load_ok(route_with("cache = { max_bytes = \"1KiB\", max_entry_bytes = 1024 }\n"));
    CHECK(small->routes[0].cache.max_bytes == 1024);
    CHECK(small->routes[0].cache.max_entry_bytes == 1024);
  }
  SECTION("GET and HEAD routes only") {
    CHECK(load_error(methods_route("[\"GET\", \"POST\"]", "cache = { ttl = \"2s\" }\n")) ==
          "test.toml:11:9: routes[0].cache: cache applies to GET and HEAD routes only");
    CHECK(load_error(methods_route("[\"PUT\"]", "cache = {}\n")) ==
          "test.toml:11:9: routes[0].cache: cache applies to GET and HEAD routes only");
    CHECK(load_error(sf_route("cache = {}\n")) ==
          "test.toml:12:9: routes[0].cache: a store_and_forward route answers every request with ack; a cache would "
          "never apply");
  }
  SECTION("durations") {
    CHECK(load_error(route_with("cache = { ttl = \"2d\" }\n")) ==
          "test.toml:11:17: routes[0].cache.ttl: must be between 0ms and 1d, got \"2d\"");
    CHECK(load_error(route_with("cache = { ttl = 2 }\n")) ==
          "test.toml:11:17: routes[0].cache.ttl: expected a duration string such as \"10s\", got integer");
    CHECK_THAT(load_error(route_with("cache = { stale_if_error = \"forever\" }\n")),
               StartsWith("test.toml:11:28: routes[0].cache.stale_if_error: invalid duration \"forever\""));
  }
  SECTION("sizes") {
    CHECK(load_error(route_with("cache = { max_bytes = \"512B\" }\n")) ==
          "test.toml:11:23: routes[0].cache.max_bytes: must be at least 1024 bytes, got 512");
    CHECK(load_error(route_with("cache = { max_bytes = \"512KiB\" }\n")) ==
          "test.toml:11:23: routes[0].cache.max_bytes: must be at least max_entry_bytes (1048576 unless set); set a "
          "smaller max_entry_bytes");
    CHECK(load_error(route_with("cache = { max_bytes = \"1MiB\", max_entry_bytes = \"2MiB\" }\n")) ==
          "test.toml:11:49: routes[0].cache.max_entry_bytes: must not exceed max_bytes (1048576), got 2097152");
    CHECK(load_error(route_with("cache = { max_entry_bytes = 0 }\n")) ==
          "test.toml:11:29: routes[0].cache.max_entry_bytes: must be at least 1 bytes, got 0");
    CHECK(load_error(route_with("cache = { max_bytes = true }\n")) ==
          "test.toml:11:23: routes[0].cache.max_bytes: expected a size such as \"16KiB\" or an integer of bytes, got "
          "boolean");
  }
  SECTION("unknown keys and the table itself") {
    CHECK(load_error(route_with("cache = { ttl = \"1s\", vary = [\"Accept\"] }\n")) ==
          "test.toml:11:23: routes[0].cache.vary: unknown key");
    CHECK(load_error(route_with("cache = { tll = \"1s\" }\n")) ==
          "test.toml:11:11: routes[0].cache.tll: unknown key (did you mean \"ttl\"?)");
    CHECK(load_error(route_with("cache = true\n")) == "test.toml:11:9: routes[0].cache: expected a table, got boolean");
  }
}
