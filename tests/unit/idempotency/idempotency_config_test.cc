// A route's idempotency table and its key sources.
#include <catch2/catch.hpp>

#include <string>

#include "tests/unit/config/config_test_support.h"
#include "floodgate/config.h"

using namespace fg::config_test;
using Catch::Contains;
using Catch::StartsWith;

TEST_CASE("route idempotency parses", "[config][idempotency]") {
  SECTION("every key") {
    auto cfg = load_ok(idem_route(
        "{ key = [\"header:Idempotency-Key\", \"json:order.id\", \"form:out_trade_no\", \"query:k\", \"body\"], "
        "required = true, per_client = true, ttl = \"72h\", max_response_bytes = \"256KiB\" }"));
    const auto& idem = cfg->routes[0].idempotency;
    CHECK(idem.enabled);
    CHECK(idem.key == std::vector<std::string>{"header:Idempotency-Key", "json:order.id", "form:out_trade_no",
                                               "query:k", "body"});
    CHECK(idem.required);
    CHECK(idem.per_client);
    CHECK(idem.ttl_ms == 72ULL * 3600 * 1000);
    CHECK(idem.max_response_bytes == 256 * 1024);
  }
  SECTION("defaults: the Idempotency-Key header, optional, 24h, 1MiB") {
    auto cfg = load_ok(idem_route("{}"));
    const auto& idem = cfg->routes[0].idempotency;
    CHECK(idem.enabled);
    CHECK(idem.key == std::vector<std::string>{"header:Idempotency-Key"});
    CHECK_FALSE(idem.required);
    CHECK_FALSE(idem.per_client);
    CHECK(idem.ttl_ms == 24ULL * 3600 * 1000);
    CHECK(idem.max_response_bytes == 1024 * 1024);
  }
  SECTION("key may be a single string") {
    auto cfg = load_ok(idem_route("{ key = \"json:out_trade_no\", required = false }"));
    CHECK(cfg->routes[0].idempotency.key == std::vector<std::string>{"json:out_trade_no"});
    CHECK_FALSE(cfg->routes[0].idempotency.required);
  }
  SECTION("the order of sources is kept") {
    auto cfg = load_ok(idem_route("{ key = [\"form:out_trade_no\", \"json:out_trade_no\", \"header:X-Req\"] }"));
    CHECK(cfg->routes[0].idempotency.key ==
          std::vector<std::string>{"form:out_trade_no", "json:out_trade_no", "header:X-Req"});
  }
  SECTION("as a sub-table") {
    auto cfg = load_ok(route_with("\n[routes.idempotency]\nkey = [\"query:k\"]\nttl = \"30m\"\n") +
                       "\n[redis]\n");
    CHECK(cfg->routes[0].idempotency.key == std::vector<std::string>{"query:k"});
    CHECK(cfg->routes[0].idempotency.ttl_ms == 30 * 60 * 1000);
  }
  SECTION("bounds") {
    CHECK(load_ok(idem_route("{ ttl = \"1s\" }"))->routes[0].idempotency.ttl_ms == 1000);
    CHECK(load_ok(idem_route("{ ttl = \"30d\" }"))->routes[0].idempotency.ttl_ms == 30ULL * 24 * 3600 * 1000);
    CHECK(load_ok(idem_route("{ max_response_bytes = 1 }"))->routes[0].idempotency.max_response_bytes == 1);
    CHECK(load_ok(idem_route("{ max_response_bytes = \"64MiB\" }"))->routes[0].idempotency.max_response_bytes ==
          64ULL * 1024 * 1024);
  }
  SECTION("a route without it") {
    auto cfg = load_ok(kMinimal + "[redis]\n");
    CHECK_FALSE(cfg->routes[0].idempotency.enabled);
    CHECK(cfg->routes[0].idempotency.key.empty());
  }
}

