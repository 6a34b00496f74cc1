// Path canonicalisation, target bytes and Host values: every spelling an attacker could
// use to reach a route's path without its policies, and every refusal.
#include <catch2/catch.hpp>

#include <string>
#include <string_view>

#include "http/path.h"

using fg::http::canonicalize_path;
using fg::http::canonicalize_target;
using fg::http::check_target_bytes;
using fg::http::is_valid_host;

namespace {

std::string canon(std::string_view in, bool merge = true) {
  std::string out;
  std::string_view why = canonicalize_path(in, merge, &out);
  INFO("path: " << in << " refused: " << why);
  REQUIRE(why.empty());
  // Canonical is a fixed point: canonicalising again changes nothing.
  std::string again;
  REQUIRE(canonicalize_path(out, merge, &again).empty());
  REQUIRE(again == out);
  return out;
}

std::string refused(std::string_view in, bool merge = true) {
  std::string out;
  std::string_view why = canonicalize_path(in, merge, &out);
  INFO("path: " << in << " gave: " << out);
  REQUIRE_FALSE(why.empty());
  return std::string(why);
}

}  // namespace

TEST_CASE("canonical paths are unchanged", "[http]") {
  for (std::string_view p : {"/", "/api/orders", "/api/orders/", "/a/b/c", "/a-b_c.d~e", "/a:b@c!$&'()*+,=",
                             "/%20", "/%3F%23", "/%25", "/%E2%82%AC", "/%C3%A9t%C3%A9", "/a..b", "/...", "/.a", "/a.",
                             "/API/orders"}) {
    CHECK(canon(p) == p);
  }
}

TEST_CASE("percent-encoded unreserved characters are decoded", "[http]") {
  CHECK(canon("/api/%6frders") == "/api/orders");
  CHECK(canon("/api/%6Frders") == "/api/orders");
  CHECK(canon("/%61%70%69/%6F%72%64%65%72%73") == "/api/orders");
  CHECK(canon("/%41%5a%30%39%2d%2E%5F%7e") == "/AZ09-._~");
  // Upper and lower case letters stay distinct: routes are case-sensitive.
  CHECK(canon("/%41PI/orders") == "/API/orders");
}

TEST_CASE("other percent-encodings keep their encoding with uppercase hex", "[http]") {
  CHECK(canon("/a%3fb") == "/a%3Fb");
  CHECK(canon("/a%3Bb") == "/a%3Bb");
  CHECK(canon("/%e2%82%ac") == "/%E2%82%AC");
  CHECK(canon("/%20%2b%26%3d%40%3a") == "/%20%2B%26%3D%40%3A");
  CHECK(canon("/%0d%0a") == "/%0D%0A");
  CHECK(canon("/%7f") == "/%7F");
}

TEST_CASE("decoding happens once: a double encoding stays literal", "[http]") {
  CHECK(canon("/api/%256frders") == "/api/%256frders");
  CHECK(canon("/x/%252e%252e/api/orders") == "/x/%252e%252e/api/orders");
  CHECK(canon("/%252F") == "/%252F");
  CHECK(canon("/%255C") == "/%255C");
}

TEST_CASE("dot segments are resolved, also when encoded", "[http]") {
  CHECK(canon("/api/./orders") == "/api/orders");
  CHECK(canon("/x/../api/orders") == "/api/orders");
  CHECK(canon("/api/orders/.") == "/api/orders/");
  CHECK(canon("/api/orders/..") == "/api/");
  CHECK(canon("/api/x/y/../../orders") == "/api/orders");
  CHECK(canon("/.") == "/");
  CHECK(canon("/a/..") == "/");
  CHECK(canon("/api/%2e/orders") == "/api/orders");
  CHECK(canon("/x/%2e%2e/api/orders") == "/api/orders");
  CHECK(canon("/x/%2E%2E/api/orders") == "/api/orders");
  CHECK(canon("/x/.%2e/api/orders") == "/api/orders");
  CHECK(canon("/x/%2e./api/orders") == "/api/orders");
  CHECK(canon("/api/./././orders") == "/api/orders");
}

TEST_CASE("repeated slashes are merged unless merging is off", "[http]") {
  CHECK(canon("/api//orders") == "/api/orders");
  CHECK(canon("//api/orders") == "/api/orders");
  CHECK(canon("/api/orders//") == "/api/orders/");
  CHECK(canon("///") == "/");
  CHECK(canon("/a//../b") == "/b");
  CHECK(canon("/a/.//./b") == "/a/b");
  CHECK(canon("/api//orders", false) == "/api//orders");
  CHECK(canon("//", false) == "//");
  CHECK(canon("/a//../b", false) == "/a/b");
  CHECK(canon("/a//", false) == "/a//");
  CHECK(canon("/a/./b", false) == "/a/b");
}

