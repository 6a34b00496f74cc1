// LatencyWindow: the bucket layout, p99 on known distributions, the 10 s sliding
// window, adaptive_timeout_ms() (clamp and the kMinSamples rule) and concurrent record().
#include <catch2/catch.hpp>

#include <cstdint>
#include <thread>
#include <vector>

#include "breaker/latency_window.h"

using fg::breaker::LatencyWindow;

namespace {

constexpr uint64_t kT0 = 1'234'567'000;  // on a whole second

uint64_t upper_of(uint64_t ms) { return LatencyWindow::bucket_upper_ms(LatencyWindow::bucket_of(ms)); }

}  // namespace

TEST_CASE("buckets: exact up to 7 ms, then 4 per doubling, at most 25% wide", "[breaker]") {
  for (uint64_t ms = 0; ms < 8; ms++) {
    CHECK(LatencyWindow::bucket_of(ms) == ms);
    CHECK(LatencyWindow::bucket_upper_ms(ms) == ms);
  }
  CHECK(LatencyWindow::bucket_of(8) == 8);
  CHECK(LatencyWindow::bucket_of(9) == 8);
  CHECK(LatencyWindow::bucket_of(10) == 9);
  CHECK(LatencyWindow::bucket_upper_ms(8) == 9);
  CHECK(LatencyWindow::bucket_of(60000) < LatencyWindow::kBuckets);
  CHECK(LatencyWindow::bucket_upper_ms(LatencyWindow::kBuckets - 1) == 131071);
  CHECK(LatencyWindow::bucket_of(131071) == LatencyWindow::kBuckets - 1);
  CHECK(LatencyWindow::bucket_of(10'000'000) == LatencyWindow::kBuckets - 1);
  size_t prev = 0;
  for (uint64_t ms = 1; ms <= 131071; ms++) {
    const size_t b = LatencyWindow::bucket_of(ms);
    REQUIRE(b >= prev);
    REQUIRE(b <= prev + 1);
    REQUIRE(upper_of(ms) >= ms);
    REQUIRE(upper_of(ms) * 4 <= ms * 5);  // upper edge <= 1.25 x the value
    if (b > 0) REQUIRE(LatencyWindow::bucket_upper_ms(b - 1) < ms);
    prev = b;
  }
}

TEST_CASE("an empty window has p99 0", "[breaker]") {
  LatencyWindow w;
  CHECK(w.samples(kT0) == 0);
  CHECK(w.p99_ms(kT0) == 0);
}

TEST_CASE("p99 of known distributions", "[breaker]") {
  SECTION("1000 samples uniform over 1..100 ms: p99 = 99 within bucket resolution") {
    LatencyWindow w;
    for (uint64_t i = 0; i < 1000; i++) w.record(1 + i % 100, kT0 + i % 1000);
    CHECK(w.samples(kT0 + 999) == 1000);
    const uint64_t p99 = w.p99_ms(kT0 + 999);
    CHECK(p99 >= 99);
    CHECK(p99 * 4 <= 99 * 5);
    CHECK(p99 == upper_of(99));  // the [96, 111] bucket
    CHECK(p99 == 111);
  }
  SECTION("990 fast, 10 slow: p99 is the fast ones") {
    LatencyWindow w;
    for (int i = 0; i < 990; i++) w.record(10, kT0);
    for (int i = 0; i < 10; i++) w.record(1000, kT0);
    CHECK(w.p99_ms(kT0) == upper_of(10));
  }
  SECTION("989 fast, 11 slow: p99 is the slow ones") {
    LatencyWindow w;
    for (int i = 0; i < 989; i++) w.record(10, kT0);
    for (int i = 0; i < 11; i++) w.record(1000, kT0);
    CHECK(w.p99_ms(kT0) == upper_of(1000));
    CHECK(upper_of(1000) == 1023);
  }
  SECTION("one value") {
    LatencyWindow w;
    for (int i = 0; i < 100; i++) w.record(50, kT0);
    CHECK(w.p99_ms(kT0) == 55);
  }
  SECTION("longer than the last bucket") {
    LatencyWindow w;
    w.record(500000, kT0);
    CHECK(w.p99_ms(kT0) == 131071);
  }
}

TEST_CASE("the window slides: samples leave 10 s after their second", "[breaker]") {
  LatencyWindow w;
  for (int i = 0; i < 100; i++) w.record(500, kT0 + 200);
  for (int i = 0; i < 100; i++) w.record(20, kT0 + 5000);
  CHECK(w.samples(kT0 + 9999) == 200);
  CHECK(w.p99_ms(kT0 + 9999) == upper_of(500));
  CHECK(w.samples(kT0 + 10000) == 100);
  CHECK(w.p99_ms(kT0 + 10000) == upper_of(20));
  CHECK(w.samples(kT0 + 15000) == 0);
  CHECK(w.p99_ms(kT0 + 15000) == 0);
  // The slot of kT0 is reused 10 s later and starts from zero.
  w.record(7, kT0 + 10000);
  CHECK(w.samples(kT0 + 10000) == 101);
  CHECK(w.samples(kT0 + 15000) == 1);
  // A sample for a second a whole window older than its slot is dropped.
  w.record(7, kT0);
  CHECK(w.samples(kT0 + 15000) == 1);
}

TEST_CASE("adaptive_timeout_ms clamps 3 x p99 and needs 20 samples", "[breaker]") {
  constexpr uint64_t kMin = 200;
  constexpr uint64_t kMax = 10000;
  SECTION("fewer than 20 samples: the maximum") {
    LatencyWindow w;
    CHECK(w.adaptive_timeout_ms(kT0, kMin, kMax) == kMax);
    for (int i = 0; i < 19; i++) w.record(100, kT0);
    CHECK(w.adaptive_timeout_ms(kT0, kMin, kMax) == kMax);
    w.record(100, kT0);
    CHECK(w.adaptive_timeout_ms(kT0, kMin, kMax) == 3 * 111);
    // Once they leave the window, back to the maximum.
    CHECK(w.adaptive_timeout_ms(kT0 + 10000, kMin, kMax) == kMax);
  }
  SECTION("clamped to the minimum") {
    LatencyWindow w;
    for (int i = 0; i < 20; i++) w.record(10, kT0);
    CHECK(w.adaptive_timeout_ms(kT0, kMin, kMax) == kMin);
  }
  SECTION("clamped to the maximum") {
    LatencyWindow w;
    for (int i = 0; i < 20; i++) w.record(5000, kT0);
    CHECK(w.p99_ms(kT0) == 5119);
    CHECK(w.adaptive_timeout_ms(kT0, kMin, kMax) == kMax);
  }
  SECTION("min above max answers max") {
    LatencyWindow w;
    for (int i = 0; i < 20; i++) w.record(10, kT0);
    CHECK(w.adaptive_timeout_ms(kT0, 500, 300) == 300);
  }
}

TEST_CASE("concurrent record() from 4 threads", "[breaker]") {
  LatencyWindow w;
  constexpr int kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; i++) {
    threads.emplace_back([&w, i] {
      // Each thread walks 5 s of fake time, so slots are entered under contention.
      for (int k = 0; k < kPerThread; k++) {
        w.record(static_cast<uint64_t>(1 + k % 100), kT0 + static_cast<uint64_t>(k / 4) + static_cast<uint64_t>(i));
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(w.samples(kT0 + 9999) == 4 * kPerThread);
  CHECK(w.p99_ms(kT0 + 9999) == upper_of(99));
}