TEST_CASE("route idempotency is validated", "[config][idempotency]") {
  SECTION("key sources") {
    CHECK(load_error(idem_route("{ key = [\"cookie:x\"] }")) ==
          "test.toml:11:24: routes[0].idempotency.key[0]: unknown idempotency key source \"cookie:x\"; use "
          "header:NAME, json:FIELD, form:FIELD, query:FIELD or body");
    CHECK(load_error(idem_route("{ key = \"cookie:x\" }")) ==
          "test.toml:11:23: routes[0].idempotency.key: unknown idempotency key source \"cookie:x\"; use "
          "header:NAME, json:FIELD, form:FIELD, query:FIELD or body");
    CHECK(load_error(idem_route("{ key = [\"header:Idempotency-Key\", \"header:X Key\"] }")) ==
          "test.toml:11:50: routes[0].idempotency.key[1]: idempotency key source \"header:X Key\": \"X Key\" is not "
          "a valid header name");
    CHECK(load_error(idem_route("{ key = [\"header:\"] }")) ==
          "test.toml:11:24: routes[0].idempotency.key[0]: idempotency key source \"header:\": missing header name "
          "after \"header:\"");
    CHECK(load_error(idem_route("{ key = [\"header:Idem:Key\"] }")) ==
          "test.toml:11:24: routes[0].idempotency.key[0]: idempotency key source \"header:Idem:Key\": \"Idem:Key\" "
          "is not a valid header name");
    CHECK_THAT(load_error(idem_route("{ key = [\"json:a..b\"] }")),
               StartsWith("test.toml:11:24: routes[0].idempotency.key[0]: idempotency key source \"json:a..b\": "
                          "a JSON path is"));
    CHECK_THAT(load_error(idem_route("{ key = [\"form:a=b\"] }")),
               StartsWith("test.toml:11:24: routes[0].idempotency.key[0]: idempotency key source \"form:a=b\": "
                          "a field name may not contain"));
    CHECK(load_error(idem_route("{ key = [\"body:x\"] }")) ==
          "test.toml:11:24: routes[0].idempotency.key[0]: idempotency key source \"body:x\": \"body\" takes no "
          "argument");
    CHECK_THAT(load_error(idem_route("{ key = [\"Idempotency-Key\"] }")),
               StartsWith("test.toml:11:24: routes[0].idempotency.key[0]: unknown idempotency key source "
                          "\"Idempotency-Key\""));
  }
  SECTION("every bad source is reported") {
    const std::string msg = load_error(idem_route("{ key = [\"cookie:x\", \"header:Ok\", \"json:\"] }"));
    CHECK_THAT(msg, Contains("test.toml:11:24: routes[0].idempotency.key[0]: unknown idempotency key source"));
    CHECK_THAT(msg, Contains("\ntest.toml:11:49: routes[0].idempotency.key[2]: idempotency key source \"json:\": "
                             "missing field after \"json:\""));
  }
  SECTION("an empty key array") {
    CHECK(load_error(idem_route("{ key = [] }")) ==
          "test.toml:11:23: routes[0].idempotency.key: needs at least one key source");
  }
  SECTION("types") {
    CHECK(load_error(idem_route("{ key = 1 }")) ==
          "test.toml:11:23: routes[0].idempotency.key: expected a string, got integer");
    CHECK(load_error(idem_route("{ key = [\"header:K\", 2] }")) ==
          "test.toml:11:36: routes[0].idempotency.key[1]: expected a string, got integer");
    CHECK(load_error(idem_route("{ key = { header = \"K\" } }")) ==
          "test.toml:11:23: routes[0].idempotency.key: expected a string, got table");
    CHECK(load_error(idem_route("{ required = \"yes\" }")) ==
          "test.toml:11:28: routes[0].idempotency.required: expected true or false, got string");
    CHECK(load_error(idem_route("{ per_client = 1 }")) ==
          "test.toml:11:30: routes[0].idempotency.per_client: expected true or false, got integer");
    CHECK(load_error(idem_route("{ ttl = 86400 }")) ==
          "test.toml:11:23: routes[0].idempotency.ttl: expected a duration string such as \"10s\", got integer");
    CHECK(load_error(idem_route("{ max_response_bytes = true }")) ==
          "test.toml:11:38: routes[0].idempotency.max_response_bytes: expected a size such as \"16KiB\" or an "
          "integer of bytes, got boolean");
    CHECK(load_error(idem_route("true")) == "test.toml:11:15: routes[0].idempotency: expected a table, got boolean");
  }
  SECTION("ranges") {
    CHECK(load_error(idem_route("{ ttl = \"500ms\" }")) ==
          "test.toml:11:23: routes[0].idempotency.ttl: must be between 1s and 30d, got \"500ms\"");
    CHECK(load_error(idem_route("{ ttl = \"31d\" }")) ==
          "test.toml:11:23: routes[0].idempotency.ttl: must be between 1s and 30d, got \"31d\"");
    CHECK_THAT(load_error(idem_route("{ ttl = \"1 day\" }")),
               StartsWith("test.toml:11:23: routes[0].idempotency.ttl: invalid duration \"1 day\""));
    CHECK(load_error(idem_route("{ max_response_bytes = 0 }")) ==
          "test.toml:11:38: routes[0].idempotency.max_response_bytes: must be between 1 and 67108864 bytes, got 0");
    CHECK(load_error(idem_route("{ max_response_bytes = \"65MiB\" }")) ==
          "test.toml:11:38: routes[0].idempotency.max_response_bytes: must be between 1 and 67108864 bytes, got "
          "68157440");
    CHECK(load_error(idem_route("{ max_response_bytes = -1 }")) ==
          "test.toml:11:38: routes[0].idempotency.max_response_bytes: invalid size -1: must not be negative");
  }
  SECTION("unknown keys") {
    CHECK(load_error(idem_route("{ keys = [\"header:K\"] }")) ==
          "test.toml:11:17: routes[0].idempotency.keys: unknown key (did you mean \"key\"?)");
    CHECK(load_error(idem_route("{ key = \"header:K\", scope = \"cluster\" }")) ==
          "test.toml:11:35: routes[0].idempotency.scope: unknown key");
  }
}

