// The per-thread CSPRNG pool: requests of any size are served, across refills, and no
// two requests get the same bytes.
#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <thread>

#include "core/random.h"

namespace {

std::string draw(size_t n) {
  std::string s(n, '\0');
  fg::random::bytes(reinterpret_cast<unsigned char*>(s.data()), n);
  return s;
}

}  // namespace

TEST_CASE("random bytes are never handed out twice, across pool refills") {
  std::set<std::string> seen;
  // 16-byte ids, as tickets use: 200 of them span three refills of the 1 KiB pool.
  for (int i = 0; i < 200; i++) CHECK(seen.insert(draw(16)).second);
  // Odd sizes straddle the pool's end; one request larger than the pool is served whole.
  for (size_t n : {7u, 1000u, 3000u, 1u}) {
    std::string s = draw(n);
    REQUIRE(s.size() == n);
    if (n >= 16) CHECK(seen.insert(s.substr(0, 16)).second);
  }
  // A large draw is not a run of wiped (zero) bytes: at most a handful of zeros by chance.
  std::string big = draw(4096);
  size_t zeros = 0;
  for (char c : big) zeros += c == '\0';
  CHECK(zeros < 64);
}

TEST_CASE("threads draw from pools of their own") {
  std::string a, b;
  std::thread t1([&] { a = draw(64); });
  std::thread t2([&] { b = draw(64); });
  t1.join();
  t2.join();
  CHECK(a != b);
  CHECK(a != draw(64));
}