TEST_CASE("what has no unambiguous canonical form is refused", "[http]") {
  CHECK(refused("/api%2forders") == "encoded '/' in path");
  CHECK(refused("/api%2Forders") == "encoded '/' in path");
  CHECK(refused("/api\\orders") == "'\\' in path");
  CHECK(refused("/api%5corders") == "encoded '\\' in path");
  CHECK(refused("/api%5Corders") == "encoded '\\' in path");
  CHECK(refused("/api%00") == "encoded NUL in path");
  for (std::string_view p : {"/%", "/%4", "/%g1", "/%1g", "/a%", "/a%2", "/%%41", "/%-1", "/% 1"}) {
    CHECK(refused(p) == "invalid percent-encoding in path");
  }
  CHECK(refused("/..") == "'..' above the root in path");
  CHECK(refused("/a/../..") == "'..' above the root in path");
  CHECK(refused("/%2e%2e/etc") == "'..' above the root in path");
  CHECK(refused("/api/orders;jsessionid=1") == "path parameter (';') in path");
  CHECK(refused("/api;/orders") == "path parameter (';') in path");
  CHECK(refused("/a#b") == "fragment in request-target");
  CHECK(refused("/caf\xc3\xa9") == "non-ASCII byte in request-target");
  CHECK(refused("/a b") == "space or control byte in path");
  CHECK(refused("/a\tb") == "space or control byte in path");
  CHECK(refused("/a\x7f") == "space or control byte in path");
  CHECK(refused("") == "path does not start with '/'");
  CHECK(refused("api/orders") == "path does not start with '/'");
  CHECK(refused("*") == "path does not start with '/'");
}

TEST_CASE("percent-encoded bytes above 0x7F must be well-formed UTF-8", "[http]") {
  const std::string bad = "percent-encoded bytes in path are not valid UTF-8";
  // Overlong spellings of '/', '.' and '\' that lenient decoders accept.
  for (std::string_view p : {"/%c0%af", "/%C0%AE%C0%AE/x", "/%c1%9c", "/%e0%80%af", "/%f0%80%80%af",
                             // lone continuation, truncated sequences, surrogates, > U+10FFFF
                             "/%80", "/%bf", "/%c3", "/%c3/%a9", "/%e2%82", "/%e2%82a", "/%ed%a0%80",
                             "/%f4%90%80%80", "/%f5%80%80%80", "/%ff", "/%c3%c3", "/%e2%82%2e"}) {
    CHECK(refused(p) == bad);
  }
  CHECK(canon("/%c2%80") == "/%C2%80");
  CHECK(canon("/%f0%9f%98%80") == "/%F0%9F%98%80");
  CHECK(canon("/%f4%8f%bf%bf") == "/%F4%8F%BF%BF");
  CHECK(canon("/%ed%9f%bf") == "/%ED%9F%BF");
}

TEST_CASE("targets keep their query byte for byte", "[http]") {
  std::string out;
  REQUIRE(canonicalize_target("/api/%6frders?x=%6f&y=..//z", true, &out).empty());
  CHECK(out == "/api/orders?x=%6f&y=..//z");
  REQUIRE(canonicalize_target("/a/../b?", true, &out).empty());
  CHECK(out == "/b?");
  // The path ends at the first '?': an encoded '/' in the query is fine.
  REQUIRE(canonicalize_target("/a?b=%2f%00", true, &out).empty());
  CHECK(out == "/a?b=%2f%00");
  CHECK(canonicalize_target("/a?b#frag", true, &out) == "fragment in request-target");
  CHECK(canonicalize_target("/a?b=\xff", true, &out) == "non-ASCII byte in request-target");
  CHECK(canonicalize_target("/a%2fb?x", true, &out) == "encoded '/' in path");
  CHECK(check_target_bytes("/a?b") == "");
  CHECK(check_target_bytes("/a#") == "fragment in request-target");
  CHECK(check_target_bytes("/\x80") == "non-ASCII byte in request-target");
}

TEST_CASE("Host values follow RFC 3986 minus the ambiguous parts", "[http]") {
  for (std::string_view h : {"shop.example", "shop.example:8080", "127.0.0.1", "127.0.0.1:1", "localhost:65535",
                             "[::1]", "[::1]:80", "[2001:db8::7]", "[::ffff:10.0.0.1]:443", "a-b_c~d",
                             "xn--bcher-kva.example", "a!$&'()*+;=b", "SHOP.Example"}) {
    INFO(h);
    CHECK(is_valid_host(h));
  }
  for (std::string_view h : {"", "a b", "a, b", "a,b", "a@b", "user@shop.example", "a/b", "a\\b", "a%20b", "a\tb",
                             "caf\xc3\xa9", ":80", "shop:", "shop:8o", "shop:65536", "shop:123456", "shop:1:2", "[::1",
                             "[]", "[::1]x", "[::1]:", "[v1.x]", "[fe80::1%25eth0]", "[1.2.3.4]", "a?b", "a#b",
                             "a\"b", "a<b"}) {
    INFO(h);
    CHECK_FALSE(is_valid_host(h));
  }
}
