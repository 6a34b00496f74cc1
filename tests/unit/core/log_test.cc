// Unit tests of the JSON-lines builder and timestamp formatting.
#include <catch2/catch.hpp>

#include "core/log.h"

using fg::log::Line;

TEST_CASE("log line builds one JSON object per line with escaping", "[core]") {
  std::string out;
  Line(out).str("event", "a\"b\\c\n").num("n", -42).boolean("ok", true).dbl("ms", 1.5).finish();
  CHECK(out == "{\"event\":\"a\\\"b\\\\c\\n\",\"n\":-42,\"ok\":true,\"ms\":1.500}\n");
}

TEST_CASE("log line escapes control bytes as \\u00XX", "[core]") {
  std::string out;
  Line(out).str("k", std::string_view("\x01\x7f", 2)).finish();
  CHECK(out == "{\"k\":\"\\u0001\\u007f\"}\n");
}

TEST_CASE("timestamps are ISO-8601 UTC with milliseconds", "[core]") {
  std::string ts;
  fg::log::append_timestamp(ts, 1764108278123ULL);  // 2025-11-25T22:04:38.123Z
  CHECK(ts == "2025-11-25T22:04:38.123Z");
  // The second is formatted once and reused: later milliseconds of it, the next second,
  // a minute and a year boundary, and an earlier second again all come out right.
  auto at = [](uint64_t ms) {
    char buf[fg::log::kTimestampMax];
    return std::string(buf, fg::log::format_timestamp(buf, ms));
  };
  CHECK(at(1764108278005ULL) == "2025-11-25T22:04:38.005Z");
  CHECK(at(1764108278999ULL) == "2025-11-25T22:04:38.999Z");
  CHECK(at(1764108279000ULL) == "2025-11-25T22:04:39.000Z");
  CHECK(at(1767225599999ULL) == "2025-12-31T23:59:59.999Z");
  CHECK(at(1767225600040ULL) == "2026-01-01T00:00:00.040Z");
  CHECK(at(1764108278123ULL) == "2025-11-25T22:04:38.123Z");
}
