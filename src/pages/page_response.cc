// Nonces and page headers.
#include "pages/page_response.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace fg::pages {

Nonce new_nonce() {
  uint8_t bytes[16];
  size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::fprintf(stderr, "floodgate: getrandom failed (errno %d): cannot make a CSP nonce\n", errno);
      std::abort();
    }
    got += static_cast<size_t>(n);
  }
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  Nonce nonce;
  // 16 bytes = 128 bits = 21 whole 6-bit groups + 2 bits; the last character carries those 2.
  uint32_t acc = 0;
  int bits = 0;
  size_t out = 0;
  for (uint8_t b : bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      nonce.text[out++] = kAlphabet[(acc >> bits) & 0x3F];
    }
  }
  nonce.text[out++] = kAlphabet[(acc << (6 - bits)) & 0x3F];
  return nonce;
}

std::string content_security_policy(std::string_view nonce) {
  std::string n(nonce);
  return "default-src 'none'; script-src 'nonce-" + n + "'; style-src 'nonce-" + n +
         "'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
         "frame-ancestors 'none'";
}

namespace {

// Calls fn(name, value) for each header of a page answer, in the order they are sent.
template <typename Fn>
void for_each_page_header(std::string_view nonce, Fn&& fn) {
  fn("Content-Type", "text/html; charset=utf-8");
  fn("Cache-Control", "no-store");
  fn("Content-Security-Policy", content_security_policy(nonce));
  fn("X-Content-Type-Options", "nosniff");
  fn("Referrer-Policy", "no-referrer");
  fn("Vary", "Accept, Sec-Fetch-Mode, Accept-Language");
}

}  // namespace

void add_page_headers(std::string_view nonce, std::vector<http::Header>* headers) {
  for_each_page_header(nonce, [headers](std::string_view name, std::string_view value) {
    headers->push_back({std::string(name), std::string(value)});
  });
}

void append_page_header_lines(std::string_view nonce, std::string* out) {
  for_each_page_header(nonce, [out](std::string_view name, std::string_view value) {
    out->append(name);
    out->append(": ");
    out->append(value);
    out->append("\r\n");
  });
}

}  // namespace fg::pages
