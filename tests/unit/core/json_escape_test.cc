#include "core/json_escape.h"

#include <catch2/catch.hpp>

#include <string>

using fg::json::append_escaped;
using fg::json::InvalidUtf8;

TEST_CASE("json escape: short escapes, control bytes and DEL", "[core]") {
  std::string out;
  append_escaped(out, std::string("q\"b\\s/\b\f\n\r\t\x1f\0z\x7f", 15));
  CHECK(out == "q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u001f\\u0000z\\u007f");
}

TEST_CASE("json escape: appends to what is there", "[core]") {
  std::string out = "{\"k\":\"";
  append_escaped(out, "a\"b");
  CHECK(out == "{\"k\":\"a\\\"b");
}

TEST_CASE("json escape: clean text is appended whole without growing past its size",
          "[core]") {
  std::string out;
  out.reserve(64);
  const auto* before = out.data();
  const size_t cap = out.capacity();
  append_escaped(out, "/api/orders?id=42 caf\xc3\xa9");
  CHECK(out == "/api/orders?id=42 caf\xc3\xa9");
  // No reallocation: the fast path must not reserve for escapes it does not need.
  CHECK(out.data() == before);
  CHECK(out.capacity() == cap);
  append_escaped(out, "");
  CHECK(out.size() == 23);
}

TEST_CASE("json escape: bytes >= 0x80 are kept by default", "[core]") {
  std::string out;
  append_escaped(out, "\xff\xc3\xa9");
  CHECK(out == "\xff\xc3\xa9");
}

TEST_CASE("json escape: invalid UTF-8 escaped as Latin-1 when asked", "[core]") {
  std::string out;
  // Valid 2-, 3- and 4-byte sequences stay; a lone continuation byte, a truncated
  // sequence, an overlong form and a surrogate are escaped byte by byte.
  append_escaped(out, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", InvalidUtf8::kEscape);
  CHECK(out == "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  out.clear();
  append_escaped(out, "a\x80" "b\xc3", InvalidUtf8::kEscape);
  CHECK(out == "a\\u0080b\\u00c3");
  out.clear();
  append_escaped(out, "\xc0\xaf", InvalidUtf8::kEscape);
  CHECK(out == "\\u00c0\\u00af");
  out.clear();
  append_escaped(out, "\xed\xa0\x80", InvalidUtf8::kEscape);
  CHECK(out == "\\u00ed\\u00a0\\u0080");
  out.clear();
  append_escaped(out, "\"\xff\n", InvalidUtf8::kEscape);
  CHECK(out == "\\\"\\u00ff\\n");
}
