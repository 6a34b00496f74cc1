// [upstreams.X]: retry, backup servers, adaptive timeouts and health checks.
#include <catch2/catch.hpp>

#include <string>

#include "tests/unit/config/config_test_support.h"
#include "floodgate/config.h"

using namespace fg::config_test;
using Catch::Contains;
using Catch::StartsWith;

TEST_CASE("[upstreams.X.retry] parses", "[config][retry]") {
  SECTION("as a sub-table") {
    auto cfg = load_ok(kMinimal + "[upstreams.shop.retry]\nattempts = 5\nbackoff = \"250ms\"\nmax_backoff = \"1m\"\n"
                                  "on = [\"timeout\", \"500\", \"503\"]\n");
    const auto& r = cfg->upstreams.at(0).retry;
    CHECK(r.attempts == 5);
    CHECK(r.backoff_ms == 250);
    CHECK(r.max_backoff_ms == 60000);
    CHECK_FALSE(r.on_connect);
    CHECK(r.on_timeout);
    CHECK(r.on_status == std::vector<int>{500, 503});
  }
  SECTION("as an inline table") {
    auto cfg = load_ok("[server]\nlisten = \"127.0.0.1:8080\"\n\n[upstreams.shop]\nservers = [\"127.0.0.1:8081\"]\n"
                       "retry = { attempts = 1, on = [\"connect\"] }\n\n"
                       "[[routes]]\nname = \"r\"\nmatch = { prefix = \"/\" }\nupstream = \"shop\"\n");
    const auto& r = cfg->upstreams.at(0).retry;
    CHECK(r.attempts == 1);
    CHECK(r.on_connect);
    CHECK_FALSE(r.on_timeout);
    CHECK(r.on_status.empty());
    CHECK(r.backoff_ms == 1000);
  }
  SECTION("defaults for the keys left out") {
    auto cfg = load_ok(kMinimal + "[upstreams.shop.retry]\nattempts = 20\n");
    const auto& r = cfg->upstreams.at(0).retry;
    CHECK(r.attempts == 20);
    CHECK(r.backoff_ms == 1000);
    CHECK(r.max_backoff_ms == 30000);
    CHECK(r.on_connect);
    CHECK(r.on_timeout);
    CHECK(r.on_status == std::vector<int>{502, 503, 504});
  }
  SECTION("backoff equal to max_backoff; a backoff above the default max with a max") {
    CHECK(load_ok(kMinimal + "[upstreams.shop.retry]\nbackoff = \"30s\"\n")->upstreams[0].retry.backoff_ms == 30000);
    auto cfg = load_ok(kMinimal + "[upstreams.shop.retry]\nbackoff = \"1m\"\nmax_backoff = \"10m\"\n");
    CHECK(cfg->upstreams[0].retry.max_backoff_ms == 600000);
    CHECK(load_ok(kMinimal + "[upstreams.shop.retry]\non = [\"599\", \"500\"]\n")->upstreams[0].retry.on_status ==
          std::vector<int>{599, 500});
  }
}

