// A route's admission keys, [degrade] and [pressure].
#include <catch2/catch.hpp>

#include <string>

#include "tests/unit/config/config_test_support.h"
#include "floodgate/config.h"

using fg::Overflow;
using namespace fg::config_test;
using Catch::Contains;
using Catch::StartsWith;

TEST_CASE("route admission keys parse", "[config][admission]") {
  auto cfg = load_ok(with_routes(
      "[[routes]]\nname = \"orders\"\nmatch = { methods = [\"POST\"], path = \"/api/orders\" }\nupstream = \"shop\"\n"
      "rate = 3000\nburst = 300\nscope = \"instance\"\nclient_rate = 5\nclient_burst = 10\n"
      "client_key = \"header:X-User-Id\"\noverflow = \"degrade\"\ndry_run = true\ncore = false\n"
      "[[routes]]\nname = \"catalog\"\nmatch = { prefix = \"/api/products\" }\nupstream = \"shop\"\n"
      "rate = 2.5\nburst = 0.5\nclient_rate = 0.5\n"
      "[[routes]]\nname = \"search\"\nmatch = { prefix = \"/search\" }\nupstream = \"shop\"\n"
      "rate = 10\nclient_rate = 7.5\nclient_key = \"ip\"\noverflow = \"reject\"\n"
      "[[routes]]\nname = \"rest\"\nmatch = { prefix = \"/\" }\nupstream = \"shop\"\n"));
  REQUIRE(cfg->routes.size() == 4);

  const auto& orders = cfg->routes[0];
  CHECK(orders.rate == 3000);
  CHECK(orders.burst == 300);
  CHECK(orders.client_rate == 5);
  CHECK(orders.client_burst == 10);
  CHECK(orders.client_key.by_header);
  CHECK(orders.client_key.header == "X-User-Id");
  CHECK(orders.overflow == Overflow::kDegrade);
  CHECK(orders.dry_run);
  CHECK_FALSE(orders.core);

  const auto& catalog = cfg->routes[1];
  CHECK(catalog.rate == 2.5);
  CHECK(catalog.burst == 0.5);
  CHECK(catalog.client_rate == 0.5);
  CHECK(catalog.client_burst == 1);  // default: one second's worth, at least 1
  CHECK_FALSE(catalog.client_key.by_header);
  CHECK(catalog.overflow == Overflow::kReject);

  const auto& search = cfg->routes[2];
  CHECK(search.burst == 1);  // default: a tenth of rate, rounded up
  CHECK(search.client_burst == 7.5);  // default: client_rate
  CHECK_FALSE(search.client_key.by_header);
  CHECK(search.client_key.header.empty());
  CHECK(search.overflow == Overflow::kReject);

  const auto& rest = cfg->routes[3];
  CHECK(rest.rate == 0);
  CHECK(rest.burst == 0);
  CHECK(rest.client_rate == 0);
  CHECK(rest.client_burst == 1);
  CHECK_FALSE(rest.client_key.by_header);
  CHECK(rest.overflow == Overflow::kReject);
  CHECK_FALSE(rest.dry_run);
  CHECK(rest.core);
}

TEST_CASE("admission bounds are inclusive where documented", "[config][admission]") {
  auto cfg = load_ok(route_with("rate = 10000000\nburst = 10000000\nclient_rate = 1e7\nclient_burst = 1\n"));
  CHECK(cfg->routes[0].rate == 10000000);
  CHECK(cfg->routes[0].burst == 10000000);
  CHECK(cfg->routes[0].client_rate == 10000000);
  CHECK(cfg->routes[0].client_burst == 1);
  CHECK(load_ok(route_with("rate = 0.001\nburst = 0\n"))->routes[0].rate == 0.001);
  CHECK(load_ok(route_with("dry_run = true\n"))->routes[0].dry_run);   // shadow mode needs no limit
  CHECK_FALSE(load_ok(route_with("core = false\n"))->routes[0].core);  // nor does shedding
  CHECK(load_ok(route_with("scope = \"instance\"\n"))->routes[0].rate == 0);
}

