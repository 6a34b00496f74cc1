// The dead-letter endpoints' query parsing and the answers that need no Redis (the
// Redis side is in tests/integration/test_dead_letters.py).
#include "net/dead_letter_admin.h"

#include <catch2/catch.hpp>
#include <uv.h>

#include <memory>
#include <string>

#include "floodgate/config.h"

using fg::net::query_value;

TEST_CASE("query_value finds a parameter by exact name") {
  std::string v;
  CHECK(query_value("route=notify&ticket=abc", "route", &v));
  CHECK(v == "notify");
  CHECK(query_value("route=notify&ticket=abc", "ticket", &v));
  CHECK(v == "abc");
  CHECK(query_value("a=1&limit=", "limit", &v));
  CHECK(v.empty());
  CHECK(query_value("flag&x=2", "flag", &v));
  CHECK(v.empty());
  CHECK_FALSE(query_value("routes=x&xroute=y", "route", &v));
  CHECK_FALSE(query_value("", "route", &v));
}

TEST_CASE("dead-letter requests for a route that is not queued, or without Redis, are refused at once") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    fg::net::DeadLetterAdmin admin(&loop, nullptr);
    fg::Config cfg;
    fg::RouteConfig plain;
    plain.name = "plain";
    cfg.routes.push_back(plain);
    fg::RouteConfig queued;
    queued.name = "orders";
    queued.store_and_forward = true;
    cfg.routes.push_back(queued);
    int status = 0;
    std::string body;
    auto answer = [&](int s, std::string b) {
      status = s;
      body = std::move(b);
    };
    admin.list(cfg, "route=plain", answer);
    CHECK(status == 404);
    CHECK(body.find("unknown_route") != std::string::npos);
    admin.list(cfg, "offset=3", answer);
    CHECK(status == 400);
    // Without [redis] there is no connection: 503, not a hang.
    admin.redeliver(cfg, "route=orders", answer);
    CHECK(status == 503);
    CHECK(body.find("redis_unavailable") != std::string::npos);
    admin.close();
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}
