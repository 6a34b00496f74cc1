// Config::match_route: method filter, exact paths, prefix segment boundaries
// and first-match-wins, checked as tables of request -> expected route.
#include <catch2/catch.hpp>

#include <string>

#include "floodgate/config.h"

using fg::Config;

namespace {

struct Case {
  const char* method;
  const char* path;
  int expected;
};

void add_route(Config& cfg, std::string name, std::vector<std::string> methods, std::string path, bool is_prefix) {
  fg::RouteConfig r;
  r.name = std::move(name);
  r.match.methods = std::move(methods);
  r.match.path = std::move(path);
  r.match.is_prefix = is_prefix;
  r.upstream = "shop";
  cfg.routes.push_back(std::move(r));
}

void check_table(const Config& cfg, std::initializer_list<Case> cases) {
  for (const Case& c : cases) {
    INFO(c.method << " " << c.path);
    CHECK(cfg.match_route(c.method, c.path) == c.expected);
  }
}

}  // namespace

TEST_CASE("the example routes", "[config]") {
  Config cfg;
  add_route(cfg, "orders", {"POST"}, "/api/orders", false);
  add_route(cfg, "catalog", {"GET"}, "/api/products", true);
  add_route(cfg, "notify", {"POST"}, "/notify/", true);
  add_route(cfg, "shop", {}, "/", true);
  check_table(cfg, {
                       {"POST", "/api/orders", 0},
                       {"GET", "/api/orders", 3},    // method filter: falls through to the catch-all
                       {"POST", "/api/orders/", 3},  // exact means exact
                       {"POST", "/api/orders/1", 3},
                       {"post", "/api/orders", 3},   // methods are case-sensitive
                       {"GET", "/api/products", 1},
                       {"GET", "/api/products/", 1},
                       {"GET", "/api/products/7", 1},
                       {"GET", "/api/products/7/reviews", 1},
                       {"GET", "/api/productsX", 3},  // not a segment boundary
                       {"GET", "/api/product", 3},
                       {"HEAD", "/api/products", 3},
                       {"POST", "/notify/alipay", 2},
                       {"POST", "/notify/", 2},
                       {"POST", "/notify", 3},  // the prefix ends in '/', so the bare name is not under it
                       {"GET", "/", 3},
                       {"DELETE", "/anything/at/all", 3},
                   });
}

TEST_CASE("first match wins", "[config]") {
  Config cfg;
  add_route(cfg, "a", {}, "/api", true);
  add_route(cfg, "b", {}, "/api/v2", true);
  add_route(cfg, "c", {"GET"}, "/x", false);
  add_route(cfg, "d", {"GET", "POST"}, "/x", false);
  check_table(cfg, {
                       {"GET", "/api/v2/users", 0},
                       {"GET", "/api", 0},
                       {"GET", "/x", 2},
                       {"POST", "/x", 3},
                       {"PUT", "/x", -1},
                   });
}

TEST_CASE("no route matches", "[config]") {
  Config empty;
  CHECK(empty.match_route("GET", "/") == -1);

  Config cfg;
  add_route(cfg, "a", {"GET"}, "/a", true);
  check_table(cfg, {
                       {"GET", "/b", -1},
                       {"GET", "", -1},
                       {"GET", "/ab", -1},
                       {"POST", "/a", -1},
                       {"", "/a", -1},
                   });
}

TEST_CASE("prefix boundaries", "[config]") {
  Config cfg;
  add_route(cfg, "slash", {}, "/static/", true);
  add_route(cfg, "bare", {}, "/img", true);
  add_route(cfg, "exact", {}, "/img2", false);
  check_table(cfg, {
                       {"GET", "/static/", 0},
                       {"GET", "/static/a.css", 0},
                       {"GET", "/static", -1},
                       {"GET", "/staticX", -1},
                       {"GET", "/img", 1},
                       {"GET", "/img/", 1},
                       {"GET", "/img/a.png", 1},
                       {"GET", "/img2", 2},
                       {"GET", "/img.png", -1},
                       {"GET", "/im", -1},
                   });
}
