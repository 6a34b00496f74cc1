// IP address and CIDR parsing and matching (see cidr.h).
#include "config/cidr.h"

#include <arpa/inet.h>

#include <cstring>

namespace fg {
namespace {

constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// "\"TEXT\"" + rest, built by appending (a temporary on the left of + trips a GCC 12
// -Wrestrict false positive).
std::string quoted(std::string_view text, std::string_view rest) {
  std::string out;
  out.reserve(text.size() + rest.size() + 2);
  out.push_back('"');
  out.append(text);
  out.push_back('"');
  out.append(rest);
  return out;
}

bool is_mapped(const std::array<uint8_t, 16>& b) { return std::memcmp(b.data(), kMappedPrefix, 12) == 0; }

}  // namespace

IpAddr IpAddr::from_v4(const uint8_t b[4]) {
  IpAddr a;
  std::memcpy(a.bytes.data(), kMappedPrefix, 12);
  std::memcpy(a.bytes.data() + 12, b, 4);
  a.v4 = true;
  return a;
}

IpAddr IpAddr::from_v6(const uint8_t b[16]) {
  IpAddr a;
  std::memcpy(a.bytes.data(), b, 16);
  a.v4 = is_mapped(a.bytes);
  return a;
}

bool IpAddr::parse(std::string_view text, IpAddr* out) {
  // inet_pton needs a NUL-terminated string; an address is at most 45 characters.
  char buf[64];
  if (text.empty() || text.size() >= sizeof buf) return false;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  uint8_t raw[16];
  if (inet_pton(AF_INET, buf, raw) == 1) {
    *out = from_v4(raw);
    return true;
  }
  if (inet_pton(AF_INET6, buf, raw) == 1) {
    *out = from_v6(raw);
    return true;
  }
  return false;
}

std::string IpAddr::text() const {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (v4) {
    inet_ntop(AF_INET, bytes.data() + 12, buf, sizeof buf);
  } else {
    inet_ntop(AF_INET6, bytes.data(), buf, sizeof buf);
  }
  return buf;
}

bool Cidr::parse(std::string_view text, Cidr* out, std::string* error) {
  const size_t slash = text.find('/');
  const std::string_view addr = text.substr(0, slash);
  IpAddr base;
  if (!IpAddr::parse(addr, &base)) {
    *error = quoted(text, " is not an IPv4 or IPv6 address or CIDR block (e.g. \"10.0.0.0/8\", \"2001:db8::/32\")");
    return false;
  }
  const bool v4_text = addr.find(':') == std::string_view::npos;
  const unsigned max_bits = v4_text ? 32 : 128;
  unsigned bits = max_bits;
  if (slash != std::string_view::npos) {
    const std::string_view p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3) {
      *error = quoted(text, ": the prefix length after '/' must be 0-" + std::to_string(max_bits));
      return false;
    }
    bits = 0;
    for (char c : p) {
      if (c < '0' || c > '9') {
        *error = quoted(text, ": the prefix length after '/' must be 0-" + std::to_string(max_bits));
        return false;
      }
      bits = bits * 10 + static_cast<unsigned>(c - '0');
    }
    if (bits > max_bits) {
      *error = quoted(text, ": the prefix length after '/' must be 0-" + std::to_string(max_bits));
      return false;
    }
  }
  Cidr c;
  c.base = base;
  c.prefix = v4_text ? bits + 96 : bits;
  for (unsigned i = c.prefix; i < 128; i++) {
    if (c.base.bytes[i / 8] & (0x80u >> (i % 8))) {
      *error = quoted(text, " has host bits set below its /" + std::to_string(bits) +
                                " prefix; write the block's first address");
      return false;
    }
  }
  *out = c;
  return true;
}

bool Cidr::contains(const IpAddr& a) const {
  const unsigned full = prefix / 8;
  if (std::memcmp(a.bytes.data(), base.bytes.data(), full) != 0) return false;
  const unsigned rest = prefix % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff00u >> rest);
  return (a.bytes[full] & mask) == base.bytes[full];
}

bool CidrList::contains(const IpAddr& a) const {
  for (const Cidr& c : blocks)
    if (c.contains(a)) return true;
  return false;
}

bool CidrList::contains(std::string_view ip_text) const {
  if (blocks.empty()) return false;
  IpAddr a;
  return IpAddr::parse(ip_text, &a) && contains(a);
}

}  // namespace fg
