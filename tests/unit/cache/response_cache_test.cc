// Response cache: Cache-Control parsing, the storability rules, freshness timestamps, the
// byte-bounded LRU (exact accounting, eviction order, refusals, reload limits) and the
// coalescing table (leader/waiter roles, finish, leave, the per-key waiter bound).
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "cache/response_cache.h"

using fg::cache::age_seconds;
using fg::cache::cache_key;
using fg::cache::CachedResponse;
using fg::cache::Directives;
using fg::cache::freshness_ms;
using fg::cache::is_fresh;
using fg::cache::is_usable_stale;
using fg::cache::parse_cache_control;
using fg::cache::PendingMap;
using fg::cache::ResponseCache;
using fg::cache::set_freshness;
using fg::cache::storable;

namespace {

constexpr size_t kOverhead = ResponseCache::kEntryOverhead;

CachedResponse response(std::string body, std::string headers = "", std::string reason = "OK") {
  CachedResponse r;
  r.status = 200;
  r.reason = std::move(reason);
  r.header_lines = std::move(headers);
  r.body = std::move(body);
  return r;
}

// An entry charged exactly `bytes` under `key` (the body makes up the difference).
CachedResponse sized(const std::string& key, size_t bytes) {
  CachedResponse r = response("", "", "");
  REQUIRE(bytes >= key.size() + kOverhead);
  r.body.assign(bytes - key.size() - kOverhead, 'x');
  REQUIRE(ResponseCache::entry_bytes(key, r) == bytes);
  return r;
}

}  // namespace

TEST_CASE("Cache-Control parsing", "[cache]") {
  struct Row {
    const char* value;
    bool no_store, private_, no_cache;
    int64_t max_age;
  };
  const Row rows[] = {
      {"", false, false, false, -1},
      {"no-store", true, false, false, -1},
      {"NO-STORE", true, false, false, -1},
      {"private", false, true, false, -1},
      {"Private, max-age=30", false, true, false, 30},
      {"no-cache", false, false, true, -1},
      {"max-age=60", false, false, false, 60},
      {"MAX-AGE=60", false, false, false, 60},
      {"  max-age = 60  ", false, false, false, 60},
      {"max-age=0", false, false, false, 0},
      {"max-age=\"10\"", false, false, false, 10},
      {"s-maxage=120", false, false, false, 120},
      {"max-age=60, s-maxage=5", false, false, false, 5},
      {"s-maxage=5, max-age=60", false, false, false, 5},
      {"public, max-age=300, must-revalidate", false, false, false, 300},
      // Bogus values leave max-age absent; a later valid one still counts.
      {"max-age=abc", false, false, false, -1},
      {"max-age=-5", false, false, false, -1},
      {"max-age=", false, false, false, -1},
      {"max-age", false, false, false, -1},
      {"max-age=1.5", false, false, false, -1},
      {"max-age=\"\"", false, false, false, -1},
      {"max-age=abc, max-age=7", false, false, false, 7},
      {"s-maxage=bogus, max-age=9", false, false, false, 9},
      // The first valid occurrence wins.
      {"max-age=7, max-age=99", false, false, false, 7},
      // Huge values clamp to 2^31 seconds instead of overflowing.
      {"max-age=99999999999999999999999999999", false, false, false, int64_t{1} << 31},
      {"max-age=2147483647", false, false, false, 2147483647},
      // Garbage and empty members are skipped.
      {",,, ;;, =, foo=bar, max-age=12,", false, false, false, 12},
      {"nostore, no_store, no-storex", false, false, false, -1},
      // Quoted commas do not split; qualified forms count as the plain directive.
      {"private=\"set-cookie, x-user\", max-age=40", false, true, false, 40},
      {"no-cache=\"set-cookie\"", false, false, true, -1},
      {"community=\"UCI, max-age=1\", max-age=2", false, false, false, 2},
      {"foo=\"a\\\"b, no-store\", max-age=3", false, false, false, 3},
      // An unterminated quote swallows the rest.
      {"max-age=4, foo=\"unterminated, no-store", false, false, false, 4},
      // Several Cache-Control lines joined with a comma.
      {"max-age=60, no-store", true, false, false, 60},
      {"public,max-age=600,private", false, true, false, 600},
      {"\tno-store\t,\tmax-age=1", true, false, false, 1},
  };
  for (const Row& row : rows) {
    INFO("Cache-Control: " << row.value);
    Directives d = parse_cache_control(row.value);
    CHECK(d.no_store == row.no_store);
    CHECK(d.private_ == row.private_);
    CHECK(d.no_cache == row.no_cache);
    CHECK(d.max_age == row.max_age);
  }
}