TEST_CASE("admission values are type- and range-checked", "[config][admission]") {
  SECTION("types") {
    CHECK(load_error(route_with("rate = \"3000/s\"\n")) ==
          "test.toml:11:8: routes[0].rate: expected a number, got string");
    CHECK(load_error(route_with("rate = 10\nburst = true\n")) ==
          "test.toml:12:9: routes[0].burst: expected a number, got boolean");
    CHECK(load_error(route_with("client_rate = [5]\n")) ==
          "test.toml:11:15: routes[0].client_rate: expected a number, got array");
    CHECK(load_error(route_with("client_rate = 5\nclient_burst = \"10\"\n")) ==
          "test.toml:12:16: routes[0].client_burst: expected a number, got string");
    CHECK(load_error(route_with("client_rate = 5\nclient_key = 1\n")) ==
          "test.toml:12:14: routes[0].client_key: expected a string, got integer");
    CHECK(load_error(route_with("rate = 5\noverflow = false\n")) ==
          "test.toml:12:12: routes[0].overflow: expected a string, got boolean");
    CHECK(load_error(route_with("scope = 1\n")) == "test.toml:11:9: routes[0].scope: expected a string, got integer");
    CHECK(load_error(route_with("dry_run = \"yes\"\n")) ==
          "test.toml:11:11: routes[0].dry_run: expected true or false, got string");
    CHECK(load_error(route_with("core = 1\n")) == "test.toml:11:8: routes[0].core: expected true or false, got integer");
  }
  SECTION("rate") {
    CHECK(load_error(route_with("rate = 0\n")) ==
          "test.toml:11:8: routes[0].rate: must be greater than 0 and at most 10000000, got 0");
    CHECK(load_error(route_with("rate = -5\n")) ==
          "test.toml:11:8: routes[0].rate: must be greater than 0 and at most 10000000, got -5");
    CHECK(load_error(route_with("rate = 10000001\n")) ==
          "test.toml:11:8: routes[0].rate: must be greater than 0 and at most 10000000, got 10000001");
    CHECK(load_error(route_with("rate = nan\n")) ==
          "test.toml:11:8: routes[0].rate: must be greater than 0 and at most 10000000, got nan");
    CHECK(load_error(route_with("rate = inf\n")) ==
          "test.toml:11:8: routes[0].rate: must be greater than 0 and at most 10000000, got inf");
  }
  SECTION("burst") {
    CHECK(load_error(route_with("rate = 10\nburst = -1\n")) ==
          "test.toml:12:9: routes[0].burst: must be between 0 and 10000000, got -1");
    CHECK(load_error(route_with("rate = 10\nburst = 2e7\n")) ==
          "test.toml:12:9: routes[0].burst: must be between 0 and 10000000, got 20000000");
  }
  SECTION("client_rate and client_burst") {
    CHECK(load_error(route_with("client_rate = 0.0\n")) ==
          "test.toml:11:15: routes[0].client_rate: must be greater than 0 and at most 10000000, got 0");
    CHECK(load_error(route_with("client_rate = 5\nclient_burst = 0.5\n")) ==
          "test.toml:12:16: routes[0].client_burst: must be between 1 and 10000000, got 0.5");
    CHECK(load_error(route_with("client_rate = 5\nclient_burst = 0\n")) ==
          "test.toml:12:16: routes[0].client_burst: must be between 1 and 10000000, got 0");
  }
}

