// The real client address behind trusted proxies, and CIDR matching.
#include <catch2/catch.hpp>

#include <string>

#include "config/cidr.h"
#include "http/real_ip.h"

using namespace fg;
using namespace fg::http;

namespace {

CidrList list(std::initializer_list<const char*> blocks) {
  CidrList l;
  for (const char* b : blocks) {
    Cidr c;
    std::string why;
    REQUIRE(Cidr::parse(b, &c, &why));
    l.blocks.push_back(c);
  }
  return l;
}

// One X-Forwarded-For value seen from `peer`, with 10.0.0.0/8 trusted.
RealIp from_xff(const char* peer, const char* value) {
  const std::vector<Header> h = {{"X-Forwarded-For", value}};
  return resolve_real_ip(peer, h, "X-Forwarded-For", list({"10.0.0.0/8"}));
}

}  // namespace

TEST_CASE("CIDR blocks match IPv4, IPv6 and IPv4-mapped peers", "[real_ip]") {
  auto l = list({"10.0.0.0/8", "2001:db8::/32", "192.0.2.7"});
  CHECK(l.contains("10.1.2.3"));
  CHECK(l.contains("::ffff:10.1.2.3"));
  CHECK_FALSE(l.contains("11.0.0.1"));
  CHECK(l.contains("2001:db8:1::5"));
  CHECK_FALSE(l.contains("2001:db9::1"));
  CHECK(l.contains("192.0.2.7"));
  CHECK_FALSE(l.contains("192.0.2.8"));
  CHECK_FALSE(l.contains("not-an-ip"));
  CHECK(list({"172.16.0.0/12"}).contains("172.31.255.255"));
  CHECK_FALSE(list({"172.16.0.0/12"}).contains("172.32.0.0"));
  CHECK(list({"0.0.0.0/0"}).contains("8.8.8.8"));
  CHECK_FALSE(list({"0.0.0.0/0"}).contains("2001:db8::1"));

  Cidr c;
  std::string why;
  CHECK_FALSE(Cidr::parse("10.0.0.1/8", &c, &why));
  CHECK(why == "\"10.0.0.1/8\" has host bits set below its /8 prefix; write the block's first address");
  CHECK_FALSE(Cidr::parse("10.0.0.0/33", &c, &why));
  CHECK(why == "\"10.0.0.0/33\": the prefix length after '/' must be 0-32");
  CHECK_FALSE(Cidr::parse("::/129", &c, &why));
  CHECK_FALSE(Cidr::parse("example.com/8", &c, &why));
  CHECK_FALSE(Cidr::parse("10.0.0.0/", &c, &why));
}

TEST_CASE("X-Forwarded-For from a trusted peer: the rightmost untrusted hop", "[real_ip]") {
  auto trusted = list({"10.0.0.0/8"});
  auto r = from_xff("10.0.0.3", "198.51.100.1, 203.0.113.5, 10.0.0.2");
  CHECK(r.from_header);
  CHECK(r.client == "203.0.113.5");
  // The trusted hop on the right is ours: the upstream sees the chain ending with the client.
  CHECK(r.forwarded_for == "198.51.100.1, 203.0.113.5");

  // Several lines are one list; names match in any case.
  std::vector<Header> two = {{"x-forwarded-for", "198.51.100.1"}, {"X-FORWARDED-FOR", "10.0.0.9"}};
  CHECK(resolve_real_ip("10.0.0.3", two, "X-Forwarded-For", trusted).client == "198.51.100.1");

  // Every hop trusted: the leftmost.
  std::vector<Header> all = {{"X-Forwarded-For", "10.0.0.7, 10.0.0.8"}};
  auto a = resolve_real_ip("10.0.0.3", all, "X-Forwarded-For", trusted);
  CHECK(a.client == "10.0.0.7");
  CHECK(a.forwarded_for == "10.0.0.7");

  // A garbled entry ends the walk at the last trusted hop read.
  std::vector<Header> bad = {{"X-Forwarded-For", "203.0.113.5, garbage, 10.0.0.8"}};
  CHECK(resolve_real_ip("10.0.0.3", bad, "X-Forwarded-For", trusted).client == "10.0.0.8");

  // Ports and brackets as some proxies write them.
  std::vector<Header> ports = {{"X-Forwarded-For", "[2001:db8::5]:443, 203.0.113.9:1234"}};
  CHECK(resolve_real_ip("10.0.0.3", ports, "X-Forwarded-For", trusted).client == "203.0.113.9");
}

TEST_CASE("an untrusted peer's header is ignored", "[real_ip]") {
  auto r = from_xff("192.0.2.50", "1.2.3.4");
  CHECK_FALSE(r.from_header);
  CHECK(r.client == "192.0.2.50");
  CHECK(r.forwarded_for.empty());
  // No trusted proxies at all: never read.
  const std::vector<Header> h = {{"X-Forwarded-For", "1.2.3.4"}};
  CHECK(resolve_real_ip("10.0.0.1", h, "X-Forwarded-For", CidrList{}).client == "10.0.0.1");
  // Trusted peer without the header: the peer.
  CHECK(resolve_real_ip("10.0.0.1", {}, "X-Forwarded-For", list({"10.0.0.0/8"})).client == "10.0.0.1");
}

TEST_CASE("a single-address header such as CF-Connecting-IP", "[real_ip]") {
  auto trusted = list({"173.245.48.0/20", "2400:cb00::/32"});
  std::vector<Header> h = {{"CF-Connecting-IP", "2001:db8::77"}, {"X-Forwarded-For", "2001:db8::77"}};
  auto r = resolve_real_ip("2400:cb00::1", h, "CF-Connecting-IP", trusted);
  CHECK(r.client == "2001:db8::77");
  CHECK(r.forwarded_for == "2001:db8::77");
  std::vector<Header> no_xff = {{"cf-connecting-ip", "198.51.100.20"}};
  auto r2 = resolve_real_ip("173.245.48.9", no_xff, "CF-Connecting-IP", trusted);
  CHECK(r2.client == "198.51.100.20");
  CHECK(r2.forwarded_for == "198.51.100.20");
}