TEST_CASE("storable follows status, directives, cookies and Authorization", "[cache]") {
  const Directives plain;
  for (int status : {200, 203, 204, 301, 404, 410}) {
    INFO("status " << status);
    CHECK(storable(status, plain, false, false));
  }
  for (int status : {100, 201, 202, 206, 300, 302, 303, 304, 307, 308, 400, 401, 403, 405, 429, 500, 502,
                     503, 504}) {
    INFO("status " << status);
    CHECK_FALSE(storable(status, plain, false, false));
  }
  CHECK_FALSE(storable(200, parse_cache_control("no-store"), false, false));
  CHECK_FALSE(storable(200, parse_cache_control("private"), false, false));
  CHECK_FALSE(storable(200, parse_cache_control("no-cache"), false, false));
  CHECK_FALSE(storable(200, parse_cache_control("max-age=60, no-store"), false, false));
  CHECK(storable(200, parse_cache_control("public, max-age=60"), false, false));
  CHECK(storable(200, parse_cache_control("max-age=0"), false, false));
  CHECK_FALSE(storable(200, plain, /*has_set_cookie=*/true, false));
  CHECK_FALSE(storable(200, plain, false, /*has_authorization_request=*/true));
  CHECK_FALSE(storable(200, parse_cache_control("s-maxage=60"), false, true));
}

TEST_CASE("freshness: max-age or the route ttl, then the stale-if-error window", "[cache]") {
  const uint64_t now = 1'000'000;
  CHECK(freshness_ms(parse_cache_control("max-age=60"), 5000) == 60000);
  CHECK(freshness_ms(parse_cache_control("s-maxage=2, max-age=60"), 5000) == 2000);
  CHECK(freshness_ms(parse_cache_control("max-age=0"), 5000) == 0);
  CHECK(freshness_ms(parse_cache_control(""), 5000) == 5000);
  CHECK(freshness_ms(parse_cache_control("max-age=bogus"), 5000) == 5000);

  CachedResponse r = response("body");
  set_freshness(r, parse_cache_control("max-age=10"), now, 5000, 30000);
  CHECK(r.stored_ms == now);
  CHECK(r.fresh_until_ms == now + 10000);
  CHECK(r.stale_until_ms == now + 40000);

  CHECK(is_fresh(r, now));
  CHECK(is_fresh(r, now + 9999));
  CHECK_FALSE(is_fresh(r, now + 10000));
  CHECK(is_usable_stale(r, now + 10000));
  CHECK(is_usable_stale(r, now + 39999));
  CHECK_FALSE(is_usable_stale(r, now + 40000));
  CHECK(age_seconds(r, now) == 0);
  CHECK(age_seconds(r, now + 1999) == 1);
  CHECK(age_seconds(r, now - 5) == 0);

  SECTION("route ttl without max-age, no stale window") {
    set_freshness(r, Directives{}, now, 5000, 0);
    CHECK(r.fresh_until_ms == now + 5000);
    CHECK(r.stale_until_ms == now + 5000);
    CHECK_FALSE(is_usable_stale(r, now + 5000));
  }
  SECTION("max-age=0 is immediately stale but usable on error") {
    set_freshness(r, parse_cache_control("max-age=0"), now, 5000, 1000);
    CHECK_FALSE(is_fresh(r, now));
    CHECK(is_usable_stale(r, now + 999));
  }
  SECTION("the sums saturate") {
    const uint64_t max = std::numeric_limits<uint64_t>::max();
    set_freshness(r, parse_cache_control("max-age=99999999999999"), max - 10, 0, max);
    CHECK(r.fresh_until_ms == max);
    CHECK(r.stale_until_ms == max);
  }
}

