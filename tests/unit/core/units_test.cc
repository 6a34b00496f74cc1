// Duration and size parsing: every accepted unit and every rejected form.
#include <catch2/catch.hpp>

#include <string>

#include "floodgate/units.h"

using fg::parse_duration_ms;
using fg::parse_size_bytes;

namespace {

uint64_t ms(std::string_view text) {
  auto r = parse_duration_ms(text);
  INFO(std::string(text) << " -> " << r.message());
  REQUIRE(r.is_ok());
  return *r;
}

uint64_t bytes(std::string_view text) {
  auto r = parse_size_bytes(text);
  INFO(std::string(text) << " -> " << r.message());
  REQUIRE(r.is_ok());
  return *r;
}

std::string duration_error(std::string_view text) {
  auto r = parse_duration_ms(text);
  REQUIRE_FALSE(r.is_ok());
  return r.message();
}

std::string size_error(std::string_view text) {
  auto r = parse_size_bytes(text);
  REQUIRE_FALSE(r.is_ok());
  return r.message();
}

}  // namespace

TEST_CASE("durations accept every unit", "[core]") {
  CHECK(ms("250ms") == 250);
  CHECK(ms("0ms") == 0);
  CHECK(ms("10s") == 10000);
  CHECK(ms("5m") == 300000);
  CHECK(ms("24h") == 86400000);
  CHECK(ms("2d") == 172800000);
  CHECK(ms("007s") == 7000);
}

TEST_CASE("durations accept fractions, truncated to whole milliseconds", "[core]") {
  CHECK(ms("1.5s") == 1500);
  CHECK(ms("0.25s") == 250);
  CHECK(ms("1.5m") == 90000);
  CHECK(ms("0.5h") == 1800000);
  CHECK(ms("0.5d") == 43200000);
  CHECK(ms("1.9ms") == 1);
  CHECK(ms("0.0001s") == 0);
  CHECK(ms("1.123456789123s") == 1123);
}

TEST_CASE("durations reject malformed text", "[core]") {
  CHECK_THAT(duration_error(""), Catch::Contains("empty"));
  CHECK_THAT(duration_error("10"), Catch::Contains("missing unit"));
  CHECK_THAT(duration_error("1.5"), Catch::Contains("missing unit"));
  CHECK_THAT(duration_error("-1s"), Catch::Contains("negative"));
  CHECK_THAT(duration_error("10x"), Catch::Contains("invalid duration \"10x\"") && Catch::Contains("ms, s, m, h, d"));
  for (const char* bad : {"s", "ms", "1.s", ".5s", "1..5s", "1.5.s", " 1s", "1s ", "1 s", "+1s", "10S", "10sec",
                          "1e3ms", "0x10s", "1s1", "inf", "nan"}) {
    INFO(bad);
    CHECK_FALSE(parse_duration_ms(bad).is_ok());
  }
}

TEST_CASE("durations reject overflow", "[core]") {
  CHECK(ms("18446744073709551615ms") == UINT64_MAX);
  CHECK_THAT(duration_error("18446744073709551616ms"), Catch::Contains("too large"));
  CHECK_THAT(duration_error("18446744073709551615s"), Catch::Contains("too large"));
  CHECK_THAT(duration_error("99999999999999999999999999d"), Catch::Contains("too large"));
}

TEST_CASE("duration errors quote long input only in part", "[core]") {
  const std::string junk(500, 'z');
  const std::string msg = duration_error(junk);
  CHECK(msg.size() < 200);
  CHECK_THAT(msg, Catch::Contains("..."));
}

TEST_CASE("sizes accept every unit", "[core]") {
  CHECK(bytes("0") == 0);
  CHECK(bytes("123") == 123);
  CHECK(bytes("123B") == 123);
  CHECK(bytes("16KiB") == 16 * 1024);
  CHECK(bytes("1MiB") == 1024 * 1024);
  CHECK(bytes("2GiB") == 2ull * 1024 * 1024 * 1024);
  CHECK(bytes("16KB") == 16000);
  CHECK(bytes("3MB") == 3000000);
  CHECK(bytes("1GB") == 1000000000);
  CHECK(bytes("4k") == 4096);
  CHECK(bytes("4K") == 4096);
  CHECK(bytes("2m") == 2 * 1024 * 1024);
  CHECK(bytes("2M") == 2 * 1024 * 1024);
  CHECK(bytes("1g") == 1024 * 1024 * 1024);
  CHECK(bytes("1G") == 1024 * 1024 * 1024);
}

TEST_CASE("sizes accept fractions with a multiplier unit", "[core]") {
  CHECK(bytes("1.5MiB") == 1572864);
  CHECK(bytes("0.5KiB") == 512);
  CHECK(bytes("1.5KB") == 1500);
  CHECK(bytes("0.1K") == 102);
  CHECK_THAT(size_error("1.5"), Catch::Contains("whole"));
  CHECK_THAT(size_error("1.5B"), Catch::Contains("whole"));
}

TEST_CASE("sizes reject malformed text", "[core]") {
  CHECK_THAT(size_error(""), Catch::Contains("empty"));
  CHECK_THAT(size_error("-1"), Catch::Contains("negative"));
  CHECK_THAT(size_error("-1KiB"), Catch::Contains("negative"));
  CHECK_THAT(size_error("10x"), Catch::Contains("invalid size \"10x\"") && Catch::Contains("KiB"));
  for (const char* bad : {"KiB", "1kib", "1KIB", "1kb", "1Kb", "1b", "1TiB", "1 KiB", " 1", "1 ", "+1",
                          "1.KiB", ".5KiB", "1e6", "0x10", "1KiBB", "ten"}) {
    INFO(bad);
    CHECK_FALSE(parse_size_bytes(bad).is_ok());
  }
}

TEST_CASE("sizes reject overflow", "[core]") {
  CHECK(bytes("18446744073709551615") == UINT64_MAX);
  CHECK_THAT(size_error("18446744073709551616"), Catch::Contains("too large"));
  CHECK_THAT(size_error("17179869184GiB"), Catch::Contains("too large"));
  CHECK(bytes("17179869183GiB") == 17179869183ull * 1024 * 1024 * 1024);
}
