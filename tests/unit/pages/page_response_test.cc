// Nonces and the headers of a page answer.
#include <catch2/catch.hpp>

#include <set>
#include <string>

#include "pages/page_response.h"

using fg::pages::new_nonce;

TEST_CASE("nonces are 22 base64url characters and differ", "[pages]") {
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    const fg::pages::Nonce n = new_nonce();
    const std::string s(n.view());
    REQUIRE(s.size() == 22);
    CHECK(n.text[22] == '\0');
    CHECK(s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
          std::string::npos);
    // 128 bits leave 2 bits for the last character: only A, Q, g and w can end a nonce.
    CHECK(std::string("AQgw").find(s.back()) != std::string::npos);
    seen.insert(s);
  }
  CHECK(seen.size() == 200);
}

TEST_CASE("the headers of a page answer", "[pages]") {
  std::vector<fg::http::Header> h = {{"Location", "/_floodgate/tickets/X"}, {"Retry-After", "3"}};
  fg::pages::add_page_headers("NONCE", &h);
  REQUIRE(h.size() == 8);
  CHECK(h[0].name == "Location");
  CHECK(h[1].name == "Retry-After");
  auto value = [&](std::string_view name) {
    const fg::http::Header* found = fg::http::find_header(h, name);
    REQUIRE(found != nullptr);
    return found->value;
  };
  CHECK(value("Content-Type") == "text/html; charset=utf-8");
  CHECK(value("Cache-Control") == "no-store");
  CHECK(value("Content-Security-Policy") ==
        "default-src 'none'; script-src 'nonce-NONCE'; style-src 'nonce-NONCE'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
  CHECK(value("X-Content-Type-Options") == "nosniff");
  CHECK(value("Referrer-Policy") == "no-referrer");
  CHECK(value("Vary") == "Accept, Sec-Fetch-Mode, Accept-Language");

  // The same headers as text lines, in the same order.
  std::string lines = "Retry-After: 3\r\n";
  fg::pages::append_page_header_lines("NONCE", &lines);
  std::string expected = "Retry-After: 3\r\n";
  for (size_t i = 2; i < h.size(); ++i) expected += h[i].name + ": " + h[i].value + "\r\n";
  CHECK(lines == expected);
  CHECK(lines.find("Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n") != std::string::npos);
}