TEST_CASE("idempotency needs a [redis] table", "[config][idempotency]") {
  CHECK(load_error(route_with("idempotency = { key = [\"header:Idempotency-Key\"] }\n")) ==
        "test.toml:11:15: routes[0].idempotency: idempotency keys live in Redis: add a [redis] table "
        "(url = \"redis://host:port/db\")");
  // Named by its place in the file even when an earlier route is broken.
  const std::string msg = load_error(with_routes(
      "[[routes]]\nname = \"a\"\nmatch = { path = \"/a\" }\nupstream = \"nope\"\n"
      "[[routes]]\nname = \"b\"\nmatch = { path = \"/b\" }\nupstream = \"shop\"\nidempotency = {}\n"));
  CHECK_THAT(msg, Contains("test.toml:10:12: routes[0].upstream: unknown upstream \"nope\""));
  CHECK_THAT(msg, Contains("\ntest.toml:15:15: routes[1].idempotency: idempotency keys live in Redis"));
  // One error per route that uses it.
  const std::string two = load_error(with_routes(
      "[[routes]]\nname = \"a\"\nmatch = { path = \"/a\" }\nupstream = \"shop\"\nidempotency = {}\n"
      "[[routes]]\nname = \"b\"\nmatch = { path = \"/b\" }\nupstream = \"shop\"\nidempotency = { required = true }\n"));
  CHECK(two ==
        "test.toml:11:15: routes[0].idempotency: idempotency keys live in Redis: add a [redis] table "
        "(url = \"redis://host:port/db\")\n"
        "test.toml:16:15: routes[1].idempotency: idempotency keys live in Redis: add a [redis] table "
        "(url = \"redis://host:port/db\")");
  // Any [redis] table will do, even one that only keeps the defaults.
  CHECK(load_ok(route_with("idempotency = {}\n") + "[redis]\n")->routes[0].idempotency.enabled);
  // A [redis] table that is not a table is reported once, as such.
  CHECK(load_error("redis = 1\n" + route_with("idempotency = {}\n")) ==
        "test.toml:1:9: redis: expected a table, got integer");
}

TEST_CASE("idempotency key sources are parsed once, in order", "[config][idempotency]") {
  using Kind = fg::idempotency::KeySource::Kind;
  auto cfg = load_ok(idem_route("{ key = [\"header:X-Key\", \"json:order.id\", \"form:k\", \"query:q\", \"body\"] }"));
  const auto& s = cfg->routes.at(0).idempotency.sources;
  REQUIRE(s.size() == 5);
  CHECK((s[0].kind == Kind::kHeader && s[0].name == "X-Key"));
  CHECK((s[1].kind == Kind::kJson && s[1].name == "order.id"));
  CHECK((s[2].kind == Kind::kForm && s[2].name == "k"));
  CHECK((s[3].kind == Kind::kQuery && s[3].name == "q"));
  CHECK((s[4].kind == Kind::kBody && s[4].name.empty()));
  auto dflt = load_ok(idem_route("{}"));
  REQUIRE(dflt->routes.at(0).idempotency.sources.size() == 1);
  CHECK(dflt->routes.at(0).idempotency.sources[0].kind == Kind::kHeader);
  CHECK(dflt->routes.at(0).idempotency.sources[0].name == "Idempotency-Key");
}