TEST_CASE("[upstreams.X.retry] is validated", "[config][retry]") {
  const std::string head = kMinimal + "[upstreams.shop.retry]\n";  // keys from line 12
  CHECK(load_error(head + "attempts = 0\n") ==
        "test.toml:12:12: upstreams.shop.retry.attempts: must be between 1 and 20, got 0");
  CHECK(load_error(head + "attempts = 21\n") ==
        "test.toml:12:12: upstreams.shop.retry.attempts: must be between 1 and 20, got 21");
  CHECK(load_error(head + "backoff = \"0s\"\n") ==
        "test.toml:12:11: upstreams.shop.retry.backoff: must be between 1ms and 1d, got \"0s\"");
  CHECK(load_error(head + "backoff = 1\n") ==
        "test.toml:12:11: upstreams.shop.retry.backoff: expected a duration string such as \"10s\", got integer");
  SECTION("max_backoff below backoff") {
    CHECK(load_error(head + "backoff = \"5s\"\nmax_backoff = \"2s\"\n") ==
          "test.toml:13:15: upstreams.shop.retry.max_backoff: must be at least backoff (5s), got 2s");
    CHECK(load_error(head + "max_backoff = \"500ms\"\n") ==
          "test.toml:12:15: upstreams.shop.retry.max_backoff: must be at least backoff (1s), got 500ms");
    CHECK(load_error(head + "backoff = \"1m\"\n") ==
          "test.toml:12:11: upstreams.shop.retry.backoff: must not exceed max_backoff (30s unless set); raise "
          "max_backoff as well");
  }
  SECTION("on") {
    CHECK(load_error(head + "on = [\"connect\", \"4xx\"]\n") ==
          "test.toml:12:18: upstreams.shop.retry.on[1]: expected \"connect\", \"timeout\" or a status code \"500\" to "
          "\"599\", got \"4xx\"");
    CHECK_THAT(load_error(head + "on = [\"429\"]\n"), StartsWith("test.toml:12:7: upstreams.shop.retry.on[0]: expected"));
    CHECK_THAT(load_error(head + "on = [\"600\"]\n"), Contains("got \"600\""));
    CHECK_THAT(load_error(head + "on = [\"5xx\"]\n"), Contains("got \"5xx\""));
    CHECK_THAT(load_error(head + "on = [\"50\"]\n"), Contains("got \"50\""));
    CHECK_THAT(load_error(head + "on = [\"Connect\"]\n"), Contains("got \"Connect\""));
    CHECK(load_error(head + "on = [\"502\", \"502\"]\n") ==
          "test.toml:12:14: upstreams.shop.retry.on[1]: \"502\" is listed twice");
    CHECK(load_error(head + "on = [502]\n") == "test.toml:12:7: upstreams.shop.retry.on[0]: expected a string, got integer");
    CHECK(load_error(head + "on = \"connect\"\n") ==
          "test.toml:12:6: upstreams.shop.retry.on: expected an array such as [\"connect\", \"timeout\", \"503\"], got "
          "string");
    CHECK(load_error(head + "on = []\n") ==
          "test.toml:12:6: upstreams.shop.retry.on: must list at least one condition (attempts = 1 turns retries off)");
  }
  SECTION("unknown keys and the table itself") {
    CHECK(load_error(head + "jitter = true\n") == "test.toml:12:1: upstreams.shop.retry.jitter: unknown key");
    CHECK(load_error(head + "attempt = 3\n") ==
          "test.toml:12:1: upstreams.shop.retry.attempt: unknown key (did you mean \"attempts\"?)");
    CHECK(load_error(kMinimal + "[upstreams.b]\nservers = [\"1.2.3.4:80\"]\nretry = 3\n") ==
          "test.toml:13:9: upstreams.b.retry: expected a table, got integer");
  }
  SECTION("every problem is reported") {
    const std::string msg = load_error(head + "attempts = 0\nbackoff = \"soon\"\non = [\"connect\", \"never\"]\n");
    CHECK_THAT(msg, Contains("test.toml:12:12: upstreams.shop.retry.attempts"));
    CHECK_THAT(msg, Contains("\ntest.toml:13:11: upstreams.shop.retry.backoff: invalid duration"));
    CHECK_THAT(msg, Contains("\ntest.toml:14:18: upstreams.shop.retry.on[1]"));
  }
}

