// The instance-wide cache of a route: byte accounting and the bound across shards, LRU
// eviction across shards, reload limits, and several threads at once (hits, stores,
// evictions and coalesced fetches), which ThreadSanitizer and ASan builds check too.
#include "cache/shared_cache.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace {

using fg::cache::CachedResponse;
using fg::cache::Inbox;
using fg::cache::ResponseCache;
using fg::cache::SharedCache;
using fg::cache::Waiter;

CachedResponse body_of(size_t n, char fill = 'x') {
  CachedResponse r;
  r.status = 200;
  r.reason = "OK";
  r.body.assign(n, fill);
  return r;
}

size_t charged(const std::string& key, size_t body) { return ResponseCache::entry_bytes(key, body_of(body)); }

}  // namespace

TEST_CASE("SharedCache counts bytes across its shards and frees them on erase and clear", "[cache]") {
  SharedCache c(1 << 20, 1 << 16);
  uint64_t want = 0;
  for (int i = 0; i < 64; i++) {
    std::string k = "GET\n/p/" + std::to_string(i);
    REQUIRE(c.put(k, body_of(100), 0));
    want += charged(k, 100);
  }
  CHECK(c.bytes() == want);
  CHECK(c.entries() == 64);
  // Replacing an entry charges the new one only.
  REQUIRE(c.put("GET\n/p/0", body_of(300), 1));
  want += 200;
  CHECK(c.bytes() == want);
  CHECK(c.erase("GET\n/p/1"));
  CHECK_FALSE(c.erase("GET\n/p/1"));
  want -= charged("GET\n/p/1", 100);
  CHECK(c.bytes() == want);
  c.clear();
  CHECK(c.bytes() == 0);
  CHECK(c.entries() == 0);
}

TEST_CASE("SharedCache keeps the instance-wide bound and evicts the least recently used across shards", "[cache]") {
  // Room for exactly ten entries of this size, whatever shards their keys hash to.
  const size_t per = charged("GET\n/p/00", 1000);
  SharedCache c(10 * per, per);
  for (int i = 0; i < 10; i++) {
    std::string k = "GET\n/p/0" + std::to_string(i);
    REQUIRE(c.put(k, body_of(1000), static_cast<uint64_t>(100 + i)));
  }
  CHECK(c.bytes() == 10 * per);
  CHECK(c.evictions() == 0);
  // /p/00 and /p/01 are used again: /p/02 and /p/03 become the oldest.
  CHECK(c.get("GET\n/p/00", 200));
  CHECK(c.get("GET\n/p/01", 201));
  REQUIRE(c.put("GET\n/p/10", body_of(1000), 300));
  REQUIRE(c.put("GET\n/p/11", body_of(1000), 301));
  CHECK(c.bytes() == 10 * per);
  CHECK(c.evictions() == 2);
  CHECK(c.get("GET\n/p/00", 400));
  CHECK(c.get("GET\n/p/01", 400));
  CHECK_FALSE(c.get("GET\n/p/02", 400));
  CHECK_FALSE(c.get("GET\n/p/03", 400));
  for (int i = 4; i < 10; i++) CHECK(c.get("GET\n/p/0" + std::to_string(i), 400));
  CHECK(c.get("GET\n/p/10", 400));
  CHECK(c.get("GET\n/p/11", 400));
}

TEST_CASE("SharedCache refuses oversized entries and applies new limits at once", "[cache]") {
  const size_t per = charged("GET\n/p/00", 1000);
  SharedCache c(10 * per, per);
  REQUIRE(c.put("GET\n/p/00", body_of(1000), 0));
  // Over max_entry_bytes: refused, and the key's older entry goes too.
  CHECK_FALSE(c.put("GET\n/p/00", body_of(1001), 1));
  CHECK_FALSE(c.get("GET\n/p/00", 2));
  CHECK(c.bytes() == 0);
  for (int i = 0; i < 10; i++) REQUIRE(c.put("GET\n/p/0" + std::to_string(i), body_of(1000), static_cast<uint64_t>(i)));
  c.set_limits(4 * per, per);
  CHECK(c.max_bytes() == 4 * per);
  CHECK(c.bytes() == 4 * per);
  CHECK(c.entries() == 4);
  // The four most recently used stay.
  for (int i = 6; i < 10; i++) CHECK(c.get("GET\n/p/0" + std::to_string(i), 20));
  c.set_limits(4 * per, per - 1);
  CHECK(c.bytes() == 0);
}

