// PROXY protocol v1 (text) and v2 (binary) parsing (see proxy_protocol.h).
#include "http/proxy_protocol.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace fg::http {
namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr uint8_t kV2Sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr size_t kV2Fixed = 16;  // signature, version/command, family, length

ProxyHeader fail(ProxyHeaderError e, int version) {
  ProxyHeader h;
  h.state = ProxyHeader::State::kError;
  h.error = e;
  h.version = version;
  return h;
}

// True when `data` is a prefix of `whole` (or starts with it).
bool prefix_match(std::string_view data, std::string_view whole) {
  const size_t n = std::min(data.size(), whole.size());
  return data.compare(0, n, whole, 0, n) == 0;
}

bool parse_port(std::string_view s, uint16_t* out) {
  // Decimal 0-65535 without leading zeros (the spec's grammar), 1-5 digits.
  if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return false;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v > 65535) return false;
  *out = static_cast<uint16_t>(v);
  return true;
}

ProxyHeader parse_v1(std::string_view data) {
  const size_t limit = std::min(data.size(), kMaxProxyV1Bytes);
  const size_t crlf = data.substr(0, limit).find("\r\n");
  if (crlf == std::string_view::npos) {
    // A bare '\n' or '\r' not followed by '\n' can never end a valid line.
    const std::string_view seen = data.substr(0, limit);
    const size_t cr = seen.find('\r');
    if (seen.find('\n') != std::string_view::npos || (cr != std::string_view::npos && cr + 1 < seen.size())) {
      return fail(ProxyHeaderError::kMalformed, 1);
    }
    if (data.size() >= kMaxProxyV1Bytes) return fail(ProxyHeaderError::kOversize, 1);
    ProxyHeader h;
    h.version = 1;
    return h;
  }
  const std::string_view line = data.substr(kV1Prefix.size(), crlf - kV1Prefix.size());
  // Fields separated by single spaces: protocol, source, destination, two ports.
  std::string_view f[5];
  size_t n = 0;
  size_t start = 0;
  for (size_t i = 0; i <= line.size(); i++) {
    if (i == line.size() || line[i] == ' ') {
      if (n == 5) {
        if (f[0] == "UNKNOWN") break;
        return fail(ProxyHeaderError::kMalformed, 1);
      }
      f[n++] = line.substr(start, i - start);
      start = i + 1;
    }
  }
  ProxyHeader h;
  h.version = 1;
  h.length = crlf + 2;
  if (f[0] == "UNKNOWN") {
    // Anything may follow UNKNOWN; the receiver ignores it and keeps the peer.
    h.state = ProxyHeader::State::kDone;
    return h;
  }
  if (n != 5 || (f[0] != "TCP4" && f[0] != "TCP6")) return fail(ProxyHeaderError::kMalformed, 1);
  IpAddr src, dst;
  const bool want_v4 = f[0] == "TCP4";
  if (!IpAddr::parse(f[1], &src) || !IpAddr::parse(f[2], &dst)) return fail(ProxyHeaderError::kMalformed, 1);
  // The family must agree with the words: TCP4 carries dotted quads, TCP6 IPv6 text.
  const bool src_v4_text = f[1].find(':') == std::string_view::npos;
  const bool dst_v4_text = f[2].find(':') == std::string_view::npos;
  if (src_v4_text != want_v4 || dst_v4_text != want_v4) return fail(ProxyHeaderError::kMalformed, 1);
  uint16_t sport = 0, dport = 0;
  if (!parse_port(f[3], &sport) || !parse_port(f[4], &dport)) return fail(ProxyHeaderError::kMalformed, 1);
  h.local = false;
  h.source = src;
  h.source_port = sport;
  h.state = ProxyHeader::State::kDone;
  return h;
}

ProxyHeader parse_v2(std::string_view data) {
  if (data.size() < kV2Fixed) {
    ProxyHeader h;
    h.version = 2;
    // The 13th byte is already known: reject a wrong version early.
    if (data.size() > 12 && (static_cast<uint8_t>(data[12]) >> 4) != 2) return fail(ProxyHeaderError::kUnsupported, 2);
    return h;
  }
  const auto* b = reinterpret_cast<const uint8_t*>(data.data());
  const uint8_t version = b[12] >> 4;
  const uint8_t command = b[12] & 0x0f;
  const uint8_t family = b[13] >> 4;
  const uint8_t proto = b[13] & 0x0f;
  const size_t len = (static_cast<size_t>(b[14]) << 8) | b[15];
  if (version != 2 || command > 1) return fail(ProxyHeaderError::kUnsupported, 2);
  if (kV2Fixed + len > kMaxProxyV2Bytes) return fail(ProxyHeaderError::kOversize, 2);
  if (data.size() < kV2Fixed + len) {
    ProxyHeader h;
    h.version = 2;
    return h;
  }
  ProxyHeader h;
  h.version = 2;
  h.length = kV2Fixed + len;
  h.state = ProxyHeader::State::kDone;
  if (command == 0) return h;  // LOCAL: a health check of the balancer itself; TLVs skipped
  const uint8_t* addr = b + kV2Fixed;
  // Only a stream over IPv4 or IPv6 names a client; UNSPEC, UDP and unix sockets keep
  // the connection's own peer (the spec lets a receiver ignore what it cannot use).
  if (family == 1 && proto == 1) {
    if (len < 12) return fail(ProxyHeaderError::kMalformed, 2);
    h.local = false;
    h.source = IpAddr::from_v4(addr);
    h.source_port = static_cast<uint16_t>((addr[8] << 8) | addr[9]);
  } else if (family == 2 && proto == 1) {
    if (len < 36) return fail(ProxyHeaderError::kMalformed, 2);
    h.local = false;
    h.source = IpAddr::from_v6(addr);
    h.source_port = static_cast<uint16_t>((addr[32] << 8) | addr[33]);
  } else if (family > 3 || proto > 2) {
    return fail(ProxyHeaderError::kMalformed, 2);
  }
  return h;
}

}  // namespace

const char* proxy_header_error_name(ProxyHeaderError e) {
  switch (e) {
    case ProxyHeaderError::kNone: return "none";
    case ProxyHeaderError::kMissing: return "missing";
    case ProxyHeaderError::kMalformed: return "malformed";
    case ProxyHeaderError::kOversize: return "oversize";
    case ProxyHeaderError::kUnsupported: return "unsupported";
    case ProxyHeaderError::kTimeout: return "timeout";
    case ProxyHeaderError::kCount: break;
  }
  return "unknown";
}

ProxyHeader parse_proxy_header(std::string_view data) {
  if (data.empty()) return ProxyHeader{};
  const std::string_view sig(reinterpret_cast<const char*>(kV2Sig), sizeof kV2Sig);
  if (data[0] == 'P') {
    if (!prefix_match(data, kV1Prefix)) return fail(ProxyHeaderError::kMissing, 0);
    if (data.size() < kV1Prefix.size()) return ProxyHeader{};
    return parse_v1(data);
  }
  if (data[0] == sig[0]) {
    if (!prefix_match(data, sig)) return fail(ProxyHeaderError::kMissing, 0);
    if (data.size() < sig.size()) return ProxyHeader{};
    return parse_v2(data);
  }
  return fail(ProxyHeaderError::kMissing, 0);
}

}  // namespace fg::http