TEST_CASE("upstream backup servers", "[config][resilience]") {
  auto cfg = load_ok(with_upstream("backup = [\"127.0.0.1:9081\", \"backup.internal:9082\", \"[::1]:9083\"]\n"));
  const auto& b = cfg->upstreams[0].backup;
  REQUIRE(b.size() == 3);
  CHECK(b[0].host == "127.0.0.1");
  CHECK(b[0].port == 9081);
  CHECK(b[0].text == "127.0.0.1:9081");
  CHECK(b[1].host == "backup.internal");
  CHECK(b[2].host == "::1");
  CHECK(load_ok(with_upstream("backup = []\n"))->upstreams[0].backup.empty());
  // Same host, other port: a different server.
  CHECK(load_ok(with_upstream("backup = [\"127.0.0.1:8082\"]\n"))->upstreams[0].backup.size() == 1);

  CHECK(load_error(with_upstream("backup = [\"127.0.0.1:8081\"]\n")) ==
        "test.toml:6:11: upstreams.shop.backup[0]: \"127.0.0.1:8081\" is also in servers; a backup must be a "
        "different server");
  CHECK(load_error(with_upstream("backup = [\"127.0.0.1:9081\", \"127.0.0.1:9081\"]\n")) ==
        "test.toml:6:29: upstreams.shop.backup[1]: \"127.0.0.1:9081\" is listed twice");
  CHECK(load_error(with_upstream("backup = [\"[::1]:9000\", \"[::0001]:9000\"]\n")) ==
        "test.toml:6:25: upstreams.shop.backup[1]: \"[::0001]:9000\" is listed twice");
  CHECK(load_error(with_upstream("backup = \"127.0.0.1:9081\"\n")) ==
        "test.toml:6:10: upstreams.shop.backup: expected an array of strings, got string");
  CHECK(load_error(with_upstream("backup = [\"nohost\"]\n")) ==
        "test.toml:6:11: upstreams.shop.backup[0]: invalid address \"nohost\": expected \"HOST:PORT\"");
  CHECK(load_error(with_upstream("backup = [9081]\n")) ==
        "test.toml:6:11: upstreams.shop.backup[0]: expected a string, got integer");
  SECTION("every problem is reported") {
    const std::string msg = load_error(with_upstream("backup = [\"127.0.0.1:8081\", \"x:0\", \"127.0.0.1:9\"]\n"));
    CHECK_THAT(msg, Contains("test.toml:6:11: upstreams.shop.backup[0]: \"127.0.0.1:8081\" is also in servers"));
    CHECK_THAT(msg, Contains("\ntest.toml:6:29: upstreams.shop.backup[1]: invalid address \"x:0\""));
  }
}

TEST_CASE("upstream timeout = \"adaptive\" and its bounds", "[config][resilience]") {
  auto cfg = load_ok(with_upstream("timeout = \"adaptive\"\n"));
  const auto& u = cfg->upstreams[0];
  CHECK(u.adaptive_timeout);
  CHECK(u.timeout_ms == 5000);  // unchanged default
  CHECK(u.timeout_min_ms == 200);
  CHECK(u.timeout_max_ms == 10000);
  auto bounded = load_ok(with_upstream("timeout = \"adaptive\"\ntimeout_min = \"100ms\"\ntimeout_max = \"3s\"\n"));
  CHECK(bounded->upstreams[0].adaptive_timeout);
  CHECK(bounded->upstreams[0].timeout_min_ms == 100);
  CHECK(bounded->upstreams[0].timeout_max_ms == 3000);
  // The bounds are accepted next to a fixed timeout (ready for "adaptive").
  auto fixed = load_ok(with_upstream("timeout = \"3s\"\ntimeout_min = \"1s\"\ntimeout_max = \"1s\"\n"));
  CHECK_FALSE(fixed->upstreams[0].adaptive_timeout);
  CHECK(fixed->upstreams[0].timeout_ms == 3000);
  CHECK(fixed->upstreams[0].timeout_min_ms == 1000);
  CHECK(fixed->upstreams[0].timeout_max_ms == 1000);

  CHECK(load_error(with_upstream("timeout = 5\n")) ==
        "test.toml:6:11: upstreams.shop.timeout: expected a duration string such as \"5s\" or \"adaptive\", got "
        "integer");
  const std::string bad = load_error(with_upstream("timeout = \"Adaptive\"\n"));
  CHECK_THAT(bad, StartsWith("test.toml:6:11: upstreams.shop.timeout: invalid duration \"Adaptive\""));
  CHECK_THAT(bad, Contains(", or \"adaptive\""));
  CHECK(load_error(with_upstream("timeout = \"0s\"\n")) ==
        "test.toml:6:11: upstreams.shop.timeout: must be between 1ms and 1d, got \"0s\"");
  CHECK(load_error(with_upstream("timeout_min = \"2s\"\ntimeout_max = \"1s\"\n")) ==
        "test.toml:7:15: upstreams.shop.timeout_max: must be at least timeout_min (2s), got 1s");
  CHECK(load_error(with_upstream("timeout_max = \"100ms\"\n")) ==
        "test.toml:6:15: upstreams.shop.timeout_max: must be at least timeout_min (200ms), got 100ms");
  CHECK(load_error(with_upstream("timeout_min = \"20s\"\n")) ==
        "test.toml:6:15: upstreams.shop.timeout_min: must not exceed timeout_max (10s unless set); raise "
        "timeout_max as well");
  CHECK(load_error(with_upstream("timeout_min = 1\n")) ==
        "test.toml:6:15: upstreams.shop.timeout_min: expected a duration string such as \"10s\", got integer");
  CHECK(load_error(with_upstream("timeout_max = \"2d\"\n")) ==
        "test.toml:6:15: upstreams.shop.timeout_max: must be between 1ms and 1d, got \"2d\"");
}

