// The real client address behind trusted proxies (server.trusted_proxies and
// server.real_ip_header), as nginx's realip module with real_ip_recursive on: when the
// connection's peer is trusted, the header's addresses are read from the right and the
// first one that is not trusted is the client.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/cidr.h"
#include "http/message.h"

namespace fg::http {

struct RealIp {
  std::string client;        // the address every per-client decision and log line uses
  bool from_header = false;  // taken from the header (the peer is a trusted proxy)
  // The X-Forwarded-For value to send upstream when from_header: the incoming chain
  // with the trusted hops on its right dropped, ending with `client`. Empty otherwise
  // (the peer's address is appended to the incoming chain, as before).
  std::string forwarded_for;
};

// `peer`: the connection's address (or the PROXY header's). `header`: the configured
// header name (any case), e.g. "X-Forwarded-For" or "CF-Connecting-IP"; several lines
// of it count as one comma-separated list. An entry that is not an address ends the
// walk: the client is then the last trusted hop read, so a garbled entry never becomes
// a per-client key. When every entry is trusted, the leftmost one is the client.
RealIp resolve_real_ip(std::string_view peer, const std::vector<Header>& headers, std::string_view header,
                       const CidrList& trusted);

}  // namespace fg::http