TEST_CASE("cache_key is the method and the full target", "[cache]") {
  CHECK(cache_key("GET", "/items?id=7") == "GET\n/items?id=7");
  CHECK(cache_key("HEAD", "/items?id=7") == "HEAD\n/items?id=7");
  CHECK(cache_key("GET", "/items?id=7") != cache_key("GET", "/items?id=8"));
  std::string reused = "HEAD\n/an/earlier/and/longer/target";
  cache_key("GET", "/a", &reused);
  CHECK(reused == "GET\n/a");
  CHECK(cache_key("GET", "/a") != cache_key("GET", "/a?"));
  CHECK(cache_key("GET", "") == "GET\n");
}

TEST_CASE("ResponseCache accounts bytes exactly", "[cache]") {
  ResponseCache cache(1 << 20, 1 << 16);
  const std::string k = cache_key("GET", "/a");
  CachedResponse r = response("0123456789", "Content-Type: text/plain\r\n", "OK");
  const size_t expected = k.size() + 2 + 26 + 10 + kOverhead;
  CHECK(ResponseCache::entry_bytes(k, r) == expected);

  REQUIRE(cache.put(k, r));
  CHECK(cache.entries() == 1);
  CHECK(cache.bytes() == expected);

  // Replacing an entry charges only the new one.
  CachedResponse bigger = response(std::string(100, 'b'), "", "OK");
  REQUIRE(cache.put(k, bigger));
  CHECK(cache.entries() == 1);
  CHECK(cache.bytes() == k.size() + 2 + 100 + kOverhead);
  const CachedResponse* hit = cache.get(k);
  REQUIRE(hit != nullptr);
  CHECK(hit->body == std::string(100, 'b'));

  const std::string k2 = cache_key("GET", "/b");
  REQUIRE(cache.put(k2, r));
  CHECK(cache.bytes() == (k.size() + 2 + 100 + kOverhead) + (k2.size() + 2 + 26 + 10 + kOverhead));

  CHECK(cache.erase(k));
  CHECK_FALSE(cache.erase(k));
  CHECK(cache.get(k) == nullptr);
  CHECK(cache.bytes() == k2.size() + 2 + 26 + 10 + kOverhead);
  cache.clear();
  CHECK(cache.entries() == 0);
  CHECK(cache.bytes() == 0);
  CHECK(cache.get(k2) == nullptr);
}

TEST_CASE("ResponseCache evicts least recently used entries down to max_bytes", "[cache]") {
  // Room for exactly four 200-byte entries.
  ResponseCache cache(800, 400);
  for (const char* k : {"a", "b", "c", "d"}) REQUIRE(cache.put(k, sized(k, 200)));
  CHECK(cache.bytes() == 800);
  CHECK(cache.entries() == 4);
  CHECK(cache.evictions() == 0);

  SECTION("insertion order without reads") {
    REQUIRE(cache.put("e", sized("e", 200)));
    CHECK(cache.get("a") == nullptr);
    CHECK(cache.bytes() == 800);
    CHECK(cache.evictions() == 1);
    REQUIRE(cache.put("f", sized("f", 200)));
    CHECK(cache.get("b") == nullptr);
    CHECK(cache.get("c") != nullptr);
  }
  SECTION("get() refreshes recency") {
    REQUIRE(cache.get("a") != nullptr);  // order, LRU first: b c d a
    REQUIRE(cache.put("e", sized("e", 200)));
    CHECK(cache.get("b") == nullptr);
    CHECK(cache.get("a") != nullptr);  // order: c d e a
    REQUIRE(cache.put("f", sized("f", 200)));
    CHECK(cache.get("c") == nullptr);
    CHECK(cache.get("d") != nullptr);
    CHECK(cache.get("e") != nullptr);
    CHECK(cache.get("a") != nullptr);
    CHECK(cache.get("f") != nullptr);
  }
  SECTION("replacing an entry makes it most recent") {
    REQUIRE(cache.put("a", sized("a", 200)));  // order: b c d a
    REQUIRE(cache.put("e", sized("e", 200)));
    CHECK(cache.get("b") == nullptr);
    CHECK(cache.get("a") != nullptr);
  }
  SECTION("one large entry evicts as many as needed") {
    REQUIRE(cache.put("big", sized("big", 390)));  // needs two 200-byte slots freed
    CHECK(cache.get("a") == nullptr);
    CHECK(cache.get("b") == nullptr);
    CHECK(cache.get("c") != nullptr);
    CHECK(cache.entries() == 3);
    CHECK(cache.bytes() == 200 + 200 + 390);
    CHECK(cache.evictions() == 2);
  }
  SECTION("an entry of exactly max_entry_bytes fits") {
    REQUIRE(cache.put("big", sized("big", 400)));
    CHECK(cache.bytes() == 800);
    CHECK(cache.entries() == 3);
  }
  CHECK(cache.bytes() <= 800);
}

