// ClientLimiter (bounded per-client GCRA table): per-key limits and isolation, a fixed
// memory footprint under a million distinct keys, which slot eviction reuses, set_rate,
// thread safety, and the stability of hash_key.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "admission/client_limiter.h"

using fg::admission::ClientLimiter;
using fg::admission::Decision;
using fg::admission::hash_key;

namespace {

constexpr uint64_t kT0 = 987'654'321'000;
constexpr uint64_t kSecond = 1'000'000'000;
// client_rate 5, client_burst 10: one token every 200 ms, 10 requests at once (the
// client burst counts the first request), so the tolerance is 9 intervals.
constexpr double kRate = 5;
constexpr double kBurst = 10;
constexpr uint64_t kInterval = 200'000'000;
constexpr uint64_t kTolerance = 9 * kInterval;

int drain(ClientLimiter& l, std::string_view key, uint64_t now) {
  int n = 0;
  while (l.try_acquire(key, now).admitted) n++;
  return n;
}

// Keys whose hashes fall (or, with same = false, do not fall) in the set of `anchor`:
// the table is set-associative and a key's set is its hash modulo the number of sets.
std::vector<std::string> keys_in_set_of(const ClientLimiter& l, std::string_view anchor, size_t count,
                                         bool same) {
  const uint64_t sets = l.slots() / ClientLimiter::kWays;
  const uint64_t target = hash_key(anchor) % sets;
  std::vector<std::string> keys;
  for (int i = 0; keys.size() < count; i++) {
    std::string k = "client-" + std::to_string(i);
    if ((hash_key(k) % sets == target) == same) keys.push_back(k);
  }
  return keys;
}

}  // namespace

TEST_CASE("a client may send client_burst requests at once, then waits one interval", "[admission]") {
  ClientLimiter l(kRate, kBurst, 1024);
  for (uint64_t k = 0; k < 10; k++) {
    Decision d = l.try_acquire("10.0.0.1", kT0);
    INFO("request " << k);
    REQUIRE(d.admitted);
    CHECK(d.remaining == 9 - k);
    CHECK(d.reset_ns == (k + 1) * kInterval);
  }
  Decision d = l.try_acquire("10.0.0.1", kT0);
  REQUIRE_FALSE(d.admitted);
  CHECK(d.retry_after_ns == kInterval);
  CHECK(d.reset_ns == 10 * kInterval);
  CHECK(d.remaining == 0);
  // Exactly retry_after_ns later one request passes; one nanosecond earlier none does.
  Decision early = l.try_acquire("10.0.0.1", kT0 + kInterval - 1);
  CHECK_FALSE(early.admitted);
  CHECK(early.retry_after_ns == 1);
  CHECK(l.try_acquire("10.0.0.1", kT0 + kInterval).admitted);
  CHECK_FALSE(l.try_acquire("10.0.0.1", kT0 + kInterval).admitted);
}

TEST_CASE("client_burst 1 (or less) allows one request at a time", "[admission]") {
  ClientLimiter one(kRate, 1, 256);
  CHECK(drain(one, "a", kT0) == 1);
  CHECK(one.try_acquire("a", kT0).retry_after_ns == kInterval);
  ClientLimiter zero(kRate, 0, 256);
  CHECK(drain(zero, "a", kT0) == 1);
}

TEST_CASE("a client under continuous demand gets rate * t + client_burst", "[admission]") {
  ClientLimiter l(kRate, kBurst, 1024);
  uint64_t admitted = 0;
  // One request per millisecond over the closed interval [0, 10 s].
  for (uint64_t ms = 0; ms <= 10'000; ms++) {
    if (l.try_acquire("greedy", kT0 + ms * 1'000'000).admitted) admitted++;
  }
  // floor((10 s + tolerance) / interval) + 1 = floor(11.8 s / 0.2 s) + 1 = 60.
  CHECK((10 * kSecond + kTolerance) / kInterval + 1 == 60);
  CHECK(admitted == 60);
  CHECK(admitted == 5 * 10 + 10);
}

