// The PROXY protocol header (HAProxy's spec, versions 1 and 2) that an L4 balancer puts
// in front of a connection's bytes to pass on the client's address. Parsed before HTTP
// on a listener with server.proxy_protocol = true; pure code, no loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "config/cidr.h"

namespace fg::http {

// Why a header was refused (also the `reason` label of the metric).
enum class ProxyHeaderError : int {
  kNone = 0,
  kMissing,     // the bytes start like something else (e.g. an HTTP request)
  kMalformed,   // a v1 line or v2 block that breaks the grammar
  kOversize,    // a v1 line past 107 bytes, or a v2 block past kMaxProxyV2Bytes
  kUnsupported, // a v2 version or command this side does not know
  kTimeout,     // not complete within server.proxy_protocol_timeout (set by the caller)
  kCount
};
const char* proxy_header_error_name(ProxyHeaderError e);

// A v2 header's address block plus TLVs are at most 65535 bytes by the format; we
// accept up to this many in all, which leaves room for every TLV balancers send
// (AWS, GCP and Azure add well under 1 KiB).
inline constexpr size_t kMaxProxyV2Bytes = 4096;
// v1: "PROXY " ... "\r\n", 107 bytes at most (the spec's bound).
inline constexpr size_t kMaxProxyV1Bytes = 107;

struct ProxyHeader {
  enum class State { kNeedMore, kDone, kError };
  State state = State::kNeedMore;
  ProxyHeaderError error = ProxyHeaderError::kNone;
  size_t length = 0;   // bytes the header took (kDone): the connection's data starts after it
  bool local = true;   // no address passed on (v2 LOCAL, v1 UNKNOWN, v2 UNSPEC or unix):
                       // the connection's own peer address stands
  IpAddr source;       // the client's address, when !local
  uint16_t source_port = 0;
  int version = 0;     // 1 or 2, once known
};

// Looks at the first bytes of a connection (everything received so far, from the
// start). kNeedMore while the bytes are a valid prefix of a header; kError as soon as
// they cannot become one, so an HTTP request sent without a header is refused at its
// first bytes rather than after a timeout.
ProxyHeader parse_proxy_header(std::string_view data);

}  // namespace fg::http
