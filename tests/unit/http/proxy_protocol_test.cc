// PROXY protocol v1/v2 headers: valid ones, headers arriving in pieces, malformed and
// oversize ones, and bytes that are not a header at all.
#include <catch2/catch.hpp>

#include <string>

#include "http/proxy_protocol.h"

using namespace fg::http;
using State = ProxyHeader::State;

namespace {

const std::string kSig("\r\n\r\n\0\r\nQUIT\n", 12);

// A v2 header: version/command byte, family/protocol byte, address block and TLVs.
std::string v2(uint8_t ver_cmd, uint8_t fam, const std::string& body) {
  std::string h = kSig;
  h.push_back(static_cast<char>(ver_cmd));
  h.push_back(static_cast<char>(fam));
  h.push_back(static_cast<char>(body.size() >> 8));
  h.push_back(static_cast<char>(body.size() & 0xff));
  return h + body;
}

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int x : b) s.push_back(static_cast<char>(x));
  return s;
}

}  // namespace

TEST_CASE("PROXY v1 TCP4 and TCP6 give the source address and the header length", "[proxy_protocol]") {
  const std::string hdr = "PROXY TCP4 198.51.100.7 10.0.0.1 51234 443\r\n";
  auto h = parse_proxy_header(hdr + "GET / HTTP/1.1\r\n");
  REQUIRE(h.state == State::kDone);
  CHECK(h.version == 1);
  CHECK(h.length == hdr.size());
  CHECK_FALSE(h.local);
  CHECK(h.source.text() == "198.51.100.7");
  CHECK(h.source_port == 51234);

  auto h6 = parse_proxy_header("PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n");
  REQUIRE(h6.state == State::kDone);
  CHECK(h6.source.text() == "2001:db8::7");
  CHECK_FALSE(h6.source.v4);

  auto unknown = parse_proxy_header("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nGET");
  REQUIRE(unknown.state == State::kDone);
  CHECK(unknown.local);
  CHECK(unknown.length == 35);
}

TEST_CASE("PROXY v2 PROXY over IPv4 and IPv6, TLVs skipped, and LOCAL", "[proxy_protocol]") {
  const std::string v4 = bytes({203, 0, 113, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb});
  const std::string tlv = bytes({0x04, 0x00, 0x03, 'a', 'b', 'c'});  // PP2_TYPE_NOOP, 3 bytes
  const std::string hdr = v2(0x21, 0x11, v4 + tlv);
  auto h = parse_proxy_header(hdr + "GET / HTTP/1.1\r\n");
  REQUIRE(h.state == State::kDone);
  CHECK(h.version == 2);
  CHECK(h.length == hdr.size());
  CHECK(h.source.text() == "203.0.113.9");
  CHECK(h.source_port == 8080);

  std::string v6(36, '\0');
  v6[0] = 0x20, v6[1] = 0x01, v6[2] = 0x0d, v6[3] = static_cast<char>(0xb8), v6[15] = 0x42;
  v6[32] = 0x12, v6[33] = 0x34;
  auto h6 = parse_proxy_header(v2(0x21, 0x21, v6));
  REQUIRE(h6.state == State::kDone);
  CHECK(h6.source.text() == "2001:db8::42");
  CHECK(h6.source_port == 0x1234);

  // LOCAL: the balancer's own health check; the peer address stands, the block is skipped.
  auto local = parse_proxy_header(v2(0x20, 0x00, tlv));
  REQUIRE(local.state == State::kDone);
  CHECK(local.local);
  CHECK(local.length == 16 + tlv.size());

  // UNSPEC and unix families under PROXY keep the peer too.
  auto unix_fam = parse_proxy_header(v2(0x21, 0x31, std::string(216, 'x')));
  REQUIRE(unix_fam.state == State::kDone);
  CHECK(unix_fam.local);
}

TEST_CASE("a header split across reads needs more until it is whole", "[proxy_protocol]") {
  const std::string v1 = "PROXY TCP4 192.0.2.1 192.0.2.2 1000 2000\r\n";
  const std::string b2 = v2(0x21, 0x11, bytes({192, 0, 2, 1, 192, 0, 2, 2, 0, 1, 0, 2}));
  for (const std::string& whole : {v1, b2}) {
    for (size_t n = 1; n < whole.size(); n++) {
      INFO("prefix of " << n << " bytes");
      auto h = parse_proxy_header(whole.substr(0, n));
      CHECK(h.state == State::kNeedMore);
    }
    auto done = parse_proxy_header(whole);
    REQUIRE(done.state == State::kDone);
    CHECK(done.source.text() == "192.0.2.1");
  }
}

TEST_CASE("malformed headers and other protocols are refused at once", "[proxy_protocol]") {
  auto err = [](const std::string& s) { return parse_proxy_header(s).error; };
  CHECK(err("GET / HTTP/1.1\r\n") == ProxyHeaderError::kMissing);
  CHECK(err("POST /api") == ProxyHeaderError::kMissing);  // 'P' then not "PROXY "
  CHECK(err(std::string("\r\n\r\n\0\r\nQUIX", 11)) == ProxyHeaderError::kMissing);
  CHECK(err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n") == ProxyHeaderError::kMalformed);   // bare LF
  CHECK(err("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n") == ProxyHeaderError::kMalformed);   // a field missing
  CHECK(err("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n") == ProxyHeaderError::kMalformed);
  CHECK(err("PROXY TCP4 ::1 ::2 1 2\r\n") == ProxyHeaderError::kMalformed);         // family mismatch
  CHECK(err("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n") == ProxyHeaderError::kMalformed);
  CHECK(err("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n") == ProxyHeaderError::kMalformed);
  CHECK(err("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n") == ProxyHeaderError::kMalformed);
  CHECK(err("PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n") == ProxyHeaderError::kMalformed);
  CHECK(err("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n") == ProxyHeaderError::kMalformed);
  CHECK(err("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n") == ProxyHeaderError::kMalformed);
  // v2: an IPv4 block shorter than 12 bytes, an unknown version or command.
  CHECK(err(v2(0x21, 0x11, std::string(8, '\0'))) == ProxyHeaderError::kMalformed);
  CHECK(err(v2(0x21, 0x21, std::string(20, '\0'))) == ProxyHeaderError::kMalformed);
  CHECK(err(v2(0x31, 0x11, std::string(12, '\0'))) == ProxyHeaderError::kUnsupported);
  CHECK(err(v2(0x22, 0x11, std::string(12, '\0'))) == ProxyHeaderError::kUnsupported);
  CHECK(err(v2(0x21, 0x51, std::string(12, '\0'))) == ProxyHeaderError::kMalformed);
}

TEST_CASE("oversize headers are refused without waiting for the rest", "[proxy_protocol]") {
  // v1: no CRLF within 107 bytes.
  const std::string long_line = "PROXY TCP6 " + std::string(120, 'f');
  CHECK(parse_proxy_header(long_line).error == ProxyHeaderError::kOversize);
  CHECK(parse_proxy_header(long_line.substr(0, 106)).state == State::kNeedMore);
  // v2: a length field beyond kMaxProxyV2Bytes, known from the first 16 bytes.
  std::string big = kSig + bytes({0x21, 0x11, 0x20, 0x00});  // 8192 bytes announced
  CHECK(parse_proxy_header(big).error == ProxyHeaderError::kOversize);
  const std::string max = v2(0x21, 0x11, std::string(kMaxProxyV2Bytes - 16, '\0'));
  CHECK(parse_proxy_header(max).state == State::kDone);
  CHECK(proxy_header_error_name(ProxyHeaderError::kOversize) == std::string("oversize"));
}
