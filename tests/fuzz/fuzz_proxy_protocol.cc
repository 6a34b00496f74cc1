// PROXY protocol headers (and the real-IP walk over what they carry) under arbitrary bytes.
// A complete header never claims more bytes than it was given, and never more than the
// format's bound; every prefix of an accepted header needs more (a header split across
// reads is parsed the same whatever the split); an error is stable once more bytes arrive.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "http/proxy_protocol.h"
#include "http/real_ip.h"

using fg::http::ProxyHeader;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const ProxyHeader h = fg::http::parse_proxy_header(input);
  if (h.state == ProxyHeader::State::kDone) {
    FUZZ_CHECK(h.length > 0 && h.length <= input.size());
    FUZZ_CHECK(h.length <= fg::http::kMaxProxyV2Bytes);
    if (h.version == 1) FUZZ_CHECK(h.length <= fg::http::kMaxProxyV1Bytes);
    const std::string_view header = input.substr(0, h.length);
    for (size_t n = 0; n < header.size(); n++)
      FUZZ_CHECK(fg::http::parse_proxy_header(header.substr(0, n)).state == ProxyHeader::State::kNeedMore);
    // Bytes after the header do not change it.
    const ProxyHeader again = fg::http::parse_proxy_header(header);
    FUZZ_CHECK(again.state == ProxyHeader::State::kDone && again.length == h.length);
    if (!h.local) FUZZ_CHECK(!h.source.text().empty());
  } else if (h.state == ProxyHeader::State::kError) {
    FUZZ_CHECK(h.error != fg::http::ProxyHeaderError::kNone);
    const ProxyHeader more = fg::http::parse_proxy_header(std::string(input) + "\r\n\r\n");
    FUZZ_CHECK(more.state == ProxyHeader::State::kError);
  }

  // The same bytes as an X-Forwarded-For value from a trusted peer: the client is an
  // address of the list or the peer, and the chain sent on ends with it.
  fg::CidrList trusted;
  fg::Cidr c;
  std::string why;
  fg::Cidr::parse("10.0.0.0/8", &c, &why);
  trusted.blocks.push_back(c);
  const std::vector<fg::http::Header> headers = {{"X-Forwarded-For", std::string(input)}};
  const fg::http::RealIp r = fg::http::resolve_real_ip("10.0.0.1", headers, "X-Forwarded-For", trusted);
  fg::IpAddr parsed;
  FUZZ_CHECK(fg::IpAddr::parse(r.client, &parsed));
  if (r.from_header) {
    FUZZ_CHECK(r.forwarded_for.size() >= r.client.size());
  } else {
    FUZZ_CHECK(r.client == "10.0.0.1" && r.forwarded_for.empty());
  }
  return 0;
}
