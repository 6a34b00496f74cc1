// Parsing of the Redis connection URL into an Endpoint, done once when the config is
// loaded. No hiredis and no libuv here: the config library links this file alone.
#include "redis/endpoint.h"

#include <climits>
#include <cstdint>
#include <string>

namespace fg::redis {

namespace {

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
}

// Parses a non-negative decimal integer no larger than `max`; no sign, no spaces.
bool parse_uint(std::string_view s, uint64_t max, uint64_t* out) {
  if (s.empty() || s.size() > 10) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes (a password may contain '@', ':' or '/' that way).
bool percent_decode(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int hi = hex_value(in[i + 1]);
    int lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

Status url_error(std::string_view url, std::string_view what) {
  std::string m = "invalid redis url \"";
  m.append(url);
  m.append("\": ");
  m.append(what);
  return Status::error(std::move(m));
}

Result<Endpoint> parse_unix(std::string_view url, std::string_view rest) {
  Endpoint ep;
  ep.unix_socket = true;
  ep.host.clear();
  ep.port = 0;
  std::string_view query;
  size_t q = rest.find('?');
  if (q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  if (rest.empty() || rest[0] != '/') return url_error(url, "expected unix:///absolute/path/to/socket");
  if (rest.size() == 1 || rest.back() == '/') return url_error(url, "missing socket file name");
  if (!percent_decode(rest, &ep.path)) return url_error(url, "bad %-escape in socket path");
  if (q != std::string_view::npos) {
    // Only "db=N" is understood; anything else is a typo worth reporting.
    if (query.substr(0, 3) != "db=") return url_error(url, "unknown query parameter (only db=N is supported)");
    uint64_t db = 0;
    if (!parse_uint(query.substr(3), INT_MAX, &db)) return url_error(url, "invalid database number");
    ep.db = static_cast<int>(db);
  }
  return ep;
}

Result<Endpoint> parse_tcp(std::string_view url, std::string_view rest) {
  Endpoint ep;
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (authority.find('?') != std::string_view::npos || path.find('?') != std::string_view::npos ||
      authority.find('#') != std::string_view::npos || path.find('#') != std::string_view::npos) {
    return url_error(url, "query strings are not supported for redis://");
  }

  size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    std::string_view user;
    std::string_view pass = userinfo;
    size_t colon = userinfo.find(':');
    if (colon != std::string_view::npos) {
      user = userinfo.substr(0, colon);
      pass = userinfo.substr(colon + 1);
    }
    // Endpoint carries no ACL user name, so only the default user can be expressed;
    // silently authenticating as "default" with another user's password would fail
    // later with a confusing WRONGPASS, hence the error here.
    if (!user.empty() && user != "default") {
      return url_error(url, "ACL user names are not supported; use redis://:password@host");
    }
    if (!percent_decode(pass, &ep.password)) return url_error(url, "bad %-escape in password");
    if (ep.password.empty()) return url_error(url, "empty password");
  }

  std::string_view host;
  std::string_view port;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return url_error(url, "unterminated [ipv6] host");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return url_error(url, "unexpected characters after ]");
      port = after.substr(1);
      if (port.empty()) return url_error(url, "empty port");
    }
  } else {
    size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return url_error(url, "empty port");
    }
  }
  if (host.empty()) return url_error(url, "missing host");
  ep.host.assign(host);
  if (!port.empty()) {
    uint64_t p = 0;
    if (!parse_uint(port, 65535, &p) || p == 0) return url_error(url, "invalid port");
    ep.port = static_cast<uint16_t>(p);
  }
  if (path.size() > 1) {
    uint64_t db = 0;
    if (!parse_uint(path.substr(1), INT_MAX, &db)) return url_error(url, "invalid database number");
    ep.db = static_cast<int>(db);
  }
  return ep;
}

}  // namespace

Result<Endpoint> parse_url(std::string_view url) {
  if (starts_with_nocase(url, "redis://")) return parse_tcp(url, url.substr(8));
  if (starts_with_nocase(url, "unix://")) return parse_unix(url, url.substr(7));
  if (starts_with_nocase(url, "rediss://")) return url_error(url, "TLS (rediss://) is not supported");
  return url_error(url, "expected redis://[:password@]host[:port][/db] or unix:///path[?db=N]");
}

// "redis://user:secret@host" -> "redis://user:***@host".
std::string redact_url(const std::string& url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return url;
  if (url.compare(0, scheme, "unix") == 0) return url;  // a socket path has no password
  const size_t start = scheme + 3;
  // The last '@': a password may itself contain '/' or '@'.
  const size_t at = url.rfind('@');
  if (at == std::string::npos || at < start) return url;
  const size_t colon = url.find(':', start);
  const size_t from = colon != std::string::npos && colon < at ? colon + 1 : start;
  if (from == at) return url;
  return url.substr(0, from) + "***" + url.substr(at);
}

}  // namespace fg::redis
