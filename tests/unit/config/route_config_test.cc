// [[routes]]: references, names, match rules, routes that can never match, and
// on_unavailable.
#include <catch2/catch.hpp>

#include <string>

#include "tests/unit/config/config_test_support.h"
#include "floodgate/config.h"

using fg::OnUnavailable;
using fg::Overflow;
using namespace fg::config_test;
using Catch::Contains;
using Catch::StartsWith;

TEST_CASE("route references and names", "[config]") {
  SECTION("unknown upstream") {
    CHECK(load_error(with_routes("[[routes]]\nname = \"r\"\nmatch = { prefix = \"/\" }\nupstream = \"shoop\"\n")) ==
          "test.toml:10:12: routes[0].upstream: unknown upstream \"shoop\"");
  }
  SECTION("duplicate name") {
    CHECK(load_error(with_routes("[[routes]]\nname = \"r\"\nmatch = { path = \"/a\" }\nupstream = \"shop\"\n"
                                 "[[routes]]\nname = \"r\"\nmatch = { path = \"/b\" }\nupstream = \"shop\"\n")) ==
          "test.toml:12:8: routes[1].name: duplicate route name \"r\"");
  }
  SECTION("empty name") {
    CHECK_THAT(load_error(with_routes("[[routes]]\nname = \"\"\nmatch = { prefix = \"/\" }\nupstream = \"shop\"\n")),
               StartsWith("test.toml:8:8: routes[0].name: route names must be non-empty"));
  }
  SECTION("missing name, match, upstream") {
    const std::string msg = load_error(with_routes("[[routes]]\nmax_body_bytes = 10\n"));
    CHECK_THAT(msg, Contains("test.toml:7:1: routes[0].name: required"));
    CHECK_THAT(msg, Contains("test.toml:7:1: routes[0].match: required"));
    CHECK_THAT(msg, Contains("test.toml:7:1: routes[0].upstream: required"));
  }
}

TEST_CASE("route match validation", "[config]") {
  auto match_error = [](const std::string& match) {
    return load_error(with_routes("[[routes]]\nname = \"r\"\nmatch = " + match + "\nupstream = \"shop\"\n"));
  };
  CHECK(match_error("{ path = \"/a\", prefix = \"/b\" }") ==
        "test.toml:9:33: routes[0].match: set either path (exact) or prefix, not both");
  CHECK(match_error("{ methods = [\"GET\"] }") ==
        "test.toml:9:9: routes[0].match: needs path = \"/exact\" or prefix = \"/start/\"");
  CHECK(match_error("{ prefix = \"api/\" }") ==
        "test.toml:9:20: routes[0].match.prefix: must start with '/', got \"api/\"");
  CHECK_THAT(match_error("{ path = \"\" }"), StartsWith("test.toml:9:18: routes[0].match.path: must start with '/'"));
  CHECK_THAT(match_error("{ path = \"/a?b=1\" }"), Contains("must not contain '?' or '#'"));
  CHECK_THAT(match_error("{ path = \"/a b\" }"), Contains("must not contain spaces"));
  CHECK(match_error("{ methods = [\"GET\", \"GE T\"], prefix = \"/\" }") ==
        "test.toml:9:29: routes[0].match.methods[1]: invalid HTTP method \"GE T\"");
  CHECK_THAT(match_error("{ methods = [\"\"], prefix = \"/\" }"), Contains("invalid HTTP method \"\""));
  CHECK_THAT(match_error("{ methods = [], prefix = \"/\" }"),
             StartsWith("test.toml:9:21: routes[0].match.methods: must not be empty"));
  CHECK_THAT(match_error("{ methods = \"GET\", prefix = \"/\" }"),
             StartsWith("test.toml:9:21: routes[0].match.methods: expected an array of strings, got string"));
  CHECK_THAT(match_error("{ methods = [1], prefix = \"/\" }"),
             StartsWith("test.toml:9:22: routes[0].match.methods[0]: expected a string, got integer"));
  CHECK_THAT(match_error("\"/\""), StartsWith("test.toml:9:9: routes[0].match: expected a table, got string"));
}

