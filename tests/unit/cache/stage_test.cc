// The cache stage without a socket: hits and stale hits with their headers,
// coalescing (one leader, waiters woken when it ends, on their own thread), the
// store decision.
#include "cache/stage.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <thread>

namespace {

using fg::cache::Hit;
using fg::cache::Recorded;
using fg::cache::RouteSettings;
using fg::cache::SharedCache;
using fg::cache::Stage;

RouteSettings route() {
  RouteSettings r;
  r.ttl_ms = 10'000;
  r.stale_if_error_ms = 60'000;
  return r;
}

}  // namespace

TEST_CASE("a stored answer is a hit while fresh, then only a stale hit within stale_if_error") {
  SharedCache c(1 << 20, 1 << 16);
  Stage s;
  Hit hit;
  CHECK_FALSE(s.find(c, "GET /a", 0, true, &hit));
  CHECK(s.store(c, route(), "GET /a", 200, "OK", "Content-Type: text/plain\r\n", "hello", Recorded{}, false, 1000));
  REQUIRE(s.find(c, "GET /a", 3500, false, &hit));
  CHECK(hit.fresh);
  CHECK(hit.entry->body == "hello");
  CHECK(hit.header_lines == "Age: 2\r\nX-Cache: HIT\r\n");
  CHECK_FALSE(s.find(c, "GET /a", 12'000, false, &hit));
  REQUIRE(s.find(c, "GET /a", 12'000, true, &hit));
  CHECK_FALSE(hit.fresh);
  CHECK(hit.header_lines == "Age: 11\r\nX-Cache: STALE\r\n");
  CHECK_FALSE(s.find(c, "GET /a", 80'000, true, &hit));
}

TEST_CASE("the upstream's Cache-Control, Set-Cookie and the request's Authorization decide the store") {
  SharedCache c(1 << 20, 1 << 16);
  Stage s;
  Recorded rec;
  rec.note("cache-control", "no-store");
  CHECK_FALSE(s.store(c, route(), "k", 200, "OK", "", "x", rec, false, 0));
  Recorded cookie;
  cookie.note("Set-Cookie", "a=b");
  CHECK(cookie.set_cookie);
  CHECK_FALSE(s.store(c, route(), "k", 200, "OK", "", "x", cookie, false, 0));
  CHECK_FALSE(s.store(c, route(), "k", 200, "OK", "", "x", Recorded{}, true, 0));
  Recorded age;
  age.note("Cache-Control", "public");
  age.note("Cache-Control", "max-age=2");
  CHECK(age.cache_control == "public,max-age=2");
  CHECK(s.store(c, route(), "k", 200, "OK", "", "x", age, false, 0));
  Hit hit;
  CHECK(s.find(c, "k", 1999, false, &hit));
  CHECK_FALSE(s.find(c, "k", 2000, false, &hit));
}

TEST_CASE("concurrent misses: one leads, the others wait and are woken when it ends") {
  SharedCache c(1 << 20, 1 << 16);
  Stage s;
  uint64_t lead = 0, w1 = 0, w2 = 0;
  CHECK(s.join(c, "k", &lead) == Stage::Join::kLead);
  CHECK(s.join(c, "k", &w1) == Stage::Join::kWait);
  CHECK(s.join(c, "k", &w2) == Stage::Join::kWait);
  int woken = 0;
  s.wait(w1, [&] { woken++; });
  s.wait(w2, [&] {
    woken++;
    // A woken waiter may lead the next fetch at once.
    uint64_t again = 0;
    CHECK(s.join(c, "k", &again) == Stage::Join::kLead);
  });
  s.finish(c, "k");
  CHECK(woken == 2);
  CHECK(s.waiting() == 0);
  s.finish(c, "k");
  CHECK(woken == 2);
}

TEST_CASE("a hit keeps its entry after the cache replaces or drops it") {
  SharedCache c(1 << 20, 1 << 16);
  Stage s;
  CHECK(s.store(c, route(), "k", 200, "OK", "", "first", Recorded{}, false, 0));
  Hit hit;
  REQUIRE(s.find(c, "k", 1, false, &hit));
  CHECK(s.store(c, route(), "k", 200, "OK", "", "second", Recorded{}, false, 2));
  c.clear();
  CHECK(hit.entry->body == "first");
  CHECK(c.bytes() == 0);
}

TEST_CASE("a fetch led by one worker wakes the waiters of another worker on that worker's thread") {
  SharedCache c(1 << 20, 1 << 16);
  std::atomic<int> signals{0};
  Stage leader_worker;
  Stage other_worker([&] { signals++; });
  uint64_t lead = 0, w = 0;
  REQUIRE(leader_worker.join(c, "k", &lead) == Stage::Join::kLead);
  REQUIRE(other_worker.join(c, "k", &w) == Stage::Join::kWait);
  int woken = 0;
  bool hit_when_woken = false;
  other_worker.wait(w, [&] {
    woken++;
    Hit hit;
    hit_when_woken = other_worker.find(c, "k", 5, false, &hit) && hit.entry->body == "page";
  });
  // The leader's worker stores and finishes on its own thread.
  std::thread t([&] {
    CHECK(leader_worker.store(c, route(), "k", 200, "OK", "", "page", Recorded{}, false, 1));
    leader_worker.finish(c, "k");
  });
  t.join();
  // Posted, not run: the waiter runs only on its own loop, when it delivers.
  CHECK(signals == 1);
  CHECK(woken == 0);
  other_worker.deliver();
  CHECK(woken == 1);
  CHECK(hit_when_woken);
  other_worker.deliver();
  CHECK(woken == 1);
}

TEST_CASE("a stopped worker's waiters are not signalled any more") {
  SharedCache c(1 << 20, 1 << 16);
  int signals = 0;
  Stage leader_worker;
  Stage other_worker([&] { signals++; });
  uint64_t lead = 0, w = 0;
  REQUIRE(leader_worker.join(c, "k", &lead) == Stage::Join::kLead);
  REQUIRE(other_worker.join(c, "k", &w) == Stage::Join::kWait);
  bool woken = false;
  other_worker.wait(w, [&] { woken = true; });
  other_worker.close();
  leader_worker.finish(c, "k");
  other_worker.deliver();
  CHECK(signals == 0);
  CHECK_FALSE(woken);
  CHECK(c.in_flight() == 0);
}
