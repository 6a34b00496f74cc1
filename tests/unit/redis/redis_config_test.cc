// [redis]: URL, timeouts, on_failure and WAIT settings.
#include <catch2/catch.hpp>

#include <string>

#include "tests/unit/config/config_test_support.h"
#include "floodgate/config.h"

using namespace fg::config_test;
using Catch::Contains;
using Catch::StartsWith;

TEST_CASE("[redis] parses", "[config][redis]") {
  auto cfg = load_ok(kMinimal + "[redis]\nurl = \"redis://:s3cret@10.0.0.7:6380/2\"\nprefix = \"shop:\"\n"
                                "timeout = \"1.5s\"\non_failure = \"open\"\n");
  CHECK(cfg->redis.enabled);
  CHECK(cfg->redis.url == "redis://:s3cret@10.0.0.7:6380/2");
  CHECK(cfg->redis.prefix == "shop:");
  CHECK(cfg->redis.timeout_ms == 1500);
  CHECK(cfg->redis.fail_open);

  SECTION("on_failure = \"closed\"") {
    CHECK_FALSE(load_ok(kMinimal + "[redis]\non_failure = \"closed\"\n")->redis.fail_open);
  }
  SECTION("an empty table enables Redis with the defaults") {
    auto d = load_ok(kMinimal + "[redis]\n");
    CHECK(d->redis.enabled);
    CHECK(d->redis.url == "redis://127.0.0.1:6379/0");
    CHECK(d->redis.prefix == "fg:");
    CHECK(d->redis.timeout_ms == 250);
    CHECK_FALSE(d->redis.fail_open);
  }
  SECTION("without the table Redis is off") {
    auto off = load_ok(kMinimal);
    CHECK_FALSE(off->redis.enabled);
    CHECK(off->redis.prefix == "fg:");
    CHECK(off->redis.timeout_ms == 250);
  }
  SECTION("other URL forms") {
    CHECK(load_ok(kMinimal + "[redis]\nurl = \"unix:///run/redis/redis.sock?db=3\"\n")->redis.url ==
          "unix:///run/redis/redis.sock?db=3");
    CHECK(load_ok(kMinimal + "[redis]\nurl = \"redis://[::1]:6379\"\n")->redis.enabled);
    CHECK(load_ok(kMinimal + "[redis]\nurl = \"redis://redis.internal\"\n")->redis.enabled);
    CHECK(load_ok(kMinimal + "[redis]\nprefix = \"\"\n")->redis.prefix.empty());
  }
}

