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

// The clean prefix is scanned eight bytes at a time: a byte that needs escaping must be
// found at every offset of a word and in the tail, in strings of every short length.
TEST_CASE("json escape: a special byte is escaped wherever it sits", "[core]") {
  struct Special {
    std::string in;
    std::string kept;     // InvalidUtf8::kKeep
    std::string escaped;  // InvalidUtf8::kEscape
  };
  const Special specials[] = {
      {"\"", "\\\"", "\\\""},       {"\\", "\\\\", "\\\\"},         {"\n", "\\n", "\\n"},
      {std::string(1, '\x01'), "\\u0001", "\\u0001"},              {"\x1f", "\\u001f", "\\u001f"},
      {"\x7f", "\\u007f", "\\u007f"}, {"\xc3\xa9", "\xc3\xa9", "\xc3\xa9"},
      {"\x80", "\x80", "\\u0080"},    {"\xff", "\xff", "\\u00ff"},    {" ", " ", " "},
      {"~", "~", "~"}};
  for (size_t len = 0; len <= 24; ++len) {
    for (size_t at = 0; at <= len; ++at) {
      for (const Special& sp : specials) {
        std::string in = std::string(at, 'a') + sp.in + std::string(len - at, 'b');
        std::string want_kept = std::string(at, 'a') + sp.kept + std::string(len - at, 'b');
        std::string want_escaped = std::string(at, 'a') + sp.escaped + std::string(len - at, 'b');
        std::string got_kept, got_escaped;
        fg::json::append_escaped(got_kept, in);
        fg::json::append_escaped(got_escaped, in, fg::json::InvalidUtf8::kEscape);
        INFO("length " << in.size() << ", special at " << at);
        REQUIRE(got_kept == want_kept);
        REQUIRE(got_escaped == want_escaped);
      }
    }
  }
}