TEST_CASE("admission keys that modify another need it", "[config][admission]") {
  CHECK(load_error(route_with("burst = 300\n")) ==
        "test.toml:11:9: routes[0].burst: only valid together with rate (burst adds to the route budget)");
  CHECK(load_error(route_with("overflow = \"degrade\"\n")) ==
        "test.toml:11:12: routes[0].overflow: only valid together with rate (overflow decides what happens beyond "
        "the route budget)");
  CHECK(load_error(route_with("client_burst = 10\n")) ==
        "test.toml:11:16: routes[0].client_burst: only valid together with client_rate");
  CHECK(load_error(route_with("client_key = \"ip\"\n")) ==
        "test.toml:11:14: routes[0].client_key: only valid together with client_rate or client_max_tickets");
  // A route budget does not stand in for the per-client limit, nor the other way round.
  CHECK_THAT(load_error(route_with("rate = 10\nclient_burst = 10\n")),
             StartsWith("test.toml:12:16: routes[0].client_burst: only valid together with client_rate"));
  CHECK_THAT(load_error(route_with("client_rate = 10\nburst = 10\n")),
             StartsWith("test.toml:12:9: routes[0].burst: only valid together with rate"));
  // An invalid rate is reported once, not again as a missing dependency.
  CHECK(load_error(route_with("rate = 0\nburst = 5\n")) ==
        "test.toml:11:8: routes[0].rate: must be greater than 0 and at most 10000000, got 0");
}

TEST_CASE("overflow, scope and client_key values", "[config][admission]") {
  CHECK(load_error(route_with("rate = 10\noverflow = \"queue\"\n")) ==
        "test.toml:12:12: routes[0].overflow: the ticket queue lives in Redis: add a [redis] table "
        "(url = \"redis://host:port/db\")");
  CHECK(load_ok(route_with("rate = 10\noverflow = \"queue\"\n") + "[redis]\n")->routes[0].overflow ==
        Overflow::kQueue);
  CHECK(load_error(route_with("rate = 10\noverflow = \"drop\"\n")) ==
        "test.toml:12:12: routes[0].overflow: expected \"reject\", \"degrade\" or \"queue\", got \"drop\"");
  CHECK(load_error(route_with("rate = 10\nscope = \"cluster\"\n")) ==
        "test.toml:12:9: routes[0].scope: a cluster budget lives in Redis: add a [redis] table "
        "(url = \"redis://host:port/db\")");
  auto cluster = load_ok(route_with("rate = 10\nscope = \"cluster\"\n") + "[redis]\nexpected_instances = 3\n");
  CHECK(cluster->routes[0].cluster_scope);
  CHECK(cluster->redis.expected_instances == 3);
  CHECK_FALSE(load_ok(route_with("rate = 10\n") + "[redis]\n")->routes[0].cluster_scope);
  CHECK(load_ok(route_with("rate = 10\n") + "[redis]\n")->redis.expected_instances == 1);
  CHECK(load_error(route_with("scope = \"cluster\"\n") + "[redis]\n") ==
        "test.toml:11:9: routes[0].scope: only valid together with rate (scope says who shares the route budget)");
  CHECK_THAT(load_error(route_with("rate = 10\n") + "[redis]\nexpected_instances = 0\n"),
             StartsWith("test.toml:13:22: redis.expected_instances: must be between 1 and 1000"));
  CHECK(load_error(route_with("rate = 10\nscope = \"global\"\n")) ==
        "test.toml:12:9: routes[0].scope: expected \"instance\" or \"cluster\", got \"global\"");
  CHECK(load_error(route_with("client_rate = 5\nclient_key = \"cookie:sid\"\n")) ==
        "test.toml:12:14: routes[0].client_key: expected \"ip\" or \"header:NAME\", got \"cookie:sid\"");
  CHECK(load_error(route_with("client_rate = 5\nclient_key = \"IP\"\n")) ==
        "test.toml:12:14: routes[0].client_key: expected \"ip\" or \"header:NAME\", got \"IP\"");
  CHECK(load_error(route_with("client_rate = 5\nclient_key = \"header:\"\n")) ==
        "test.toml:12:14: routes[0].client_key: invalid header name \"\" in \"header:\" (expected \"header:NAME\" "
        "such as \"header:X-User-Id\")");
  CHECK_THAT(load_error(route_with("client_rate = 5\nclient_key = \"header:X User\"\n")),
             StartsWith("test.toml:12:14: routes[0].client_key: invalid header name \"X User\""));
  CHECK_THAT(load_error(route_with("client_rate = 5\nclient_key = \"header:X-Id:\"\n")),
             Contains("invalid header name \"X-Id:\""));
}

