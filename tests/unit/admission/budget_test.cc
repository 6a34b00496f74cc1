// Budget (GCRA route budget): exact admission counts under a fake clock, the numbers of
// a Decision, set_rate() keeping the fill ratio, and lock-free exactness across threads.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "admission/budget.h"

using fg::admission::Budget;
using fg::admission::Decision;

namespace {

constexpr uint64_t kSecond = 1'000'000'000;
// An arbitrary monotonic origin, so that nothing depends on the clock starting at 0.
constexpr uint64_t kT0 = 1'234'567'890'123;

// rate 3000/s, burst 300: the budget keeps whole nanoseconds, so the emission interval
// is llround(1e9 / 3000) = 333'333 ns and the tolerance llround(300 * 333'333).
constexpr double kRate = 3000;
constexpr double kBurst = 300;
constexpr uint64_t kInterval = 333'333;
constexpr uint64_t kTolerance = 300 * kInterval;  // 99'999'900

// Under continuous demand (offers much denser than the interval) request n (from 0)
// is admitted at the first offer at or after n * interval - tolerance, so the number
// admitted by elapsed time t (inclusive) is floor((t + tolerance) / interval) + 1.
uint64_t gcra_admitted_by(uint64_t elapsed_ns, uint64_t interval, uint64_t tolerance) {
  return (elapsed_ns + tolerance) / interval + 1;
}

// Offer i of a stream at 30'000 requests per second (every 1/30000 s, in whole ns).
uint64_t offer_time(uint64_t i) { return kT0 + i * kSecond / 30'000; }

// Exhausts a fresh budget at `now` and returns how many were admitted.
int drain(Budget& b, uint64_t now) {
  int n = 0;
  while (b.try_acquire(now).admitted) n++;
  return n;
}

}  // namespace

TEST_CASE("a fresh budget admits burst + 1 at once, then rejects", "[admission]") {
  Budget b(kRate, kBurst, kT0);
  for (uint64_t k = 0; k <= 300; k++) {
    Decision d = b.try_acquire(kT0);
    INFO("request " << k);
    REQUIRE(d.admitted);
    CHECK(d.retry_after_ns == 0);
    CHECK(d.remaining == 300 - k);
    CHECK(d.reset_ns == (k + 1) * kInterval);
  }
  // Rejections do not move the state: every one reports the same numbers.
  for (int i = 0; i < 1000; i++) {
    Decision d = b.try_acquire(kT0);
    REQUIRE_FALSE(d.admitted);
    CHECK(d.retry_after_ns == kInterval);
    CHECK(d.remaining == 0);
    CHECK(d.reset_ns == 301 * kInterval);
  }
}

TEST_CASE("burst 0 admits exactly one request at once", "[admission]") {
  Budget b(10, 0, kT0);
  CHECK(drain(b, kT0) == 1);
  Decision d = b.try_acquire(kT0);
  CHECK(d.retry_after_ns == kSecond / 10);
}

TEST_CASE("retry_after_ns is exactly the wait until the next admission", "[admission]") {
  SECTION("right after the burst") {
    Budget b(kRate, kBurst, kT0);
    REQUIRE(drain(b, kT0) == 301);
    Decision d = b.try_acquire(kT0);
    REQUIRE_FALSE(d.admitted);
    REQUIRE(d.retry_after_ns == kInterval);
    Decision early = b.try_acquire(kT0 + d.retry_after_ns - 1);
    CHECK_FALSE(early.admitted);
    CHECK(early.retry_after_ns == 1);
    CHECK(b.try_acquire(kT0 + d.retry_after_ns).admitted);
    // That admission used the only token: the next one is a whole interval later.
    CHECK(b.try_acquire(kT0 + d.retry_after_ns).retry_after_ns == kInterval);
  }
  SECTION("at an instant that is not on an interval boundary") {
    Budget b(kRate, kBurst, kT0);
    REQUIRE(drain(b, kT0) == 301);
    const uint64_t now = kT0 + 12'345;
    Decision d = b.try_acquire(now);
    REQUIRE_FALSE(d.admitted);
    REQUIRE(d.retry_after_ns == kInterval - 12'345);
    CHECK(d.reset_ns == 301 * kInterval - 12'345);
    CHECK_FALSE(b.try_acquire(now + d.retry_after_ns - 1).admitted);
    CHECK(b.try_acquire(now + d.retry_after_ns).admitted);
  }
  SECTION("for a slow route (one request every 2.5 s)") {
    Budget b(0.4, 2, kT0);
    REQUIRE(drain(b, kT0) == 3);
    Decision d = b.try_acquire(kT0 + 1);
    REQUIRE(d.retry_after_ns == 2'500'000'000 - 1);
    CHECK_FALSE(b.try_acquire(kT0 + 1 + d.retry_after_ns - 1).admitted);
    CHECK(b.try_acquire(kT0 + 1 + d.retry_after_ns).admitted);
  }
}

TEST_CASE("peek reports remaining and reset without taking a token", "[admission]") {
  Budget b(kRate, kBurst, kT0);
  Decision full = b.peek(kT0);
  CHECK(full.admitted);
  CHECK(full.remaining == 301);
  CHECK(full.reset_ns == 0);
  CHECK(full.retry_after_ns == 0);
  CHECK(b.peek(kT0).remaining == 301);  // peeking twice took nothing

  for (int i = 0; i < 100; i++) REQUIRE(b.try_acquire(kT0).admitted);
  Decision d = b.peek(kT0);
  CHECK(d.admitted);
  CHECK(d.remaining == 201);
  CHECK(d.reset_ns == 100 * kInterval);

  // Ten intervals later ten tokens are back, and the reset is ten intervals nearer.
  d = b.peek(kT0 + 10 * kInterval);
  CHECK(d.remaining == 211);
  CHECK(d.reset_ns == 90 * kInterval);
  // Half an interval does not return a token.
  CHECK(b.peek(kT0 + 10 * kInterval + kInterval / 2).remaining == 211);

  // When reset_ns has passed the bucket is full again.
  CHECK(b.peek(kT0 + 100 * kInterval).remaining == 301);
  CHECK(b.peek(kT0 + 100 * kInterval).reset_ns == 0);
  CHECK(b.peek(kT0 + 100 * kInterval - 1).reset_ns == 1);

  // Exhausted: peek agrees with what try_acquire would answer.
  REQUIRE(drain(b, kT0) == 201);
  Decision p = b.peek(kT0);
  Decision t = b.try_acquire(kT0);
  CHECK_FALSE(p.admitted);
  CHECK_FALSE(t.admitted);
  CHECK(p.remaining == 0);
  CHECK(p.retry_after_ns == t.retry_after_ns);
  CHECK(p.reset_ns == t.reset_ns);
  CHECK(p.retry_after_ns == kInterval);
}

TEST_CASE("10 s of demand at 10x the rate admits exactly rate * 10 + burst + 1", "[admission]") {
  Budget b(kRate, kBurst, kT0);
  uint64_t admitted = 0;
  uint64_t next_checkpoint = 30'000;
  // Offers every 1/30000 s over the closed interval [0, 10 s]: 300'001 offers.
  for (uint64_t i = 0; i <= 300'000; i++) {
    uint64_t now = offer_time(i);
    if (b.try_acquire(now).admitted) admitted++;
    if (i == next_checkpoint) {
      // The formula holds at every whole second, not only at the end (it needs the
      // offers to have caught up with the burst, which takes ~333 offers).
      INFO("at " << i / 30'000 << " s");
      CHECK(admitted == gcra_admitted_by(now - kT0, kInterval, kTolerance));
      next_checkpoint += 30'000;
    }
  }
  // (10e9 + 99'999'900) / 333'333 = 30'300.03 -> 30'300, plus the request at t = 0.
  CHECK(gcra_admitted_by(10 * kSecond, kInterval, kTolerance) == 30'301);
  CHECK(admitted == 30'301);
  CHECK(admitted == 3000 * 10 + 300 + 1);
  // Within 1% of rate * t + burst.
  CHECK(admitted >= 30'300 * 99 / 100);
  CHECK(admitted <= 30'300 * 101 / 100);
}

TEST_CASE("after idling the bucket refills to burst + 1, never beyond", "[admission]") {
  Budget b(kRate, kBurst, kT0);
  REQUIRE(drain(b, kT0) == 301);
  // An hour of silence still refills to burst + 1 only.
  const uint64_t later = kT0 + 3600 * kSecond;
  CHECK(b.peek(later).remaining == 301);
  CHECK(drain(b, later) == 301);
}

TEST_CASE("set_rate keeps the fill ratio", "[admission]") {
  // rate 1000, burst 399: 400 tokens, interval 1 ms.
  SECTION("a half-used bucket stays half used") {
    Budget b(1000, 399, kT0);
    for (int i = 0; i < 200; i++) REQUIRE(b.try_acquire(kT0).admitted);
    REQUIRE(b.peek(kT0).remaining == 200);
    // rate 500, burst 99: 100 tokens of 2 ms each; half used leaves 50.
    b.set_rate(500, 99, kT0);
    CHECK(b.rate() == 500);
    CHECK(b.burst() == 99);
    CHECK(b.peek(kT0).remaining == 50);
    CHECK(drain(b, kT0) == 50);
    Decision d = b.try_acquire(kT0);
    CHECK(d.retry_after_ns == 2'000'000);
    CHECK(d.reset_ns == 100 * 2'000'000);
  }
  SECTION("a half-used bucket grown to more tokens stays half used") {
    Budget b(1000, 399, kT0);
    for (int i = 0; i < 200; i++) REQUIRE(b.try_acquire(kT0).admitted);
    // rate 4000, burst 1999: 2000 tokens of 250 us; half used leaves 1000.
    b.set_rate(4000, 1999, kT0);
    CHECK(b.peek(kT0).remaining == 1000);
    CHECK(drain(b, kT0) == 1000);
  }
  SECTION("a quarter-used bucket, changed some time after it was used") {
    Budget b(1000, 399, kT0);
    for (int i = 0; i < 300; i++) REQUIRE(b.try_acquire(kT0).admitted);
    // 200 ms later 200 tokens came back: 100 of 400 are used.
    const uint64_t now = kT0 + 200'000'000;
    REQUIRE(b.peek(now).remaining == 300);
    b.set_rate(100, 39, now);  // 40 tokens of 10 ms: a quarter used leaves 30
    CHECK(b.peek(now).remaining == 30);
    CHECK(drain(b, now) == 30);
  }
  SECTION("a full bucket stays full") {
    Budget b(1000, 399, kT0);
    b.set_rate(50, 19, kT0 + 5);
    CHECK(b.peek(kT0 + 5).remaining == 20);
    CHECK(drain(b, kT0 + 5) == 20);
  }
  SECTION("a bucket that refilled while idle is full under the new parameters") {
    Budget b(1000, 399, kT0);
    REQUIRE(drain(b, kT0) == 400);
    const uint64_t now = kT0 + 10 * kSecond;
    b.set_rate(2000, 9, now);
    CHECK(drain(b, now) == 10);
  }
  SECTION("an exhausted bucket stays exhausted, and then follows the new rate") {
    Budget b(1000, 399, kT0);
    REQUIRE(drain(b, kT0) == 400);
    b.set_rate(10, 4, kT0);  // 5 tokens of 100 ms, all used
    Decision d = b.try_acquire(kT0);
    CHECK_FALSE(d.admitted);
    CHECK(d.retry_after_ns == 100'000'000);
    CHECK(d.reset_ns == 500'000'000);
    CHECK_FALSE(b.try_acquire(kT0 + 100'000'000 - 1).admitted);
    CHECK(b.try_acquire(kT0 + 100'000'000).admitted);
    CHECK_FALSE(b.try_acquire(kT0 + 100'000'000).admitted);
  }
}

TEST_CASE("threads racing at one instant admit exactly burst + 1 in total", "[admission]") {
  constexpr int kThreads = 4;
  constexpr uint64_t kB = 1000;
  for (int round = 0; round < 20; round++) {
    Budget b(10, kB, kT0);
    std::atomic<bool> go{false};
    std::atomic<uint64_t> admitted{0};
    std::atomic<uint64_t> rejected{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++) {
      threads.emplace_back([&] {
        while (!go.load(std::memory_order_acquire)) {
        }
        uint64_t mine = 0;
        uint64_t no = 0;
        for (int i = 0; i < 2000; i++) {
          if (b.try_acquire(kT0).admitted) mine++;
          else no++;
        }
        admitted += mine;
        rejected += no;
      });
    }
    go.store(true, std::memory_order_release);
    for (auto& th : threads) th.join();
    INFO("round " << round);
    REQUIRE(admitted.load() == kB + 1);
    REQUIRE(rejected.load() == kThreads * 2000 - (kB + 1));
    REQUIRE(b.peek(kT0).remaining == 0);
  }
}

TEST_CASE("threads on a shared advancing clock admit what one thread would, within 1", "[admission]") {
  // Each offer takes the next tick of one shared clock, so offers from different threads
  // may reach the budget slightly out of order; the total must still match the
  // single-thread run over the same instants.
  constexpr int kThreads = 4;
  constexpr uint64_t kOffers = 300'001;  // [0, 10 s] every 1/30000 s

  Budget reference(kRate, kBurst, kT0);
  uint64_t expected = 0;
  for (uint64_t i = 0; i < kOffers; i++) {
    if (reference.try_acquire(offer_time(i)).admitted) expected++;
  }
  REQUIRE(expected == 30'301);

  Budget b(kRate, kBurst, kT0);
  std::atomic<uint64_t> clock{0};
  std::atomic<uint64_t> admitted{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&] {
      while (!go.load(std::memory_order_acquire)) {
      }
      uint64_t mine = 0;
      for (;;) {
        uint64_t i = clock.fetch_add(1, std::memory_order_relaxed);
        if (i >= kOffers) break;
        if (b.try_acquire(offer_time(i)).admitted) mine++;
      }
      admitted += mine;
    });
  }
  go.store(true, std::memory_order_release);
  for (auto& th : threads) th.join();
  INFO("admitted " << admitted.load() << ", single thread " << expected);
  CHECK(admitted.load() <= expected);
  CHECK(admitted.load() + 1 >= expected);
}