TEST_CASE("ResponseCache refuses oversized entries", "[cache]") {
  ResponseCache cache(1000, 300);
  REQUIRE(cache.put("a", sized("a", 200)));
  REQUIRE(cache.put("b", sized("b", 300)));

  CHECK_FALSE(cache.put("c", sized("c", 301)));
  CHECK(cache.get("c") == nullptr);
  CHECK(cache.entries() == 2);
  CHECK(cache.bytes() == 500);
  CHECK(cache.evictions() == 0);

  // A refused replacement drops the older answer of that key too.
  CHECK_FALSE(cache.put("a", sized("a", 301)));
  CHECK(cache.get("a") == nullptr);
  CHECK(cache.bytes() == 300);

  // An entry larger than the whole cache is refused even under a generous entry limit.
  ResponseCache small(250, 10'000);
  CHECK_FALSE(small.put("x", sized("x", 251)));
  CHECK(small.put("x", sized("x", 250)));
  CHECK(small.bytes() == 250);

  ResponseCache zero(0, 0);
  CHECK_FALSE(zero.put("x", response("")));
  CHECK(zero.entries() == 0);
}

TEST_CASE("ResponseCache returns stale entries; the caller decides", "[cache]") {
  ResponseCache cache(1 << 20, 1 << 16);
  CachedResponse r = response("hello");
  set_freshness(r, parse_cache_control("max-age=1"), 1000, 0, 5000);
  REQUIRE(cache.put("GET\n/x", r));
  const CachedResponse* hit = cache.get("GET\n/x");
  REQUIRE(hit != nullptr);
  CHECK(is_fresh(*hit, 1500));
  CHECK_FALSE(is_fresh(*hit, 2000));
  CHECK(is_usable_stale(*hit, 6999));
  CHECK_FALSE(is_usable_stale(*hit, 7000));
  CHECK(cache.get("GET\n/x") != nullptr);  // still there long after
  CHECK(hit->status == 200);
  CHECK(hit->reason == "OK");
  CHECK(hit->body == "hello");
}

TEST_CASE("ResponseCache set_limits applies new limits at once", "[cache]") {
  ResponseCache cache(1000, 400);
  REQUIRE(cache.put("a", sized("a", 300)));
  REQUIRE(cache.put("b", sized("b", 150)));
  REQUIRE(cache.put("c", sized("c", 200)));
  REQUIRE(cache.put("d", sized("d", 150)));
  CHECK(cache.bytes() == 800);

  SECTION("a lower entry limit drops the entries now too large") {
    cache.set_limits(1000, 180);
    CHECK(cache.get("a") == nullptr);
    CHECK(cache.get("c") == nullptr);
    CHECK(cache.entries() == 2);
    CHECK(cache.bytes() == 300);
    CHECK_FALSE(cache.put("e", sized("e", 181)));
  }
  SECTION("a lower byte cap evicts in LRU order") {
    REQUIRE(cache.get("a") != nullptr);  // order, LRU first: b c d a
    cache.set_limits(500, 400);
    CHECK(cache.get("b") == nullptr);
    CHECK(cache.get("c") == nullptr);
    CHECK(cache.get("d") != nullptr);
    CHECK(cache.get("a") != nullptr);
    CHECK(cache.bytes() == 450);
    CHECK(cache.evictions() == 2);
  }
  SECTION("raising the limits keeps everything") {
    cache.set_limits(5000, 5000);
    CHECK(cache.entries() == 4);
    CHECK(cache.bytes() == 800);
    CHECK(cache.max_bytes() == 5000);
    CHECK(cache.max_entry_bytes() == 5000);
  }
}

TEST_CASE("PendingMap coalesces concurrent fetches of a key", "[cache]") {
  PendingMap pending;
  CHECK(pending.max_waiters() == PendingMap::kDefaultMaxWaiters);
  CHECK_FALSE(pending.in_flight("k"));
  CHECK(pending.join("k", 1) == PendingMap::Join::kLeader);
  CHECK(pending.in_flight("k"));
  CHECK(pending.waiting("k") == 0);
  CHECK(pending.join("k", 2) == PendingMap::Join::kWaiter);
  CHECK(pending.join("k", 3) == PendingMap::Join::kWaiter);
  CHECK(pending.join("k", 4) == PendingMap::Join::kWaiter);
  CHECK(pending.waiting("k") == 3);

  // Another key is independent.
  CHECK(pending.join("other", 9) == PendingMap::Join::kLeader);
  CHECK(pending.keys() == 2);
  CHECK(pending.waiting("other") == 0);

  CHECK(pending.leave("k", 3));
  CHECK_FALSE(pending.leave("k", 3));
  CHECK_FALSE(pending.leave("missing", 3));
  CHECK(pending.waiting("k") == 2);

  CHECK(pending.finish("k") == std::vector<uint64_t>{2, 4});
  CHECK_FALSE(pending.in_flight("k"));
  CHECK(pending.waiting("k") == 0);
  CHECK(pending.finish("k").empty());
  CHECK(pending.keys() == 1);

  // After finish the next request leads a new fetch.
  CHECK(pending.join("k", 5) == PendingMap::Join::kLeader);
  CHECK(pending.finish("k").empty());
  CHECK(pending.finish("other").empty());
  CHECK(pending.keys() == 0);
}

TEST_CASE("PendingMap bounds the waiters per key", "[cache]") {
  SECTION("a small bound") {
    PendingMap pending(2);
    CHECK(pending.join("k", 1) == PendingMap::Join::kLeader);
    CHECK(pending.join("k", 2) == PendingMap::Join::kWaiter);
    CHECK(pending.join("k", 3) == PendingMap::Join::kWaiter);
    CHECK(pending.join("k", 4) == PendingMap::Join::kOverflow);
    CHECK(pending.join("k", 5) == PendingMap::Join::kOverflow);
    CHECK(pending.waiting("k") == 2);
    // A departure frees a place.
    CHECK(pending.leave("k", 2));
    CHECK(pending.join("k", 6) == PendingMap::Join::kWaiter);
    // Overflowing callers were never recorded, so finish wakes only the waiters.
    CHECK(pending.finish("k") == std::vector<uint64_t>{3, 6});
  }
  SECTION("the default bound") {
    PendingMap pending;
    REQUIRE(pending.join("k", 0) == PendingMap::Join::kLeader);
    for (uint64_t id = 1; id <= PendingMap::kDefaultMaxWaiters; ++id) {
      REQUIRE(pending.join("k", id) == PendingMap::Join::kWaiter);
    }
    CHECK(pending.join("k", 99999) == PendingMap::Join::kOverflow);
    CHECK(pending.waiting("k") == PendingMap::kDefaultMaxWaiters);
    std::vector<uint64_t> woken = pending.finish("k");
    REQUIRE(woken.size() == PendingMap::kDefaultMaxWaiters);
    CHECK(woken.front() == 1);
    CHECK(woken.back() == PendingMap::kDefaultMaxWaiters);
  }
  SECTION("a bound of zero disables coalescing") {
    PendingMap pending(0);
    CHECK(pending.join("k", 1) == PendingMap::Join::kLeader);
    CHECK(pending.join("k", 2) == PendingMap::Join::kOverflow);
    CHECK(pending.finish("k").empty());
  }
}