TEST_CASE("several admission errors are all reported", "[config][admission]") {
  const std::string msg =
      load_error(route_with("burst = -1\nclient_burst = 3\noverflow = \"drop\"\nscope = \"cluster\"\n"));
  CHECK_THAT(msg, Contains("test.toml:11:9: routes[0].burst: must be between 0"));
  CHECK_THAT(msg, Contains("test.toml:12:16: routes[0].client_burst: only valid together with client_rate"));
  CHECK_THAT(msg, Contains("test.toml:13:12: routes[0].overflow: expected \"reject\""));
  CHECK_THAT(msg, Contains("test.toml:14:9: routes[0].scope: only valid together with rate"));
}

TEST_CASE("[degrade] is validated", "[config]") {
  CHECK(load_error(kMinimal + "[degrade]\nstatus = 199\n") ==
        "test.toml:12:10: degrade.status: must be between 200 and 599, got 199");
  CHECK(load_error(kMinimal + "[degrade]\nstatus = 600\n") ==
        "test.toml:12:10: degrade.status: must be between 200 and 599, got 600");
  CHECK(load_error(kMinimal + "[degrade]\nstatus = \"503\"\n") ==
        "test.toml:12:10: degrade.status: expected an integer, got string");
  CHECK(load_error(kMinimal + "[degrade]\nbody = 1\n") == "test.toml:12:8: degrade.body: expected a string, got integer");
  CHECK(load_error(kMinimal + "[degrade]\ncontent_type = \"\"\n") ==
        "test.toml:12:16: degrade.content_type: must not be empty");
  CHECK(load_error(kMinimal + "[degrade]\ncontent_type = \"text/plain\\r\\nSet-Cookie: a=b\"\n") ==
        "test.toml:12:16: degrade.content_type: must not contain control characters");
  CHECK(load_error(kMinimal + "[degrade]\nretry_after = 1\n") ==
        "test.toml:12:15: degrade.retry_after: expected a duration string such as \"10s\", got integer");
  CHECK_THAT(load_error(kMinimal + "[degrade]\nretry_after = \"0s\"\n"),
             StartsWith("test.toml:12:15: degrade.retry_after: must be between 1ms and 1d"));
  CHECK(load_error(kMinimal + "[degrade]\nstatus = 204\n") ==
        "test.toml:12:10: degrade.status: a 204 response cannot carry a body; set body = \"\" or use another status");
  CHECK(load_ok(kMinimal + "[degrade]\nstatus = 204\nbody = \"\"\n")->degrade.status == 204);
  CHECK(load_error(kMinimal + "[degrade]\nstatus = 503\nheaders = {}\n") ==
        "test.toml:13:1: degrade.headers: unknown key");
}

TEST_CASE("[pressure] and [reload] are validated", "[config]") {
  CHECK(load_error(kMinimal + "[pressure]\nloop_lag = 50\n") ==
        "test.toml:12:12: pressure.loop_lag: expected a duration string such as \"10s\", got integer");
  CHECK_THAT(load_error(kMinimal + "[pressure]\nloop_lag = \"50\"\n"),
             StartsWith("test.toml:12:12: pressure.loop_lag: invalid duration \"50\": missing unit"));
  CHECK(load_error(kMinimal + "[pressure]\nloop_lag = \"50ms\"\nqueue_depth = 0\n") ==
        "test.toml:13:15: pressure.queue_depth: must be at least 1, got 0");
  CHECK(load_error(kMinimal + "[pressure]\nqueue_depth = \"50k\"\n") ==
        "test.toml:12:15: pressure.queue_depth: expected an integer, got string");
  CHECK(load_error(kMinimal + "[pressure]\nqueue_dept = 5\n") ==
        "test.toml:12:1: pressure.queue_dept: unknown key (did you mean \"queue_depth\"?)");
  CHECK(load_error(kMinimal + "[reload]\nwatch = \"yes\"\n") ==
        "test.toml:12:9: reload.watch: expected true or false, got string");
  CHECK(load_error(kMinimal + "[reload]\nwatch = true\ninterval = \"1s\"\n") ==
        "test.toml:13:1: reload.interval: unknown key");
}