TEST_CASE("methods are upper-cased and de-duplicated", "[config]") {
  auto cfg = load_ok(with_routes("[[routes]]\nname = \"r\"\nmatch = { methods = [\"get\", \"GET\", \"Post\"], prefix = \"/\" }\n"
                                 "upstream = \"shop\"\n"));
  CHECK(cfg->routes[0].match.methods == std::vector<std::string>{"GET", "POST"});
}

TEST_CASE("a route that can never match is rejected", "[config]") {
  SECTION("behind a catch-all") {
    CHECK(load_error(with_routes("[[routes]]\nname = \"all\"\nmatch = { prefix = \"/\" }\nupstream = \"shop\"\n"
                                 "[[routes]]\nname = \"orders\"\nmatch = { methods = [\"POST\"], path = \"/api/orders\" }\n"
                                 "upstream = \"shop\"\n")) ==
          "test.toml:11:1: routes[1]: route \"orders\" can never match: earlier route \"all\" (routes[0]) takes all "
          "of its requests");
  }
  SECTION("methods split over two earlier routes") {
    CHECK_THAT(load_error(with_routes(
                   "[[routes]]\nname = \"g\"\nmatch = { methods = [\"GET\"], prefix = \"/api\" }\nupstream = \"shop\"\n"
                   "[[routes]]\nname = \"p\"\nmatch = { methods = [\"POST\"], prefix = \"/api/\" }\nupstream = \"shop\"\n"
                   "[[routes]]\nname = \"x\"\nmatch = { methods = [\"GET\", \"POST\"], prefix = \"/api/v2\" }\n"
                   "upstream = \"shop\"\n")),
               Contains("routes[2]: route \"x\" can never match"));
  }
  SECTION("same exact path twice") {
    CHECK_THAT(load_error(with_routes("[[routes]]\nname = \"a\"\nmatch = { path = \"/a\" }\nupstream = \"shop\"\n"
                                      "[[routes]]\nname = \"b\"\nmatch = { methods = [\"GET\"], path = \"/a\" }\n"
                                      "upstream = \"shop\"\n")),
               Contains("route \"b\" can never match"));
  }
  SECTION("partial overlaps are fine") {
    load_ok(with_routes(
        // exact before prefix: the prefix still takes the longer paths
        "[[routes]]\nname = \"a\"\nmatch = { path = \"/api\" }\nupstream = \"shop\"\n"
        "[[routes]]\nname = \"b\"\nmatch = { prefix = \"/api\" }\nupstream = \"shop\"\n"
        // method-limited before method-less: other methods still reach it
        "[[routes]]\nname = \"c\"\nmatch = { methods = [\"GET\"], prefix = \"/x\" }\nupstream = \"shop\"\n"
        "[[routes]]\nname = \"d\"\nmatch = { prefix = \"/x/y\" }\nupstream = \"shop\"\n"
        // boundary: "/shop" does not cover "/shopping"
        "[[routes]]\nname = \"e\"\nmatch = { prefix = \"/shop\" }\nupstream = \"shop\"\n"
        "[[routes]]\nname = \"f\"\nmatch = { prefix = \"/shopping\" }\nupstream = \"shop\"\n"));
  }
}

TEST_CASE("several errors are reported together, one per line", "[config]") {
  const std::string msg = load_error(with_server("listen = \"127.0.0.1:0\"\nworkers = 0\nbogus = 1"));
  CHECK_THAT(msg, Contains("test.toml:2:10: server.listen"));
  CHECK_THAT(msg, Contains("\ntest.toml:3:11: server.workers"));
  CHECK_THAT(msg, Contains("test.toml:4:1: server.bogus: unknown key"));
}

TEST_CASE("a flood of errors is cut short", "[config]") {
  std::string body = "listen = \"127.0.0.1:1\"\n";
  for (int i = 0; i < 50; ++i) body += "bogus" + std::to_string(i) + " = 1\n";
  const std::string msg = load_error(with_server(body));
  CHECK_THAT(msg, Contains("(further errors not shown)"));
  CHECK(std::count(msg.begin(), msg.end(), '\n') == 20);
}

