// The real client address behind trusted proxies (see real_ip.h).
#include "http/real_ip.h"

namespace fg::http {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The comma-separated entries of every `name` header line, in order.
std::vector<std::string_view> list_of(const std::vector<Header>& headers, std::string_view name) {
  std::vector<std::string_view> out;
  for (const Header& h : headers) {
    if (!iequals(h.name, name)) continue;
    std::string_view v = h.value;
    while (true) {
      const size_t comma = v.find(',');
      const std::string_view item = trim(v.substr(0, comma));
      if (!item.empty()) out.push_back(item);
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  return out;
}

// An entry as proxies write it: a bare address, "[v6]" or "[v6]:port", or "v4:port".
bool entry_address(std::string_view e, IpAddr* out) {
  if (!e.empty() && e.front() == '[') {
    const size_t close = e.find(']');
    if (close == std::string_view::npos) return false;
    return IpAddr::parse(e.substr(1, close - 1), out);
  }
  if (IpAddr::parse(e, out)) return true;
  const size_t colon = e.find(':');
  if (colon != std::string_view::npos && e.find(':', colon + 1) == std::string_view::npos) {
    IpAddr a;
    if (IpAddr::parse(e.substr(0, colon), &a) && a.v4) {
      *out = a;
      return true;
    }
  }
  return false;
}

}  // namespace

RealIp resolve_real_ip(std::string_view peer, const std::vector<Header>& headers, std::string_view header,
                       const CidrList& trusted) {
  RealIp r;
  r.client = std::string(peer);
  if (trusted.empty() || !trusted.contains(peer)) return r;
  const std::vector<std::string_view> entries = list_of(headers, header);
  IpAddr client;
  for (size_t i = entries.size(); i-- > 0;) {
    IpAddr a;
    if (!entry_address(entries[i], &a)) break;
    client = a;
    r.from_header = true;
    if (!trusted.contains(a)) break;
  }
  if (!r.from_header) return r;
  r.client = client.text();

  // The chain sent upstream: the incoming X-Forwarded-For without the trusted hops on
  // its right (our own balancers), then the client if it is not already last.
  std::vector<std::string_view> chain = list_of(headers, "X-Forwarded-For");
  while (!chain.empty()) {
    IpAddr a;
    if (!entry_address(chain.back(), &a) || !trusted.contains(a)) break;
    chain.pop_back();
  }
  IpAddr last;
  const bool ends_with_client = !chain.empty() && entry_address(chain.back(), &last) && last == client;
  for (std::string_view e : chain) {
    if (!r.forwarded_for.empty()) r.forwarded_for += ", ";
    r.forwarded_for += e;
  }
  if (!ends_with_client) {
    if (!r.forwarded_for.empty()) r.forwarded_for += ", ";
    r.forwarded_for += r.client;
  }
  return r;
}

}  // namespace fg::http