TEST_CASE("[redis] is validated", "[config][redis]") {
  SECTION("url") {
    CHECK(load_error(kMinimal + "[redis]\nurl = \"http://127.0.0.1:6379\"\n") ==
          "test.toml:12:7: redis.url: invalid redis url \"http://127.0.0.1:6379\": expected "
          "redis://[:password@]host[:port][/db] or unix:///path[?db=N]");
    CHECK(load_error(kMinimal + "[redis]\nurl = \"rediss://127.0.0.1:6379\"\n") ==
          "test.toml:12:7: redis.url: invalid redis url \"rediss://127.0.0.1:6379\": TLS (rediss://) is not "
          "supported");
    CHECK(load_error(kMinimal + "[redis]\nurl = \"redis://127.0.0.1:70000/0\"\n") ==
          "test.toml:12:7: redis.url: invalid redis url \"redis://127.0.0.1:70000/0\": invalid port");
    CHECK(load_error(kMinimal + "[redis]\nurl = \"redis://127.0.0.1:0\"\n") ==
          "test.toml:12:7: redis.url: invalid redis url \"redis://127.0.0.1:0\": invalid port");
    CHECK(load_error(kMinimal + "[redis]\nurl = \"redis://127.0.0.1:port\"\n") ==
          "test.toml:12:7: redis.url: invalid redis url \"redis://127.0.0.1:port\": invalid port");
    CHECK(load_error(kMinimal + "[redis]\nurl = \"redis://127.0.0.1:6379/x\"\n") ==
          "test.toml:12:7: redis.url: invalid redis url \"redis://127.0.0.1:6379/x\": invalid database number");
    CHECK(load_error(kMinimal + "[redis]\nurl = \"redis://:6379\"\n") ==
          "test.toml:12:7: redis.url: invalid redis url \"redis://:6379\": missing host");
    CHECK(load_error(kMinimal + "[redis]\nurl = 6379\n") == "test.toml:12:7: redis.url: expected a string, got integer");
  }
  SECTION("prefix") {
    CHECK(load_error(kMinimal + "[redis]\nurl = \"redis://127.0.0.1:6379\"\nprefix = \"{fg}:\"\n") ==
          "test.toml:13:10: redis.prefix: must not contain '{' or '}' (the keys' hash tags are the route names)");
    CHECK(load_error(kMinimal + "[redis]\nurl = \"redis://127.0.0.1:6379\"\nprefix = \"fg}\"\n") ==
          "test.toml:13:10: redis.prefix: must not contain '{' or '}' (the keys' hash tags are the route names)");
  }
  SECTION("a password in a bad url is not repeated") {
    const std::string msg = load_error(kMinimal + "[redis]\nurl = \"redis://:hunter2@127.0.0.1:99999/0\"\n");
    CHECK(msg == "test.toml:12:7: redis.url: invalid redis url \"redis://:***@127.0.0.1:99999/0\": invalid port");
    CHECK(msg.find("hunter2") == std::string::npos);
    const std::string user = load_error(kMinimal + "[redis]\nurl = \"redis://default:hunter2@h:0\"\n");
    CHECK_THAT(user, Contains("\"redis://default:***@h:0\""));
    CHECK(user.find("hunter2") == std::string::npos);
    const std::string slash = load_error(kMinimal + "[redis]\nurl = \"redis://:hun/ter2@h:6379\"\n");
    CHECK_THAT(slash, Contains("\"redis://:***@h:6379\""));
    CHECK(slash.find("ter2") == std::string::npos);
  }
  SECTION("on_failure") {
    CHECK(load_error(kMinimal + "[redis]\non_failure = \"fail\"\n") ==
          "test.toml:12:14: redis.on_failure: expected \"closed\" (503 where Redis is needed) or \"open\" (forward "
          "without dedupe), got \"fail\"");
    CHECK_THAT(load_error(kMinimal + "[redis]\non_failure = \"Open\"\n"),
               StartsWith("test.toml:12:14: redis.on_failure: expected \"closed\""));
    CHECK(load_error(kMinimal + "[redis]\non_failure = true\n") ==
          "test.toml:12:14: redis.on_failure: expected a string, got boolean");
  }
  SECTION("timeout") {
    CHECK(load_error(kMinimal + "[redis]\ntimeout = 250\n") ==
          "test.toml:12:11: redis.timeout: expected a duration string such as \"10s\", got integer");
    CHECK_THAT(load_error(kMinimal + "[redis]\ntimeout = \"250\"\n"),
               StartsWith("test.toml:12:11: redis.timeout: invalid duration \"250\": missing unit"));
    CHECK_THAT(load_error(kMinimal + "[redis]\ntimeout = \"fast\"\n"),
               StartsWith("test.toml:12:11: redis.timeout: invalid duration \"fast\""));
    CHECK(load_error(kMinimal + "[redis]\ntimeout = \"0ms\"\n") ==
          "test.toml:12:11: redis.timeout: must be between 1ms and 1d, got \"0ms\"");
  }
  SECTION("prefix, unknown keys and the table itself") {
    CHECK(load_error(kMinimal + "[redis]\nprefix = 1\n") == "test.toml:12:10: redis.prefix: expected a string, got integer");
    CHECK(load_ok(kMinimal + "[redis]\nexpected_instances = 2\n")->redis.expected_instances == 2);
    CHECK(load_error(kMinimal + "[redis]\ntimout = \"1s\"\n") ==
          "test.toml:12:1: redis.timout: unknown key (did you mean \"timeout\"?)");
    CHECK(load_error("redis = \"redis://127.0.0.1:6379\"\n" + kMinimal) ==
          "test.toml:1:9: redis: expected a table, got string");
  }
  SECTION("every problem is reported") {
    const std::string msg = load_error(kMinimal + "[redis]\nurl = \"tcp://x\"\ntimeout = \"1\"\non_failure = \"maybe\"\n");
    CHECK_THAT(msg, Contains("test.toml:12:7: redis.url: invalid redis url"));
    CHECK_THAT(msg, Contains("\ntest.toml:13:11: redis.timeout: invalid duration"));
    CHECK_THAT(msg, Contains("\ntest.toml:14:14: redis.on_failure: expected"));
  }
}

TEST_CASE("[redis] url is parsed once into an endpoint", "[config][redis]") {
  auto cfg = load_ok(kMinimal + "\n[redis]\nurl = \"redis://:s%40cret@10.0.0.7:6380/3\"\n");
  CHECK(cfg->redis.url == "redis://:s%40cret@10.0.0.7:6380/3");
  CHECK_FALSE(cfg->redis.endpoint.unix_socket);
  CHECK(cfg->redis.endpoint.host == "10.0.0.7");
  CHECK(cfg->redis.endpoint.port == 6380);
  CHECK(cfg->redis.endpoint.db == 3);
  CHECK(cfg->redis.endpoint.password == "s@cret");

  auto sock = load_ok(kMinimal + "\n[redis]\nurl = \"unix:///run/redis.sock?db=2\"\n");
  CHECK(sock->redis.endpoint.unix_socket);
  CHECK(sock->redis.endpoint.path == "/run/redis.sock");
  CHECK(sock->redis.endpoint.db == 2);

  // Without a url: the documented default, parsed the same way.
  auto dflt = load_ok(kMinimal + "\n[redis]\n");
  CHECK(dflt->redis.endpoint.host == "127.0.0.1");
  CHECK(dflt->redis.endpoint.port == 6379);
  CHECK(dflt->redis.endpoint.db == 0);
}