TEST_CASE("route on_unavailable", "[config][resilience]") {
  SECTION("values") {
    CHECK(load_ok(route_with("on_unavailable = \"error\"\n"))->routes[0].on_unavailable == OnUnavailable::kError);
    CHECK(load_ok(route_with("on_unavailable = \"degrade\"\n"))->routes[0].on_unavailable == OnUnavailable::kDegrade);
    CHECK(load_ok(route_with("cache = { stale_if_error = \"5m\" }\non_unavailable = \"cache\"\n"))
              ->routes[0]
              .on_unavailable == OnUnavailable::kCache);
    // A route may reject (or degrade) over its budget and still queue while the upstream is down.
    auto cfg = load_ok(route_with("rate = 10\noverflow = \"reject\"\non_unavailable = \"queue\"\n") + "\n[redis]\n");
    const auto& r = cfg->routes[0];
    CHECK(r.on_unavailable == OnUnavailable::kQueue);
    CHECK(r.overflow == Overflow::kReject);
    CHECK(load_ok(route_with("on_unavailable = \"queue\"\n") + "\n[redis]\n")->routes[0].on_unavailable ==
          OnUnavailable::kQueue);
  }
  SECTION("queue settings apply to a route that queues while unavailable") {
    auto cfg = load_ok(route_with("on_unavailable = \"queue\"\nqueue = { max_depth = 5 }\nclient_max_tickets = 2\n"
                                  "on_failure_webhook = \"http://127.0.0.1:8081/hook\"\n") +
                       "\n[redis]\n");
    const auto& r = cfg->routes[0];
    CHECK(r.queue.max_depth == 5);
    CHECK(r.client_max_tickets == 2);
    CHECK(r.on_failure_webhook == "http://127.0.0.1:8081/hook");
  }
  SECTION("errors") {
    CHECK(load_error(route_with("on_unavailable = \"retry\"\n")) ==
          "test.toml:11:18: routes[0].on_unavailable: expected \"error\", \"queue\", \"cache\" or \"degrade\", got "
          "\"retry\"");
    CHECK(load_error(route_with("on_unavailable = 503\n")) ==
          "test.toml:11:18: routes[0].on_unavailable: expected a string, got integer");
    CHECK(load_error(route_with("on_unavailable = \"cache\"\n")) ==
          "test.toml:11:18: routes[0].on_unavailable: on_unavailable = \"cache\" needs a cache on the route "
          "(cache = { ttl = \"2s\", stale_if_error = \"5m\" })");
    CHECK(load_error(route_with("on_unavailable = \"queue\"\n")) ==
          "test.toml:11:18: routes[0].on_unavailable: the ticket queue lives in Redis: add a [redis] table "
          "(url = \"redis://host:port/db\")");
    CHECK(load_error(sf_route("on_unavailable = \"degrade\"\n")) ==
          "test.toml:12:18: routes[0].on_unavailable: a store_and_forward route never sends a request live; "
          "on_unavailable would never apply (leave it out)");
  }
  SECTION("every problem is reported") {
    const std::string msg = load_error(methods_route("[\"POST\"]", "cache = {}\non_unavailable = \"stale\"\n"));
    CHECK_THAT(msg, StartsWith("test.toml:11:9: routes[0].cache: cache applies to GET and HEAD routes only"));
    CHECK_THAT(msg, Contains("\ntest.toml:12:18: routes[0].on_unavailable: expected \"error\""));
  }
}

TEST_CASE("a route's request_buffering overrides the server's", "[config]") {
  CHECK_FALSE(load_ok(route_with(""))->routes[0].request_buffering.has_value());
  auto off = load_ok(route_with("request_buffering = 0\n"));
  REQUIRE(off->routes[0].request_buffering.has_value());
  CHECK(*off->routes[0].request_buffering == 0);
  CHECK(*load_ok(route_with("request_buffering = \"8MiB\"\n"))->routes[0].request_buffering == 8 * 1024 * 1024);
  CHECK(load_error(route_with("request_buffering = \"2GiB\"\n")) ==
        "test.toml:11:21: routes[0].request_buffering: must be between 0 and 1073741824 bytes, got 2147483648");
}