TEST_CASE("an adaptive timeout counts with timeout_max against processing_timeout", "[config][resilience]") {
  auto text = [](const std::string& processing) {
    return "[server]\nlisten = \"127.0.0.1:8080\"\n\n[upstreams.shop]\nservers = [\"127.0.0.1:8081\"]\n"
           "timeout = \"adaptive\"\n\n[[routes]]\nname = \"r\"\nmatch = { prefix = \"/\" }\nupstream = \"shop\"\n"
           "on_unavailable = \"queue\"\nqueue = { processing_timeout = \"" +
           processing + "\" }\n\n[redis]\n";
  };
  CHECK(load_error(text("11s")) ==
        "test.toml:13:32: routes[0].queue.processing_timeout: must be longer than one delivery attempt, "
        "upstreams.shop connect_timeout + timeout_max (11s); a delivery still waiting for the shop would be "
        "reclaimed and sent again");
  CHECK(load_ok(text("12s"))->routes[0].queue.processing_timeout_ms == 12000);
}

TEST_CASE("upstream health checks", "[config][resilience]") {
  SECTION("an empty table switches them on with the defaults") {
    const auto cfg_1 = load_ok(with_upstream("health = {}\n"));
    const auto& h = cfg_1->upstreams[0].health;
    CHECK(h.enabled);
    CHECK(h.path == "/healthz");
    CHECK(h.interval_ms == 2000);
    CHECK(h.timeout_ms == 1000);
    CHECK(h.rise == 2);
    CHECK(h.fall == 2);
  }
  SECTION("values, inline and as a sub-table") {
    auto cfg = load_ok(with_upstream("health = { path = \"/ready?deep=1\", interval = \"500ms\", timeout = \"200ms\", "
                                     "rise = 1, fall = 100 }\n"));
    const auto& h = cfg->upstreams[0].health;
    CHECK(h.enabled);
    CHECK(h.path == "/ready?deep=1");
    CHECK(h.interval_ms == 500);
    CHECK(h.timeout_ms == 200);
    CHECK(h.rise == 1);
    CHECK(h.fall == 100);
    auto sub = load_ok(kMinimal + "[upstreams.shop.health]\npath = \"/up\"\ninterval = \"100ms\"\ntimeout = \"99ms\"\n");
    CHECK(sub->upstreams[0].health.enabled);
    CHECK(sub->upstreams[0].health.path == "/up");
    CHECK(sub->upstreams[0].health.interval_ms == 100);
    CHECK(sub->upstreams[0].health.timeout_ms == 99);
  }
  const std::string head = kMinimal + "[upstreams.shop.health]\n";  // keys from line 12
  SECTION("path") {
    CHECK(load_error(head + "path = \"healthz\"\n") ==
          "test.toml:12:8: upstreams.shop.health.path: must start with '/', got \"healthz\"");
    CHECK(load_error(head + "path = \"\"\n") == "test.toml:12:8: upstreams.shop.health.path: must start with '/', got \"\"");
    CHECK(load_error(head + "path = \"/health z\"\n") ==
          "test.toml:12:8: upstreams.shop.health.path: must not contain spaces, control characters or non-ASCII bytes "
          "(percent-encode them)");
    CHECK(load_error(head + "path = \"/h#x\"\n") ==
          "test.toml:12:8: upstreams.shop.health.path: must not contain a fragment ('#')");
    CHECK(load_error(head + "path = 1\n") == "test.toml:12:8: upstreams.shop.health.path: expected a string, got integer");
    CHECK(load_error(with_upstream("health = { path = \"x\" }\n")) ==
          "test.toml:6:19: upstreams.shop.health.path: must start with '/', got \"x\"");
  }
  SECTION("interval and timeout") {
    CHECK(load_error(head + "interval = \"50ms\"\n") ==
          "test.toml:12:12: upstreams.shop.health.interval: must be between 100ms and 1d, got \"50ms\"");
    CHECK(load_error(head + "timeout = \"2s\"\n") ==
          "test.toml:12:11: upstreams.shop.health.timeout: must be shorter than interval (2s), got 2s");
    CHECK(load_error(head + "interval = \"5s\"\ntimeout = \"6s\"\n") ==
          "test.toml:13:11: upstreams.shop.health.timeout: must be shorter than interval (5s), got 6s");
    CHECK(load_error(head + "interval = \"1s\"\n") ==
          "test.toml:12:12: upstreams.shop.health.interval: must be longer than timeout (1s unless set); set a "
          "shorter timeout");
    CHECK(load_error(head + "timeout = \"0s\"\n") ==
          "test.toml:12:11: upstreams.shop.health.timeout: must be between 1ms and 1d, got \"0s\"");
    CHECK(load_ok(head + "interval = \"1s\"\ntimeout = \"999ms\"\n")->upstreams[0].health.timeout_ms == 999);
  }
  SECTION("rise and fall") {
    CHECK(load_error(head + "rise = 0\n") == "test.toml:12:8: upstreams.shop.health.rise: must be between 1 and 100, got 0");
    CHECK(load_error(head + "fall = 101\n") ==
          "test.toml:12:8: upstreams.shop.health.fall: must be between 1 and 100, got 101");
    CHECK(load_error(head + "fall = \"2\"\n") == "test.toml:12:8: upstreams.shop.health.fall: expected an integer, got string");
  }
  SECTION("unknown keys and the table itself") {
    CHECK(load_error(head + "expect = 200\n") == "test.toml:12:1: upstreams.shop.health.expect: unknown key");
    CHECK(load_error(head + "interval = \"5s\"\ntimout = \"1s\"\n") ==
          "test.toml:13:1: upstreams.shop.health.timout: unknown key (did you mean \"timeout\"?)");
    CHECK(load_error(with_upstream("health = \"/healthz\"\n")) ==
          "test.toml:6:10: upstreams.shop.health: expected a table, got string");
  }
}

TEST_CASE("upstream resolve_every and resolver", "[config][resolver]") {
  auto def = load_ok(kMinimal);
  CHECK(def->upstreams[0].resolve_every_ms == 30000);
  CHECK(def->upstreams[0].resolver.empty());
  auto cfg = load_ok(with_upstream("resolve_every = \"5s\"\nresolver = [\"127.0.0.1:5353\", \"[::1]:53\"]\n"));
  CHECK(cfg->upstreams[0].resolve_every_ms == 5000);
  REQUIRE(cfg->upstreams[0].resolver.size() == 2);
  CHECK(cfg->upstreams[0].resolver[0].port == 5353);
  CHECK(cfg->upstreams[0].resolver[1].host == "::1");
  CHECK(load_error(with_upstream("resolve_every = \"100ms\"\n")) ==
        "test.toml:6:17: upstreams.shop.resolve_every: must be between 1s and 1d, got \"100ms\"");
  CHECK(load_error(with_upstream("resolver = [\"dns.example:53\"]\n")) ==
        "test.toml:6:13: upstreams.shop.resolver[0]: invalid address \"dns.example:53\": expected a literal IPv4 "
        "address or [IPv6] address");
}
