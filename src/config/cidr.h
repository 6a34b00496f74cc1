// IP addresses and CIDR blocks (IPv4 and IPv6), for server.trusted_proxies: parsed once
// at config load, matched per request without allocating.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fg {

// An address in network byte order. IPv4 is kept as its IPv4-mapped IPv6 form
// (::ffff:a.b.c.d), so "10.0.0.0/8" also matches a peer seen as ::ffff:10.1.2.3 on a
// dual-stack socket.
struct IpAddr {
  std::array<uint8_t, 16> bytes{};
  bool v4 = false;  // written as (or mapped from) an IPv4 address

  // Parses a literal IPv4 or IPv6 address (no brackets, no port, no zone); false
  // when `text` is anything else.
  static bool parse(std::string_view text, IpAddr* out);
  // From raw network-order bytes: 4 (IPv4) or 16 (IPv6).
  static IpAddr from_v4(const uint8_t b[4]);
  static IpAddr from_v6(const uint8_t b[16]);
  // The canonical text: "10.1.2.3", "2001:db8::1" (IPv4-mapped shown as IPv4).
  std::string text() const;
  bool operator==(const IpAddr& o) const { return bytes == o.bytes; }
};

struct Cidr {
  IpAddr base;          // with the host bits cleared
  unsigned prefix = 0;  // in bits of the 128-bit form (IPv4 /8 is stored as /104)

  // "10.0.0.0/8", "2001:db8::/32", or a single address ("192.0.2.7" = /32, "::1" =
  // /128). Host bits set below the prefix ("10.0.0.1/8") are an error, as they
  // usually mean a typo. `error` says why on failure.
  static bool parse(std::string_view text, Cidr* out, std::string* error);
  bool contains(const IpAddr& a) const;
};

// A list of blocks; empty matches nothing.
struct CidrList {
  std::vector<Cidr> blocks;
  bool contains(const IpAddr& a) const;
  bool contains(std::string_view ip_text) const;  // false for a string that is no address
  bool empty() const { return blocks.empty(); }
};

}  // namespace fg
