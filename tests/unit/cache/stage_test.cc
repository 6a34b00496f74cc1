// The cache stage without a socket: hits and stale hits with their headers,
// coalescing (one leader, waiters woken when it ends), the store decision.
#include "cache/stage.h"

#include <catch2/catch.hpp>

#include <string>

namespace {

using fg::cache::Hit;
using fg::cache::Recorded;
using fg::cache::RouteSettings;
using fg::cache::Stage;

RouteSettings route() {
  RouteSettings r;
  r.name = "catalog";
  r.max_bytes = 1 << 20;
  r.max_entry_bytes = 1 << 16;
  r.ttl_ms = 10'000;
  r.stale_if_error_ms = 60'000;
  return r;
}

}  // namespace

TEST_CASE("a stored answer is a hit while fresh, then only a stale hit within stale_if_error") {
  Stage s;
  Hit hit;
  CHECK_FALSE(s.find(route(), "GET /a", 0, true, &hit));
  CHECK(s.store(route(), "GET /a", 200, "OK", "Content-Type: text/plain\r\n", "hello", Recorded{}, false, 1000));
  REQUIRE(s.find(route(), "GET /a", 3500, false, &hit));
  CHECK(hit.fresh);
  CHECK(hit.entry->body == "hello");
  CHECK(hit.header_lines == "Age: 2\r\nX-Cache: HIT\r\n");
  CHECK_FALSE(s.find(route(), "GET /a", 12'000, false, &hit));
  REQUIRE(s.find(route(), "GET /a", 12'000, true, &hit));
  CHECK_FALSE(hit.fresh);
  CHECK(hit.header_lines == "Age: 11\r\nX-Cache: STALE\r\n");
  CHECK_FALSE(s.find(route(), "GET /a", 80'000, true, &hit));
}

TEST_CASE("the upstream's Cache-Control, Set-Cookie and the request's Authorization decide the store") {
  Stage s;
  Recorded rec;
  rec.note("cache-control", "no-store");
  CHECK_FALSE(s.store(route(), "k", 200, "OK", "", "x", rec, false, 0));
  Recorded cookie;
  cookie.note("Set-Cookie", "a=b");
  CHECK(cookie.set_cookie);
  CHECK_FALSE(s.store(route(), "k", 200, "OK", "", "x", cookie, false, 0));
  CHECK_FALSE(s.store(route(), "k", 200, "OK", "", "x", Recorded{}, true, 0));
  Recorded age;
  age.note("Cache-Control", "public");
  age.note("Cache-Control", "max-age=2");
  CHECK(age.cache_control == "public,max-age=2");
  CHECK(s.store(route(), "k", 200, "OK", "", "x", age, false, 0));
  Hit hit;
  CHECK(s.find(route(), "k", 1999, false, &hit));
  CHECK_FALSE(s.find(route(), "k", 2000, false, &hit));
}

TEST_CASE("concurrent misses: one leads, the others wait and are woken when it ends") {
  Stage s;
  uint64_t lead = 0, w1 = 0, w2 = 0;
  CHECK(s.join(route(), "k", &lead) == Stage::Join::kLead);
  CHECK(s.join(route(), "k", &w1) == Stage::Join::kWait);
  CHECK(s.join(route(), "k", &w2) == Stage::Join::kWait);
  int woken = 0;
  s.wait(route(), w1, [&] { woken++; });
  s.wait(route(), w2, [&] {
    woken++;
    // A woken waiter may lead the next fetch at once.
    uint64_t again = 0;
    CHECK(s.join(route(), "k", &again) == Stage::Join::kLead);
  });
  s.finish(route(), "k");
  CHECK(woken == 2);
  s.finish(route(), "k");
  CHECK(woken == 2);
}

TEST_CASE("each route has its own cache whose limits follow the settings") {
  Stage s;
  RouteSettings small = route();
  small.max_entry_bytes = 4;
  CHECK_FALSE(s.store(small, "k", 200, "OK", "", "too long", Recorded{}, false, 0));
  RouteSettings other = route();
  other.name = "other";
  CHECK(s.store(other, "k", 200, "OK", "", "too long", Recorded{}, false, 0));
  CHECK(s.cache(small).max_entry_bytes() == 4);
  CHECK(s.cache(route()).max_entry_bytes() == (1u << 16));
}