TEST_CASE("a hammering key does not affect other keys", "[admission]") {
  ClientLimiter l(kRate, kBurst, 256);  // the smallest table: 64 sets of 4 ways
  REQUIRE(drain(l, "hammer", kT0) == 10);
  for (int i = 0; i < 10'000; i++) REQUIRE_FALSE(l.try_acquire("hammer", kT0).admitted);

  auto hammer_still_limited = [&] {
    Decision h = l.try_acquire("hammer", kT0);
    CHECK_FALSE(h.admitted);
    CHECK(h.retry_after_ns == kInterval);
    CHECK(h.reset_ns == 10 * kInterval);
  };
  // Three clients sharing the hammer's set (filling it) and 200 in other sets each get
  // their full burst, and the hammer keeps its exact state throughout.
  std::vector<std::string> neighbours = keys_in_set_of(l, "hammer", 3, true);
  std::vector<std::string> others = keys_in_set_of(l, "hammer", 200, false);
  neighbours.insert(neighbours.end(), others.begin(), others.end());
  for (const std::string& k : neighbours) {
    INFO(k);
    CHECK(drain(l, k, kT0) == 10);
    hammer_still_limited();
  }
}

TEST_CASE("memory is bounded: a million one-off keys neither grow the table nor free a hammering key",
          "[admission]") {
  // Table size is rounded up to whole sets of every shard (4 ways * 64 shards).
  CHECK(ClientLimiter(kRate, kBurst, 1).slots() == 256);
  CHECK(ClientLimiter(kRate, kBurst, 256).slots() == 256);
  CHECK(ClientLimiter(kRate, kBurst, 257).slots() == 512);
  CHECK(ClientLimiter(kRate, kBurst, 100'000).slots() == 100'096);
  CHECK(ClientLimiter(kRate, kBurst, 100'000).memory_bytes() == 100'096 * 16);

  ClientLimiter l(kRate, kBurst, 256);
  ClientLimiter reference(kRate, kBurst, 256);  // sees the hammer only
  const size_t slots = l.slots();
  const size_t bytes = l.memory_bytes();
  REQUIRE(bytes == slots * ClientLimiter::kBytesPerSlot);

  // The hammer opens with two requests so that it has used more than a one-off key
  // ever does; from then on eviction must always prefer a one-off key's slot.
  uint64_t now = kT0;
  uint64_t hammer_admitted = 0;
  uint64_t reference_admitted = 0;
  uint64_t hammer_rejected = 0;
  uint64_t last_hammer = now;
  auto hammer = [&] {
    Decision d = l.try_acquire("hammer", now);
    Decision r = reference.try_acquire("hammer", now);
    REQUIRE(d.admitted == r.admitted);
    REQUIRE(d.retry_after_ns == r.retry_after_ns);
    if (d.admitted) hammer_admitted++;
    else hammer_rejected++;
    if (r.admitted) reference_admitted++;
    last_hammer = now;
  };
  hammer();
  hammer();

  uint64_t one_off_admitted = 0;
  char key[32];
  for (uint32_t i = 0; i < 1'000'000; i++) {
    now += 10'000;  // 10 us per new client: 10 s in all
    int n = std::snprintf(key, sizeof key, "198.51.%u.%u", i >> 8, i & 0xff);
    if (l.try_acquire(std::string_view(key, static_cast<size_t>(n)), now).admitted) one_off_admitted++;
    if (i % 16 == 0) hammer();
  }
  // Every new client started with a full bucket: none was judged by another's state.
  CHECK(one_off_admitted == 1'000'000);
  CHECK(l.slots() == slots);
  CHECK(l.memory_bytes() == bytes);

  // The hammer was judged exactly as if it had the table to itself...
  CHECK(hammer_admitted == reference_admitted);
  // ...which under continuous demand is floor((t + tolerance) / interval) + 1.
  CHECK(hammer_admitted == (last_hammer - kT0 + kTolerance) / kInterval + 1);
  CHECK(hammer_admitted == 59);
  CHECK(hammer_rejected > 50'000);
  // And it is still limited now: at most the one token that came back since its last
  // request, exactly as for the reference.
  int last = drain(l, "hammer", now);
  CHECK(last <= 1);
  CHECK(last == drain(reference, "hammer", now));
}

TEST_CASE("eviction reuses the slot of the client furthest from its limit", "[admission]") {
  ClientLimiter l(10, 10, 256);  // interval 100 ms, 10 requests at once
  const uint64_t interval = 100'000'000;
  std::vector<std::string> k = keys_in_set_of(l, "anchor", 5, true);
  const std::string& a = k[0];  // uses all 10
  const std::string& b = k[1];  // uses 5
  const std::string& c = k[2];  // uses 1: furthest from its limit
  const std::string& d = k[3];  // uses 2
  const std::string& e = k[4];  // new: the set is full
  REQUIRE(drain(l, a, kT0) == 10);
  for (int i = 0; i < 5; i++) REQUIRE(l.try_acquire(b, kT0).admitted);
  REQUIRE(l.try_acquire(c, kT0).admitted);
  for (int i = 0; i < 2; i++) REQUIRE(l.try_acquire(d, kT0).admitted);

  Decision de = l.try_acquire(e, kT0);
  REQUIRE(de.admitted);
  CHECK(de.remaining == 9);

  // a, b and d kept their state: a is still limited, b and d report what they used.
  Decision da = l.try_acquire(a, kT0);
  CHECK_FALSE(da.admitted);
  CHECK(da.retry_after_ns == interval);
  Decision db = l.try_acquire(b, kT0);
  CHECK(db.admitted);
  CHECK(db.remaining == 4);
  Decision dd = l.try_acquire(d, kT0);
  CHECK(dd.admitted);
  CHECK(dd.remaining == 7);
  // c was forgotten: it starts again with a full bucket (9 left, not 8).
  Decision dc = l.try_acquire(c, kT0);
  CHECK(dc.admitted);
  CHECK(dc.remaining == 9);
}

TEST_CASE("a client whose bucket has refilled is replaced before any client with budget in use",
          "[admission]") {
  ClientLimiter l(10, 10, 256);
  std::vector<std::string> k = keys_in_set_of(l, "anchor", 5, true);
  // k[0] made one request; the others used all 10. Once k[0]'s bucket is full again its
  // slot is free even though it is not the first way of the set.
  REQUIRE(drain(l, k[1], kT0) == 10);
  REQUIRE(l.try_acquire(k[0], kT0 + 1).admitted);
  REQUIRE(drain(l, k[2], kT0) == 10);
  REQUIRE(drain(l, k[3], kT0) == 10);
  const uint64_t later = kT0 + 1 + 100'000'000;  // k[0] full again; the others still used
  Decision fresh = l.try_acquire(k[4], later);
  REQUIRE(fresh.admitted);
  CHECK(fresh.remaining == 9);
  // The heavy clients kept their state: one token came back in 100 ms, and no more.
  for (int i = 1; i <= 3; i++) {
    INFO(k[static_cast<size_t>(i)]);
    Decision d = l.try_acquire(k[static_cast<size_t>(i)], later);
    CHECK(d.admitted);
    CHECK(d.remaining == 0);
    CHECK_FALSE(l.try_acquire(k[static_cast<size_t>(i)], later).admitted);
  }
}

TEST_CASE("set_rate changes the limits", "[admission]") {
  ClientLimiter l(kRate, kBurst, 256);
  REQUIRE(drain(l, "before", kT0) == 10);
  l.set_rate(50, 3);
  CHECK(l.rate() == 50);
  CHECK(l.burst() == 3);
  CHECK(l.slots() == 256);
  // A new client gets the new burst, then the new interval of 20 ms.
  CHECK(drain(l, "after", kT0) == 3);
  Decision d = l.try_acquire("after", kT0);
  CHECK(d.retry_after_ns == 20'000'000);
  CHECK_FALSE(l.try_acquire("after", kT0 + 20'000'000 - 1).admitted);
  CHECK(l.try_acquire("after", kT0 + 20'000'000).admitted);
  // Under continuous demand: floor((10 s + 2 * 20 ms) / 20 ms) + 1 = 503.
  uint64_t admitted = 0;
  const uint64_t start = kT0 + 100 * kSecond;
  for (uint64_t ms = 0; ms <= 10'000; ms++) {
    if (l.try_acquire("steady", start + ms * 1'000'000).admitted) admitted++;
  }
  CHECK(admitted == 503);
}

TEST_CASE("threads judging one key admit exactly client_burst; separate keys stay separate",
          "[admission]") {
  constexpr int kThreads = 4;
  SECTION("one shared key") {
    ClientLimiter l(1, 500, 256);
    std::atomic<bool> go{false};
    std::atomic<uint64_t> admitted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++) {
      threads.emplace_back([&] {
        while (!go.load(std::memory_order_acquire)) {
        }
        uint64_t mine = 0;
        for (int i = 0; i < 2000; i++) {
          if (l.try_acquire("shared", kT0).admitted) mine++;
        }
        admitted += mine;
      });
    }
    go.store(true, std::memory_order_release);
    for (auto& th : threads) th.join();
    CHECK(admitted.load() == 500);
  }
  SECTION("a key per thread, many keys in all") {
    ClientLimiter l(1, 20, 4096);
    std::atomic<bool> go{false};
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++) {
      threads.emplace_back([&, t] {
        while (!go.load(std::memory_order_acquire)) {
        }
        for (int j = 0; j < 100; j++) {
          char key[32];
          std::snprintf(key, sizeof key, "t%d-k%d", t, j);
          int n = 0;
          for (int i = 0; i < 40; i++) {
            if (l.try_acquire(key, kT0).admitted) n++;
          }
          if (n != 20) wrong++;
        }
      });
    }
    go.store(true, std::memory_order_release);
    for (auto& th : threads) th.join();
    CHECK(wrong.load() == 0);
  }
}

TEST_CASE("hash_key is stable and spreads distinct keys", "[admission]") {
  std::string a = "203.0.113.7";
  std::string b(a.data(), a.size());  // same bytes, another buffer
  CHECK(hash_key(a) == hash_key(b));
  CHECK(hash_key(a) == hash_key(std::string_view("203.0.113.7")));
  CHECK(hash_key("") == hash_key(std::string_view()));
  CHECK(hash_key("") != 0);  // 0 marks an empty slot
  CHECK(hash_key("203.0.113.7") != hash_key("203.0.113.8"));
  CHECK(hash_key("ab") != hash_key("ba"));
  CHECK(hash_key(std::string_view("a\0b", 3)) != hash_key(std::string_view("a\0c", 3)));

  std::unordered_set<uint64_t> seen;
  std::vector<size_t> per_set(64);
  for (int i = 0; i < 100'000; i++) {
    uint64_t h = hash_key("key-" + std::to_string(i));
    REQUIRE(h != 0);
    seen.insert(h);
    per_set[h % 64]++;
  }
  CHECK(seen.size() == 100'000);
  // Sequential keys spread over the sets: each of 64 gets 1562 on average.
  for (size_t n : per_set) {
    CHECK(n > 1300);
    CHECK(n < 1850);
  }
}

// Sharing with other instances: the admissions counted per client since the last
// collect (most active first, bounded), charges of foreign admissions, and their cap.
TEST_CASE("ClientLimiter counts nothing until sync is enabled", "[client_limiter][sync]") {
  ClientLimiter l(kRate, kBurst, 4096);
  REQUIRE(drain(l, "a", kT0) == 10);
  CHECK_FALSE(l.syncing());
  CHECK(l.collect(100).empty());
  l.enable_sync();
  CHECK(l.memory_bytes() == l.slots() * (ClientLimiter::kBytesPerSlot + 4));
  CHECK(l.collect(100).empty());  // what came before is not counted
}

TEST_CASE("ClientLimiter collect returns admissions per client, most active first, and resets",
          "[client_limiter][sync]") {
  ClientLimiter l(kRate, kBurst, 4096);
  l.enable_sync();
  REQUIRE(drain(l, "busy", kT0) == 10);  // 10 admitted, the 11th refused: not counted
  for (int i = 0; i < 3; i++) REQUIRE(l.try_acquire("mid", kT0).admitted);
  REQUIRE(l.try_acquire("once", kT0).admitted);
  auto d = l.collect(100);
  REQUIRE(d.size() == 3);
  CHECK(d[0].key == hash_key("busy"));
  CHECK(d[0].count == 10);
  CHECK(d[1].key == hash_key("mid"));
  CHECK(d[1].count == 3);
  CHECK(d[2].key == hash_key("once"));
  CHECK(d[2].count == 1);
  CHECK(l.collect(100).empty());
  // The next interval counts anew.
  REQUIRE(l.try_acquire("mid", kT0).admitted);
  d = l.collect(100);
  REQUIRE(d.size() == 1);
  CHECK(d[0].count == 1);

  // Bounded: only the `max` busiest are returned, the rest is dropped.
  for (int i = 0; i < 50; i++) {
    std::string key = "c" + std::to_string(i);
    for (int k = 0; k <= i % 5; k++) REQUIRE(l.try_acquire(key, kT0).admitted);
  }
  d = l.collect(10);
  REQUIRE(d.size() == 10);
  for (const auto& x : d) CHECK(x.count == 5);
  CHECK(l.collect(100).empty());
}

TEST_CASE("ClientLimiter collect skips a client whose slot was reused", "[client_limiter][sync]") {
  ClientLimiter l(kRate, kBurst, 1);  // one set per shard: 4 ways
  l.enable_sync();
  auto keys = keys_in_set_of(l, "anchor", ClientLimiter::kWays, true);
  REQUIRE(l.try_acquire("anchor", kT0).admitted);
  // Four more clients of the same set, later: the anchor's slot (oldest arrival time) is
  // reused, and its uncollected count goes with it.
  for (const auto& k : keys) REQUIRE(l.try_acquire(k, kT0 + 5 * kSecond).admitted);
  auto d = l.collect(100);
  CHECK(d.size() == ClientLimiter::kWays);
  for (const auto& x : d) CHECK(x.key != hash_key("anchor"));
}

TEST_CASE("ClientLimiter charge spends a client's budget, creating its slot, up to the cap",
          "[client_limiter][sync]") {
  ClientLimiter l(kRate, kBurst, 4096);
  // A client never seen here: 4 admissions elsewhere leave 6 of its 10.
  CHECK(l.charge(hash_key("a"), 4, kT0) == 4);
  CHECK(drain(l, "a", kT0) == 6);
  // Charges are not counted as local admissions.
  l.enable_sync();
  CHECK(l.charge(hash_key("b"), 2, kT0) == 2);
  CHECK(l.collect(100).empty());
  // The cap: client_burst + 1 s of client_rate ahead of now, i.e. 10 + 5 intervals.
  CHECK(l.charge_cap_ns() == kTolerance + kInterval + kSecond);
  CHECK(l.charge(hash_key("c"), 1000, kT0) == 15);
  CHECK(l.charge(hash_key("c"), 1, kT0) == 0);
  CHECK_FALSE(l.try_acquire("c", kT0).admitted);
  // Refused for one second exactly (cap minus the tolerance minus one interval)...
  CHECK_FALSE(l.try_acquire("c", kT0 + kSecond - 1).admitted);
  CHECK(l.try_acquire("c", kT0 + kSecond + kInterval).admitted);
  // ...and charged again from where it stands, not from the cap.
  CHECK(l.charge(hash_key("d"), 3, kT0) == 3);
  CHECK(l.charge(hash_key("d"), 3, kT0 + kInterval) == 3);
  CHECK(drain(l, "d", kT0 + kInterval) == 5);  // 10 - 6 + 1 refilled
  CHECK(l.charge(hash_key("e"), 0, kT0) == 0);
}

TEST_CASE("ClientLimiter judge, collect and charge from several threads", "[client_limiter][sync]") {
  ClientLimiter l(1e9, 1e9, 4096);  // never refuses: every admission must be counted
  l.enable_sync();
  constexpr int kThreads = 4;
  constexpr int kEach = 20000;
  std::atomic<bool> done{false};
  uint64_t counted = 0;
  std::thread collector([&] {
    while (!done.load()) {
      for (const auto& d : l.collect(1000)) counted += d.count;
      l.charge(hash_key("k1"), 1, kT0);
    }
  });
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; t++) {
    ts.emplace_back([&l, t] {
      for (int i = 0; i < kEach; i++) l.try_acquire("k" + std::to_string((i + t) % 8), kT0);
    });
  }
  for (auto& t : ts) t.join();
  done = true;
  collector.join();
  for (const auto& d : l.collect(1000)) counted += d.count;
  CHECK(counted == uint64_t{kThreads} * kEach);
}