TEST_CASE("[redis] sentinels and master_name", "[config][redis]") {
  SECTION("the Sentinels, the master name and the url's password and database") {
    auto cfg = load_ok(kMinimal + "[redis]\nurl = \"redis://:pw@shop-main/2\"\n"
                                  "sentinels = [\"10.0.0.5:26379\", \"sentinel-b:26380\", \"[::1]:26381\"]\n"
                                  "master_name = \"shop-main\"\nsentinel_password = \"spw\"\n");
    const fg::redis::Endpoint& ep = cfg->redis.endpoint;
    REQUIRE(ep.via_sentinel());
    REQUIRE(ep.sentinel.addresses.size() == 3);
    CHECK(ep.sentinel.addresses[0].host == "10.0.0.5");
    CHECK(ep.sentinel.addresses[0].port == 26379);
    CHECK(ep.sentinel.addresses[1].host == "sentinel-b");
    CHECK(ep.sentinel.addresses[1].port == 26380);
    CHECK(ep.sentinel.addresses[2].host == "::1");
    CHECK(ep.sentinel.master_name == "shop-main");
    CHECK(ep.sentinel.password == "spw");
    CHECK(ep.password == "pw");
    CHECK(ep.db == 2);
  }
  SECTION("without a url: database 0, no password") {
    auto cfg = load_ok(kMinimal + "[redis]\nsentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"m\"\n");
    CHECK(cfg->redis.endpoint.via_sentinel());
    CHECK(cfg->redis.endpoint.host == "m");
    CHECK(cfg->redis.endpoint.db == 0);
    CHECK(cfg->redis.endpoint.password.empty());
    CHECK(cfg->redis.endpoint.sentinel.password.empty());
  }
  SECTION("without sentinels nothing goes through Sentinel") {
    CHECK_FALSE(load_ok(kMinimal + "[redis]\n")->redis.endpoint.via_sentinel());
  }
}

TEST_CASE("[redis] sentinels are validated", "[config][redis]") {
  struct Case {
    const char* redis;     // the [redis] table's lines
    const char* expected;  // the whole error, or its start when it ends with "..."
  };
  const Case cases[] = {
      {"sentinels = [\"10.0.0.5:26379\"]\n",
       "test.toml:12:13: redis.sentinels: needs redis.master_name, the name the Sentinels monitor the master under"},
      {"master_name = \"m\"\n", "test.toml:12:15: redis.master_name: only valid together with redis.sentinels"},
      {"sentinel_password = \"x\"\n",
       "test.toml:12:21: redis.sentinel_password: only valid together with redis.sentinels"},
      {"sentinels = []\nmaster_name = \"m\"\n", "test.toml:12:13: redis.sentinels: must list at least one address"},
      {"sentinels = \"10.0.0.5:26379\"\nmaster_name = \"m\"\n",
       "test.toml:12:13: redis.sentinels: expected an array of strings, got string"},
      {"sentinels = [\"10.0.0.5\"]\nmaster_name = \"m\"\n",
       "test.toml:12:14: redis.sentinels[0]: invalid address \"10.0.0.5\"..."},
      {"sentinels = [\"a:1\", \"a:1\"]\nmaster_name = \"m\"\n",
       "test.toml:12:21: redis.sentinels[1]: \"a:1\" is listed twice"},
      {"sentinels = [\"a:1\"]\nmaster_name = \"my master\"\n",
       "test.toml:13:15: redis.master_name: expected a non-empty name without spaces"},
      {"sentinels = [\"a:1\"]\nmaster_name = \"m\"\nsentinel_password = \"\"\n",
       "test.toml:14:21: redis.sentinel_password: empty password (leave the key out when the Sentinels need none)"},
      {"url = \"redis://127.0.0.1:6379/0\"\nsentinels = [\"a:1\"]\nmaster_name = \"m\"\n",
       "test.toml:12:7: redis.url: with redis.sentinels the url gives only the password and database, and its host "
       "names the master: expected redis://[:password@]m[/db], got host \"127.0.0.1\""},
      {"url = \"unix:///run/r.sock\"\nsentinels = [\"a:1\"]\nmaster_name = \"m\"\n",
       "test.toml:12:7: redis.url: a unix socket cannot be combined with redis.sentinels; use "
       "redis://[:password@]m[/db]"},
  };
  for (const Case& c : cases) {
    INFO(c.redis);
    const std::string got = load_error(kMinimal + "[redis]\n" + c.redis);
    std::string want = c.expected;
    if (want.size() > 3 && want.compare(want.size() - 3, 3, "...") == 0) {
      CHECK_THAT(got, StartsWith(want.substr(0, want.size() - 3)));
    } else {
      CHECK(got == want);
    }
  }
}