TEST_CASE("SharedCache: a hit hands out a shared entry that outlives its eviction", "[cache]") {
  const size_t per = charged("GET\n/a", 1000);
  SharedCache c(per, per);
  REQUIRE(c.put("GET\n/a", body_of(1000, 'a'), 0));
  SharedCache::Entry held = c.get("GET\n/a", 1);
  REQUIRE(held);
  REQUIRE(c.put("GET\n/b", body_of(1000, 'b'), 2));  // evicts /a
  CHECK_FALSE(c.get("GET\n/a", 3));
  CHECK(held->body == std::string(1000, 'a'));
}

TEST_CASE("SharedCache under several threads: hits, stores and evictions keep the bound and the bytes exact",
          "[cache]") {
  const size_t per = charged("GET\n/p/000", 500);
  const uint64_t limit = 40 * per;  // far fewer than the 200 keys: constant eviction
  SharedCache c(limit, per);
  constexpr int kThreads = 4;
  std::atomic<bool> over{false};
  std::atomic<bool> corrupt{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5000; i++) {
        int n = (i * 7 + t * 13) % 200;
        char id[8];
        std::snprintf(id, sizeof id, "%03d", n);
        std::string k = std::string("GET\n/p/") + id;
        uint64_t now = static_cast<uint64_t>(i);
        if (SharedCache::Entry e = c.get(k, now)) {
          // Each key's body is its own letter: a torn or mixed entry would show.
          if (e->body.size() != 500 || e->body[0] != static_cast<char>('a' + n % 26) ||
              e->body[499] != e->body[0])
            corrupt = true;
        } else {
          c.put(k, body_of(500, static_cast<char>('a' + n % 26)), now);
        }
        if (i % 97 == 0) c.erase(k);
        if (c.bytes() > limit + kThreads * per) over = true;  // puts in progress may overlap
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK_FALSE(corrupt);
  CHECK_FALSE(over);
  // Quiet again: the bound holds exactly and the total matches the entries.
  CHECK(c.bytes() <= limit);
  CHECK(c.bytes() == c.entries() * per);
  CHECK(c.evictions() > 0);
}

TEST_CASE("SharedCache coalesces a key across threads: one leader, every other caller waits", "[cache]") {
  SharedCache c(1 << 20, 1 << 16);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  std::atomic<int> leaders{0};
  std::atomic<int> waiters{0};
  std::vector<std::shared_ptr<Inbox>> inboxes;
  for (int t = 0; t < kThreads; t++) inboxes.push_back(std::make_shared<Inbox>([] {}));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; i++) {
        switch (c.join("GET\n/hot", Waiter{inboxes[static_cast<size_t>(t)], static_cast<uint64_t>(i)})) {
          case SharedCache::Join::kLeader:
            leaders++;
            break;
          case SharedCache::Join::kWaiter:
            waiters++;
            break;
          case SharedCache::Join::kOverflow:
            break;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(leaders == 1);
  CHECK(waiters == kThreads * kPerThread - 1);
  std::vector<Waiter> woken = c.finish("GET\n/hot");
  CHECK(woken.size() == static_cast<size_t>(kThreads * kPerThread - 1));
  for (const Waiter& w : woken) w.inbox->post(w.id);
  size_t posted = 0;
  for (auto& in : inboxes) posted += in->take().size();
  CHECK(posted == woken.size());
  CHECK(c.in_flight() == 0);
}

TEST_CASE("Inbox signals once per batch and drops posts after close", "[cache]") {
  int signals = 0;
  Inbox in([&] { signals++; });
  in.post(1);
  in.post(2);
  CHECK(signals == 1);
  CHECK(in.take() == std::vector<uint64_t>{1, 2});
  in.post(3);
  CHECK(signals == 2);
  in.close();
  in.post(4);
  CHECK(signals == 2);
  CHECK(in.take().empty());
}
