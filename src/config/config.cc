// Loading and validation of the TOML configuration into an immutable fg::Config.
// Every key is checked against the set this version understands, so that a typo
// fails the load instead of silently leaving a protection switched off.
#include "floodgate/config.h"
#include "idempotency/key_source.h"
#include "redis/redis_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <string_view>
#include <thread>
#include <toml++/toml.h>

#include "floodgate/units.h"

namespace fg::config {
namespace {

// The shared toml++ library is built with exceptions, so parse errors arrive as
// toml::parse_error; they are caught right at the call and never leave this file.

constexpr uint64_t kMinHeaderBytes = 1024;
constexpr uint64_t kMaxHeaderBytes = 1024 * 1024;
constexpr uint64_t kMinUriBytes = 64;
constexpr int kMaxWorkers = 256;
constexpr uint64_t kMaxDurationMs = 24ull * 60 * 60 * 1000;
// How long a completed idempotent answer may be kept for replay.
constexpr uint64_t kMaxIdempotencyTtlMs = 30 * kMaxDurationMs;
// Route queues (SPEC §6).
constexpr int64_t kMaxQueueDepth = 100'000'000;
constexpr uint64_t kMaxQueueWaitMs = 7 * kMaxDurationMs;
constexpr uint64_t kMinProcessingTimeoutMs = 100;
constexpr uint64_t kMaxTicketTtlMs = 30 * kMaxDurationMs;
constexpr int64_t kMaxQueueConcurrency = 10'000;
constexpr int64_t kMaxRetryAttempts = 20;
constexpr int64_t kMaxWaitReplicas = 16;
// Circuit breakers and active health checks (SPEC §7).
constexpr uint64_t kMaxBreakerWindowMs = 10 * 60 * 1000;
constexpr int64_t kMaxBreakerMinRequests = 1'000'000;
constexpr uint64_t kMinBreakerOpenMs = 100;
constexpr uint64_t kMaxBreakerOpenMs = 3600 * 1000;
constexpr int64_t kMaxHalfOpenProbes = 1000;
constexpr uint64_t kMinHealthIntervalMs = 100;
constexpr int64_t kMaxHealthThreshold = 100;
// Route response cache: the smallest useful per-route budget.
constexpr uint64_t kMinCacheBytes = 1024;
// Admission rates and bursts, in requests (per second). Far above what one
// instance can serve, low enough that the limiter's arithmetic stays exact.
constexpr double kMaxRate = 10'000'000;
// Per-route slots of the per-client limiter (16 bytes each).
constexpr int64_t kMinClientTableSize = 1024;
constexpr int64_t kMaxClientTableSize = 16 * 1024 * 1024;
// An admin token shorter than this is guessable by brute force over the network.
constexpr size_t kMinTokenChars = 16;
// Config files are small; a bound keeps a wrong path (a disk image, /dev/zero)
// from being read into memory.
constexpr size_t kMaxFileBytes = 16 * 1024 * 1024;
// After this many problems the rest is usually fallout from the first ones.
constexpr size_t kMaxErrors = 20;

std::string hash_hex(std::string_view bytes) {
  // 64-bit FNV-1a: a fingerprint to tell two loaded versions apart, not a
  // security measure.
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[static_cast<size_t>(i)] = kHex[h & 0xf];
    h >>= 4;
  }
  return out;
}

std::string_view type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    default: return "nothing";
  }
}

// Edit distance, used only to suggest the intended key for an unknown one.
size_t distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + cost});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// "redis://user:secret@host" -> "redis://user:***@host", for error messages.
std::string redact_url_password(const std::string& url) {
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

// RFC 9110 tchar: what an HTTP method token may contain.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// Route and upstream names end up in metric labels and log fields, so they
// are kept to characters that need no escaping there.
bool is_name(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// A number for messages: integral values without a fraction ("3000", not
// "3000.000000" or "3e+03").
std::string format_number(double x) {
  if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 1e15) {
    return std::to_string(static_cast<int64_t>(x));
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

// A duration for messages, in the largest unit that divides it: "30s", "7d".
std::string format_ms(uint64_t ms) {
  static constexpr std::pair<uint64_t, const char*> kUnits[] = {
      {24ull * 3600 * 1000, "d"}, {3600 * 1000, "h"}, {60 * 1000, "m"}, {1000, "s"}};
  for (const auto& [size, unit] : kUnits) {
    if (ms != 0 && ms % size == 0) return std::to_string(ms / size) + unit;
  }
  return std::to_string(ms) + "ms";
}

// A value that becomes (part of) an HTTP header: a CR or LF would split the
// response, so control characters are refused.
bool has_control_char(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

// An IP address in one spelling ("::0001" and "::1" are the same listener);
// anything inet_pton does not take is returned unchanged.
std::string canonical_ip(const std::string& host) {
  const size_t zone = host.find('%');
  const std::string address = host.substr(0, zone);
  in6_addr a6{};
  char buf[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET6, address.c_str(), &a6) == 1 && inet_ntop(AF_INET6, &a6, buf, sizeof buf) != nullptr) {
    return std::string(buf) + (zone == std::string::npos ? "" : host.substr(zone));
  }
  return host;
}

bool is_hostname(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.';
    if (!ok) return false;
  }
  // A numeric last label ("10.0.0.256") is a mistyped IPv4 address, never a
  // name a resolver would find.
  const std::string_view last = s.substr(s.rfind('.') == std::string_view::npos ? 0 : s.rfind('.') + 1);
  return !last.empty() && !std::all_of(last.begin(), last.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Parses on_failure_webhook: "http://HOST[:PORT][/PATH]" with HOST a literal
// IPv4 address, a [bracketed] IPv6 address or a host name. On success `out`
// is the URL with the port and path spelled out ("http://10.0.0.5:80/"); on
// failure `why` says what is wrong.
bool parse_webhook_url(const std::string& url, std::string* out, std::string* why) {
  auto lower_prefix = [&](std::string_view prefix) {
    if (url.size() < prefix.size()) return false;
    for (size_t i = 0; i < prefix.size(); ++i) {
      const char c = url[i];
      const char l = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
      if (l != prefix[i]) return false;
    }
    return true;
  };
  if (lower_prefix("https://")) {
    *why = "https:// is not supported; the webhook is posted over plain http:// (point it at a local relay for TLS)";
    return false;
  }
  if (!lower_prefix("http://")) {
    *why = "expected \"http://HOST[:PORT]/PATH\"";
    return false;
  }
  const std::string rest = url.substr(7);
  if (rest.find('#') != std::string::npos) {
    *why = "must not contain a fragment ('#')";
    return false;
  }
  const size_t path_at = rest.find_first_of("/?");
  const std::string authority = rest.substr(0, path_at);
  std::string path = path_at == std::string::npos ? "/" : rest.substr(path_at);
  if (path.front() == '?') path.insert(0, "/");
  if (authority.find('@') != std::string::npos) {
    *why = "user information (\"user@\") is not supported";
    return false;
  }
  std::string host;
  std::string port_text;
  bool v6 = false;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string::npos) {
      *why = "missing ']' after the IPv6 address";
      return false;
    }
    host = authority.substr(1, close - 1);
    in6_addr a6{};
    if (inet_pton(AF_INET6, host.c_str(), &a6) != 1) {
      *why = "not an IPv6 address inside [...]";
      return false;
    }
    v6 = true;
    const std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        *why = "expected \":PORT\" after the IPv6 address";
        return false;
      }
      port_text = after.substr(1);
      if (port_text.empty()) port_text = "-";  // "[::1]:" names no port
    }
  } else {
    const size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.find(':') != std::string::npos) {
        *why = "IPv6 addresses go in brackets, e.g. \"http://[::1]:8081/hook\"";
        return false;
      }
      if (port_text.empty()) port_text = "-";
    }
    if (host.empty()) {
      *why = "missing host";
      return false;
    }
    in_addr a4{};
    if (inet_pton(AF_INET, host.c_str(), &a4) != 1 && !is_hostname(host)) {
      *why = "invalid host \"" + host + "\"";
      return false;
    }
  }
  int port = 80;
  if (!port_text.empty()) {
    if (port_text.size() > 5 ||
        !std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        (port = std::stoi(port_text)) < 1 || port > 65535) {
      *why = "port must be a number 1-65535";
      return false;
    }
  }
  if (std::any_of(path.begin(), path.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u >= 0x7f;
      })) {
    *why = "the path must not contain spaces, control characters or non-ASCII bytes (percent-encode them)";
    return false;
  }
  *out = "http://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port) + path;
  return true;
}

class Loader {
 public:
  explicit Loader(std::string name) : name_(std::move(name)) {}

  Result<std::shared_ptr<const Config>> load(const std::string& text) {
    toml::table root;
    try {
      root = toml::parse(text, name_);
    } catch (const toml::parse_error& e) {
      error_at(e.source(), "", std::string(e.description()));
      return finish();
    }
    auto cfg = std::make_shared<Config>();
    cfg->source_path = name_;
    cfg->hash = hash_hex(text);
    load_root(root, *cfg);
    if (!errors_.empty()) return finish();
    return std::shared_ptr<const Config>(std::move(cfg));
  }

 private:
  // ---- error reporting -------------------------------------------------------

  void add_error(std::string line) {
    if (errors_.size() < kMaxErrors) errors_.push_back(std::move(line));
    else truncated_ = true;
  }

  // "FILE:LINE:COL: key.path: message", or "FILE: key.path: message" when the
  // node has no position (tables that were never written in the file).
  void error_at(const toml::source_region& where, const std::string& path, const std::string& message) {
    std::string line = name_;
    if (where.begin.line != 0) {
      line += ':' + std::to_string(where.begin.line) + ':' + std::to_string(where.begin.column);
    }
    line += ": ";
    if (!path.empty()) line += path + ": ";
    line += message;
    add_error(std::move(line));
  }

  void error(const toml::node& node, const std::string& path, const std::string& message) {
    error_at(node.source(), path, message);
  }

  void error_no_pos(const std::string& path, const std::string& message) {
    error_at(toml::source_region{}, path, message);
  }

  Status finish() {
    std::string all;
    for (const std::string& e : errors_) {
      if (!all.empty()) all += '\n';
      all += e;
    }
    if (truncated_) all += "\n" + name_ + ": (further errors not shown)";
    return Status::error(std::move(all));
  }

  static std::string join(const std::string& path, std::string_view key) {
    if (path.empty()) return std::string(key);
    return path + "." + std::string(key);
  }

  static std::string index(const std::string& path, size_t i) {
    return path + "[" + std::to_string(i) + "]";
  }

  // ---- typed readers: each reports its own error and returns false -------

  // Rejects every key of `table` that is not in `allowed`, pointing at the key.
  void check_keys(const toml::table& table, const std::string& path,
                  std::initializer_list<std::string_view> allowed) {
    for (auto&& [key, node] : table) {
      (void)node;
      const std::string_view k = key.str();
      if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) continue;
      std::string message = "unknown key";
      std::string_view best;
      // Short keys are all close to each other ("rate" vs "name"), so they only
      // get a suggestion for a single-character slip.
      size_t best_distance = k.size() <= 4 ? 2 : 3;
      for (std::string_view candidate : allowed) {
        const size_t d = distance(k, candidate);
        if (d < best_distance) {
          best_distance = d;
          best = candidate;
        }
      }
      if (!best.empty()) message += " (did you mean \"" + std::string(best) + "\"?)";
      error_at(key.source(), join(path, k), message);
    }
  }

  const toml::table* as_table(const toml::node& node, const std::string& path) {
    if (const toml::table* t = node.as_table()) return t;
    error(node, path, "expected a table, got " + std::string(type_name(node)));
    return nullptr;
  }

  bool read_string(const toml::node& node, const std::string& path, std::string* out) {
    if (const auto* v = node.as_string()) {
      *out = v->get();
      return true;
    }
    error(node, path, "expected a string, got " + std::string(type_name(node)));
    return false;
  }

  bool read_bool(const toml::node& node, const std::string& path, bool* out) {
    if (const auto* v = node.as_boolean()) {
      *out = v->get();
      return true;
    }
    error(node, path, "expected true or false, got " + std::string(type_name(node)));
    return false;
  }

  bool read_int(const toml::node& node, const std::string& path, int64_t min, int64_t max,
                uint64_t* out) {
    const auto* v = node.as_integer();
    if (v == nullptr) {
      error(node, path, "expected an integer, got " + std::string(type_name(node)));
      return false;
    }
    const int64_t x = v->get();
    if (x < min || x > max) {
      const std::string range = max == INT64_MAX ? "must be at least " + std::to_string(min)
                                                 : "must be between " + std::to_string(min) + " and " +
                                                       std::to_string(max);
      error(node, path, range + ", got " + std::to_string(x));
      return false;
    }
    *out = static_cast<uint64_t>(x);
    return true;
  }

  // Rates and bursts: an integer or a float, finite, between `min` (excluded
  // when `min_exclusive`) and `max`.
  bool read_number(const toml::node& node, const std::string& path, double min, bool min_exclusive, double max,
                   double* out) {
    double x = 0;
    if (const auto* i = node.as_integer()) {
      x = static_cast<double>(i->get());
    } else if (const auto* f = node.as_floating_point()) {
      x = f->get();
    } else {
      error(node, path, "expected a number, got " + std::string(type_name(node)));
      return false;
    }
    const bool low = min_exclusive ? !(x > min) : !(x >= min);
    if (low || !(x <= max)) {
      const std::string range = min_exclusive ? "must be greater than " + format_number(min) + " and at most "
                                              : "must be between " + format_number(min) + " and ";
      error(node, path, range + format_number(max) + ", got " + format_number(x));
      return false;
    }
    *out = x;
    return true;
  }

  // Durations are strings with a unit; all timeouts here must be positive.
  bool read_duration(const toml::node& node, const std::string& path, uint64_t* out) {
    return read_duration(node, path, 1, kMaxDurationMs, out);
  }

  bool read_duration(const toml::node& node, const std::string& path, uint64_t min_ms, uint64_t max_ms,
                     uint64_t* out) {
    const auto* v = node.as_string();
    if (v == nullptr) {
      error(node, path, "expected a duration string such as \"10s\", got " + std::string(type_name(node)));
      return false;
    }
    Result<uint64_t> ms = parse_duration_ms(v->get());
    if (!ms) {
      error(node, path, ms.message());
      return false;
    }
    if (*ms < min_ms || *ms > max_ms) {
      error(node, path, "must be between " + format_ms(min_ms) + " and " + format_ms(max_ms) + ", got \"" +
                            v->get() + "\"");
      return false;
    }
    *out = *ms;
    return true;
  }

  // Sizes are strings with a unit, or integers counting bytes.
  bool read_size(const toml::node& node, const std::string& path, uint64_t min, uint64_t max,
                 uint64_t* out) {
    uint64_t bytes = 0;
    if (const auto* i = node.as_integer()) {
      if (i->get() < 0) {
        error(node, path, "invalid size " + std::to_string(i->get()) + ": must not be negative");
        return false;
      }
      bytes = static_cast<uint64_t>(i->get());
    } else if (const auto* s = node.as_string()) {
      Result<uint64_t> parsed = parse_size_bytes(s->get());
      if (!parsed) {
        error(node, path, parsed.message());
        return false;
      }
      bytes = *parsed;
    } else {
      error(node, path, "expected a size such as \"16KiB\" or an integer of bytes, got " +
                            std::string(type_name(node)));
      return false;
    }
    if (bytes < min || bytes > max) {
      const std::string range = max == UINT64_MAX ? "must be at least " + std::to_string(min) + " bytes"
                                                  : "must be between " + std::to_string(min) + " and " +
                                                        std::to_string(max) + " bytes";
      error(node, path, range + ", got " + std::to_string(bytes));
      return false;
    }
    *out = bytes;
    return true;
  }

  // "host:port", "[v6]:port". Listeners need literal addresses (nothing to
  // resolve at bind time); upstream servers may also name a host.
  bool read_host_port(const toml::node& node, const std::string& path, bool allow_name, HostPort* out) {
    std::string text;
    if (!read_string(node, path, &text)) return false;
    auto fail = [&](const std::string& why) {
      error(node, path, "invalid address \"" + text + "\": " + why);
      return false;
    };
    std::string host;
    std::string_view port;
    if (!text.empty() && text.front() == '[') {
      const size_t close = text.find(']');
      if (close == std::string::npos) return fail("missing ']'");
      host = text.substr(1, close - 1);
      if (close + 1 >= text.size() || text[close + 1] != ':') return fail("expected \"[ADDRESS]:PORT\"");
      port = std::string_view(text).substr(close + 2);
      // A link-local address may carry a zone ("fe80::1%eth0"); inet_pton
      // does not know zones, so only the address part is checked here.
      const size_t zone = host.find('%');
      const std::string address = host.substr(0, zone);
      in6_addr a6{};
      if (inet_pton(AF_INET6, address.c_str(), &a6) != 1) return fail("not an IPv6 address inside [...]");
      if (zone != std::string::npos && !is_name(std::string_view(host).substr(zone + 1))) {
        return fail("invalid IPv6 zone");
      }
    } else {
      const size_t colon = text.rfind(':');
      if (colon == std::string::npos) return fail("expected \"HOST:PORT\"");
      host = text.substr(0, colon);
      port = std::string_view(text).substr(colon + 1);
      if (host.find(':') != std::string::npos) {
        return fail("IPv6 addresses go in brackets, e.g. \"[::1]:8080\"");
      }
      in_addr a4{};
      const bool is_ip = inet_pton(AF_INET, host.c_str(), &a4) == 1;
      if (!is_ip) {
        if (!allow_name) return fail("expected a literal IPv4 address or [IPv6] address");
        if (!is_hostname(host)) return fail("invalid host name");
      }
    }
    if (host.empty()) return fail("missing host");
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return fail("port must be a number 1-65535");
    }
    const int p = std::stoi(std::string(port));
    if (p < 1 || p > 65535) return fail("port must be a number 1-65535");
    out->host = std::move(host);
    out->port = static_cast<uint16_t>(p);
    out->text = std::move(text);
    return true;
  }

  // A string or an array of strings; duplicates are rejected because two
  // entries for one address is always a copy-paste slip.
  void read_address_list(const toml::node& node, const std::string& path, bool allow_array,
                         bool allow_name, std::vector<HostPort>* out) {
    auto add = [&](const toml::node& n, const std::string& p) {
      HostPort hp;
      if (!read_host_port(n, p, allow_name, &hp)) return;
      for (const HostPort& seen : *out) {
        if (seen.host == hp.host && seen.port == hp.port) {
          error(n, p, "\"" + hp.text + "\" is listed twice");
          return;
        }
      }
      out->push_back(std::move(hp));
    };
    if (const toml::array* arr = node.as_array()) {
      if (arr->empty()) {
        error(node, path, "must list at least one address");
        return;
      }
      for (size_t i = 0; i < arr->size(); ++i) add((*arr)[i], index(path, i));
      return;
    }
    if (allow_array && node.is_string()) {
      add(node, path);
      return;
    }
    error(node, path, std::string(allow_array ? "expected a string or an array of strings"
                                              : "expected an array of strings") +
                          ", got " + std::string(type_name(node)));
  }

  // ---- sections ----------------------------------------------------------

  void load_root(const toml::table& root, Config& cfg) {
    check_keys(root, "", {"server", "upstreams", "routes", "admin", "redis", "degrade", "pressure", "reload", "log"});

    if (const toml::node* n = root.get("server")) {
      if (const toml::table* t = as_table(*n, "server")) load_server(*t, cfg);
    } else {
      error_no_pos("server", "missing [server] table");
    }

    if (const toml::node* n = root.get("upstreams")) {
      if (const toml::table* t = as_table(*n, "upstreams")) load_upstreams(*t, cfg);
    } else {
      error_no_pos("upstreams", "at least one [upstreams.NAME] table is required");
    }

    if (const toml::node* n = root.get("routes")) {
      load_routes(*n, cfg);
    } else {
      error_no_pos("routes", "at least one [[routes]] entry is required");
    }

    // After [server]: the admin address is checked against server.listen.
    if (const toml::node* n = root.get("admin")) {
      if (const toml::table* t = as_table(*n, "admin")) load_admin(*t, cfg);
    }
    if (const toml::node* n = root.get("redis")) {
      if (const toml::table* t = as_table(*n, "redis")) load_redis(*t, cfg.redis);
    }
    // Walks the file's routes rather than cfg.routes, which leaves out broken
    // ones: the message names the route by its position in the file.
    const toml::node* routes_node = root.get("routes");
    const toml::array* routes = routes_node ? routes_node->as_array() : nullptr;
    if (routes != nullptr && !root.contains("redis")) {
      for (size_t i = 0; i < routes->size(); ++i) {
        const toml::table* rt = routes->get(i)->as_table();
        const toml::node* idem = rt ? rt->get("idempotency") : nullptr;
        if (idem != nullptr && idem->is_table()) {
          error(*idem, index("routes", i) + ".idempotency",
                "idempotency keys live in Redis: add a [redis] table (url = \"redis://host:port/db\")");
        }
        const toml::node* overflow = rt ? rt->get("overflow") : nullptr;
        if (overflow != nullptr && overflow->value<std::string>() == "queue") {
          error(*overflow, index("routes", i) + ".overflow",
                "the ticket queue lives in Redis: add a [redis] table (url = \"redis://host:port/db\")");
        }
        const toml::node* mode = rt ? rt->get("mode") : nullptr;
        if (mode != nullptr && mode->value<std::string>() == "store_and_forward") {
          error(*mode, index("routes", i) + ".mode",
                "the ticket queue lives in Redis: add a [redis] table (url = \"redis://host:port/db\")");
        }
        const toml::node* unavailable = rt ? rt->get("on_unavailable") : nullptr;
        if (unavailable != nullptr && unavailable->value<std::string>() == "queue") {
          error(*unavailable, index("routes", i) + ".on_unavailable",
                "the ticket queue lives in Redis: add a [redis] table (url = \"redis://host:port/db\")");
        }
      }
    }
    if (const toml::node* n = root.get("degrade")) {
      if (const toml::table* t = as_table(*n, "degrade")) load_degrade(*t, cfg.degrade);
    }
    if (const toml::node* n = root.get("pressure")) {
      if (const toml::table* t = as_table(*n, "pressure")) load_pressure(*t, cfg.pressure);
    }
    if (const toml::node* n = root.get("reload")) {
      if (const toml::table* t = as_table(*n, "reload")) load_reload(*t, cfg.reload);
    }

    if (const toml::node* n = root.get("log")) {
      if (const toml::table* t = as_table(*n, "log")) load_log(*t, cfg.log);
    }
  }

  void load_server(const toml::table& t, Config& cfg) {
    ServerConfig& s = cfg.server;
    check_keys(t, "server",
               {"listen", "workers", "max_connections", "header_timeout", "body_timeout", "idle_timeout",
                "send_timeout", "drain_timeout", "max_header_bytes", "max_uri_bytes", "max_body_bytes",
                "client_table_size", "tickets_path"});

    if (const toml::node* n = t.get("listen")) {
      read_address_list(*n, "server.listen", true, false, &s.listen);
    } else {
      error(t, "server.listen", "required, e.g. listen = \"0.0.0.0:8080\"");
    }

    if (const toml::node* n = t.get("workers")) {
      if (const auto* str = n->as_string()) {
        if (str->get() == "auto") {
          s.workers_auto = true;
          const unsigned cores = std::thread::hardware_concurrency();
          s.workers = static_cast<int>(std::clamp(cores, 1u, static_cast<unsigned>(kMaxWorkers)));
        } else {
          error(*n, "server.workers", "expected \"auto\" or a number 1-256, got \"" + str->get() + "\"");
        }
      } else if (n->is_integer()) {
        uint64_t w = 0;
        if (read_int(*n, "server.workers", 1, kMaxWorkers, &w)) s.workers = static_cast<int>(w);
      } else {
        error(*n, "server.workers", "expected \"auto\" or a number 1-256, got " + std::string(type_name(*n)));
      }
    }

    if (const toml::node* n = t.get("max_connections")) {
      read_int(*n, "server.max_connections", 1, INT64_MAX, &s.max_connections);
    }

    const std::pair<std::string_view, uint64_t*> timeouts[] = {
        {"header_timeout", &s.header_timeout_ms}, {"body_timeout", &s.body_timeout_ms},
        {"idle_timeout", &s.idle_timeout_ms},     {"send_timeout", &s.send_timeout_ms},
        {"drain_timeout", &s.drain_timeout_ms},
    };
    for (const auto& [key, field] : timeouts) {
      if (const toml::node* n = t.get(key)) read_duration(*n, join("server", key), field);
    }

    if (const toml::node* n = t.get("max_header_bytes")) {
      read_size(*n, "server.max_header_bytes", kMinHeaderBytes, kMaxHeaderBytes, &s.max_header_bytes);
    }
    if (const toml::node* n = t.get("max_uri_bytes")) {
      // The request line is part of the head, so a URI limit above the head
      // limit could never fire: 431 would always come first.
      if (read_size(*n, "server.max_uri_bytes", kMinUriBytes, kMaxHeaderBytes, &s.max_uri_bytes) &&
          s.max_uri_bytes > s.max_header_bytes) {
        error(*n, "server.max_uri_bytes",
              "must not exceed server.max_header_bytes (" + std::to_string(s.max_header_bytes) + ")");
      }
    }
    if (const toml::node* n = t.get("max_body_bytes")) {
      read_size(*n, "server.max_body_bytes", 0, UINT64_MAX, &s.max_body_bytes);
    }
    if (const toml::node* n = t.get("client_table_size")) {
      read_int(*n, "server.client_table_size", kMinClientTableSize, kMaxClientTableSize, &cfg.client_table_size);
    }
    if (const toml::node* n = t.get("tickets_path")) read_tickets_path(*n, s);
  }

  // The path prefix that ticket polls and cancellations are answered under,
  // ahead of route matching: "/_floodgate/tickets/" + id.
  void read_tickets_path(const toml::node& n, ServerConfig& s) {
    const std::string p = "server.tickets_path";
    std::string v;
    if (!read_string(n, p, &v)) return;
    if (v.size() < 2 || v.front() != '/' || v.back() != '/') {
      error(n, p, "must start and end with '/' and name at least one segment, e.g. \"/_floodgate/tickets/\"; got \"" +
                      v + "\"");
      return;
    }
    for (char c : v) {
      const auto u = static_cast<unsigned char>(c);
      if (u <= 0x20 || u >= 0x7f) {
        error(n, p, "must not contain spaces, control characters or non-ASCII bytes");
        return;
      }
      if (c == '?' || c == '#') {
        error(n, p, "is a path; it must not contain '?' or '#'");
        return;
      }
    }
    s.tickets_path = std::move(v);
  }

  void load_upstreams(const toml::table& t, Config& cfg) {
    if (t.empty()) {
      error(t, "upstreams", "at least one [upstreams.NAME] table is required");
      return;
    }
    // toml++ keeps keys sorted; file order is what an operator expects to see
    // in /status, so sort by position before loading.
    std::vector<std::pair<const toml::key*, const toml::node*>> entries;
    for (auto&& [key, node] : t) entries.emplace_back(&key, &node);
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      const auto& pa = a.first->source().begin;
      const auto& pb = b.first->source().begin;
      return pa.line != pb.line ? pa.line < pb.line : pa.column < pb.column;
    });
    for (const auto& [key, node] : entries) {
      const std::string name(key->str());
      const std::string path = "upstreams." + name;
      if (!is_name(name)) {
        error_at(key->source(), path, "upstream names may use only letters, digits, '_', '-' and '.'");
        continue;
      }
      const toml::table* ut = as_table(*node, path);
      if (ut == nullptr) continue;
      UpstreamConfig u;
      u.name = name;
      load_upstream(*ut, path, u);
      cfg.upstreams.push_back(std::move(u));
    }
  }

  void load_upstream(const toml::table& t, const std::string& path, UpstreamConfig& u) {
    check_keys(t, path,
               {"servers", "backup", "balance", "connect_timeout", "timeout", "timeout_min", "timeout_max",
                "max_connections", "keepalive", "keepalive_timeout", "retry", "breaker", "health"});

    if (const toml::node* n = t.get("servers")) {
      read_address_list(*n, path + ".servers", false, true, &u.servers);
    } else {
      error(t, path + ".servers", "required, e.g. servers = [\"127.0.0.1:8081\"]");
    }
    if (const toml::node* n = t.get("backup")) read_backup(*n, path + ".backup", u);

    if (const toml::node* n = t.get("balance")) {
      std::string b;
      if (read_string(*n, path + ".balance", &b)) {
        if (b == "round_robin") u.balance = Balance::kRoundRobin;
        else if (b == "least_conn") u.balance = Balance::kLeastConn;
        else error(*n, path + ".balance", "expected \"round_robin\" or \"least_conn\", got \"" + b + "\"");
      }
    }
    if (const toml::node* n = t.get("connect_timeout")) {
      read_duration(*n, path + ".connect_timeout", &u.connect_timeout_ms);
    }
    if (const toml::node* n = t.get("timeout")) read_upstream_timeout(*n, path + ".timeout", u);
    read_timeout_bounds(t, path, u);
    if (const toml::node* n = t.get("keepalive_timeout")) {
      read_duration(*n, path + ".keepalive_timeout", &u.keepalive_timeout_ms);
    }
    if (const toml::node* n = t.get("max_connections")) {
      read_int(*n, path + ".max_connections", 1, INT64_MAX, &u.max_connections);
    }
    if (const toml::node* n = t.get("keepalive")) read_int(*n, path + ".keepalive", 0, INT64_MAX, &u.keepalive);
    if (const toml::node* n = t.get("retry")) {
      if (const toml::table* rt = as_table(*n, path + ".retry")) load_retry(*rt, path + ".retry", u.retry);
    }
    if (const toml::node* n = t.get("breaker")) {
      if (const toml::table* bt = as_table(*n, path + ".breaker")) load_breaker(*bt, path + ".breaker", u.breaker);
    }
    if (const toml::node* n = t.get("health")) {
      if (const toml::table* ht = as_table(*n, path + ".health")) load_health(*ht, path + ".health", u.health);
    }
  }

  // backup: servers used only while every primary is unavailable. Unlike
  // servers it may be empty (a placeholder for later); an address may not be
  // both a primary and a backup, since it would then be tried twice.
  void read_backup(const toml::node& node, const std::string& path, UpstreamConfig& u) {
    const toml::array* arr = node.as_array();
    if (arr == nullptr) {
      error(node, path, "expected an array of strings, got " + std::string(type_name(node)));
      return;
    }
    for (size_t i = 0; i < arr->size(); ++i) {
      const toml::node& n = (*arr)[i];
      const std::string p = index(path, i);
      HostPort hp;
      if (!read_host_port(n, p, true, &hp)) continue;
      auto same = [&](const HostPort& other) {
        return other.port == hp.port && canonical_ip(other.host) == canonical_ip(hp.host);
      };
      if (std::any_of(u.backup.begin(), u.backup.end(), same)) {
        error(n, p, "\"" + hp.text + "\" is listed twice");
      } else if (std::any_of(u.servers.begin(), u.servers.end(), same)) {
        error(n, p, "\"" + hp.text + "\" is also in servers; a backup must be a different server");
      } else {
        u.backup.push_back(std::move(hp));
      }
    }
  }

  // timeout: a duration, or "adaptive" (derived from the observed latency,
  // between timeout_min and timeout_max).
  void read_upstream_timeout(const toml::node& node, const std::string& path, UpstreamConfig& u) {
    const auto* v = node.as_string();
    if (v == nullptr) {
      error(node, path, "expected a duration string such as \"5s\" or \"adaptive\", got " +
                            std::string(type_name(node)));
      return;
    }
    if (v->get() == "adaptive") {
      u.adaptive_timeout = true;
      return;
    }
    if (Result<uint64_t> ms = parse_duration_ms(v->get()); !ms) {
      error(node, path, ms.message() + ", or \"adaptive\"");
      return;
    }
    read_duration(node, path, &u.timeout_ms);
  }

  // timeout_min/timeout_max bound the adaptive timeout. They are accepted next
  // to a fixed timeout too, so that switching to "adaptive" is a one-word edit.
  void read_timeout_bounds(const toml::table& t, const std::string& path, UpstreamConfig& u) {
    const toml::node* lo = t.get("timeout_min");
    const toml::node* hi = t.get("timeout_max");
    bool ok = true;
    if (lo != nullptr) ok = read_duration(*lo, path + ".timeout_min", &u.timeout_min_ms) && ok;
    if (hi != nullptr) ok = read_duration(*hi, path + ".timeout_max", &u.timeout_max_ms) && ok;
    if (!ok || u.timeout_min_ms <= u.timeout_max_ms) return;
    if (hi != nullptr) {
      error(*hi, path + ".timeout_max",
            "must be at least timeout_min (" + format_ms(u.timeout_min_ms) + "), got " + format_ms(u.timeout_max_ms));
    } else {
      error(*lo, path + ".timeout_min",
            "must not exceed timeout_max (" + format_ms(u.timeout_max_ms) + " unless set); raise timeout_max as well");
    }
  }

  // [upstreams.X.breaker]: one circuit breaker per server, per instance.
  void load_breaker(const toml::table& t, const std::string& path, BreakerConfig& b) {
    check_keys(t, path,
               {"enabled", "window", "min_requests", "error_rate", "timeout_rate", "open_for", "half_open_probes"});
    if (const toml::node* n = t.get("enabled")) read_bool(*n, path + ".enabled", &b.enabled);
    if (const toml::node* n = t.get("window")) {
      uint64_t ms = 0;
      if (read_duration(*n, path + ".window", 1000, kMaxBreakerWindowMs, &ms)) {
        if (ms % 1000 != 0) {
          // The window is a ring of 1 s buckets.
          error(*n, path + ".window",
                "must be a whole number of seconds (the window counts 1s buckets), got \"" +
                    n->value<std::string>().value_or("") + "\"");
        } else {
          b.window_ms = ms;
        }
      }
    }
    if (const toml::node* n = t.get("min_requests")) {
      read_int(*n, path + ".min_requests", 1, kMaxBreakerMinRequests, &b.min_requests);
    }
    if (const toml::node* n = t.get("error_rate")) read_number(*n, path + ".error_rate", 0, true, 1, &b.error_rate);
    if (const toml::node* n = t.get("timeout_rate")) {
      read_number(*n, path + ".timeout_rate", 0, true, 1, &b.timeout_rate);
    }
    if (const toml::node* n = t.get("open_for")) {
      read_duration(*n, path + ".open_for", kMinBreakerOpenMs, kMaxBreakerOpenMs, &b.open_for_ms);
    }
    if (const toml::node* n = t.get("half_open_probes")) {
      read_int(*n, path + ".half_open_probes", 1, kMaxHalfOpenProbes, &b.half_open_probes);
    }
  }

  // health = { path, interval, timeout, rise, fall }: active checks, once per
  // instance. The table switches them on; every key has a default.
  void load_health(const toml::table& t, const std::string& path, HealthConfig& h) {
    check_keys(t, path, {"path", "interval", "timeout", "rise", "fall"});
    h.enabled = true;
    if (const toml::node* n = t.get("path")) {
      const std::string p = path + ".path";
      std::string v;
      if (read_string(*n, p, &v)) {
        if (v.empty() || v.front() != '/') {
          error(*n, p, "must start with '/', got \"" + v + "\"");
        } else if (std::any_of(v.begin(), v.end(), [](char c) {
                     const auto u = static_cast<unsigned char>(c);
                     return u <= 0x20 || u >= 0x7f;
                   })) {
          // It becomes the request line of the check.
          error(*n, p, "must not contain spaces, control characters or non-ASCII bytes (percent-encode them)");
        } else if (v.find('#') != std::string::npos) {
          error(*n, p, "must not contain a fragment ('#')");
        } else {
          h.path = std::move(v);
        }
      }
    }
    const toml::node* interval = t.get("interval");
    const toml::node* timeout = t.get("timeout");
    bool ok = true;
    if (interval != nullptr) {
      ok = read_duration(*interval, path + ".interval", kMinHealthIntervalMs, kMaxDurationMs, &h.interval_ms) && ok;
    }
    if (timeout != nullptr) ok = read_duration(*timeout, path + ".timeout", &h.timeout_ms) && ok;
    if (ok && h.timeout_ms >= h.interval_ms) {
      // A check still running when the next one is due would overlap it.
      if (timeout != nullptr) {
        error(*timeout, path + ".timeout",
              "must be shorter than interval (" + format_ms(h.interval_ms) + "), got " + format_ms(h.timeout_ms));
      } else {
        error(*interval, path + ".interval",
              "must be longer than timeout (" + format_ms(h.timeout_ms) + " unless set); set a shorter timeout");
      }
    }
    if (const toml::node* n = t.get("rise")) read_int(*n, path + ".rise", 1, kMaxHealthThreshold, &h.rise);
    if (const toml::node* n = t.get("fall")) read_int(*n, path + ".fall", 1, kMaxHealthThreshold, &h.fall);
  }

  // [upstreams.X.retry]: how queued and store-and-forward deliveries are
  // retried (live requests are never retried by these settings).
  void load_retry(const toml::table& t, const std::string& path, RetryConfig& r) {
    check_keys(t, path, {"attempts", "backoff", "max_backoff", "on"});
    if (const toml::node* n = t.get("attempts")) {
      read_int(*n, path + ".attempts", 1, kMaxRetryAttempts, &r.attempts);
    }
    const toml::node* backoff = t.get("backoff");
    const toml::node* max_backoff = t.get("max_backoff");
    bool ok = true;
    if (backoff != nullptr) ok = read_duration(*backoff, path + ".backoff", &r.backoff_ms) && ok;
    if (max_backoff != nullptr) ok = read_duration(*max_backoff, path + ".max_backoff", &r.max_backoff_ms) && ok;
    if (ok && r.max_backoff_ms < r.backoff_ms) {
      if (max_backoff != nullptr) {
        error(*max_backoff, path + ".max_backoff",
              "must be at least backoff (" + format_ms(r.backoff_ms) + "), got " + format_ms(r.max_backoff_ms));
      } else {
        error(*backoff, path + ".backoff",
              "must not exceed max_backoff (" + format_ms(r.max_backoff_ms) +
                  " unless set); raise max_backoff as well");
      }
    }
    if (const toml::node* n = t.get("on")) {
      const std::string p = path + ".on";
      const toml::array* arr = n->as_array();
      if (arr == nullptr) {
        error(*n, p, "expected an array such as [\"connect\", \"timeout\", \"503\"], got " +
                         std::string(type_name(*n)));
        return;
      }
      if (arr->empty()) {
        error(*n, p, "must list at least one condition (attempts = 1 turns retries off)");
        return;
      }
      RetryConfig parsed;
      parsed.on_connect = false;
      parsed.on_timeout = false;
      parsed.on_status.clear();
      std::vector<std::string> seen;
      bool all_ok = true;
      for (size_t i = 0; i < arr->size(); ++i) {
        const std::string ip = index(p, i);
        std::string v;
        if (!read_string((*arr)[i], ip, &v)) {
          all_ok = false;
          continue;
        }
        if (std::find(seen.begin(), seen.end(), v) != seen.end()) {
          error((*arr)[i], ip, "\"" + v + "\" is listed twice");
          all_ok = false;
          continue;
        }
        seen.push_back(v);
        if (v == "connect") {
          parsed.on_connect = true;
        } else if (v == "timeout") {
          parsed.on_timeout = true;
        } else if (v.size() == 3 && v[0] == '5' && std::isdigit(static_cast<unsigned char>(v[1])) &&
                   std::isdigit(static_cast<unsigned char>(v[2]))) {
          parsed.on_status.push_back(std::stoi(v));
        } else {
          error((*arr)[i], ip,
                "expected \"connect\", \"timeout\" or a status code \"500\" to \"599\", got \"" + v + "\"");
          all_ok = false;
        }
      }
      if (all_ok) {
        r.on_connect = parsed.on_connect;
        r.on_timeout = parsed.on_timeout;
        r.on_status = std::move(parsed.on_status);
      }
    }
  }

  void load_routes(const toml::node& node, Config& cfg) {
    const toml::array* arr = node.as_array();
    if (arr == nullptr) {
      error(node, "routes", "expected [[routes]] entries (an array of tables), got " +
                                std::string(type_name(node)));
      return;
    }
    if (arr->empty()) {
      error(node, "routes", "at least one [[routes]] entry is required");
      return;
    }
    for (size_t i = 0; i < arr->size(); ++i) {
      const std::string path = index("routes", i);
      const toml::table* t = as_table((*arr)[i], path);
      if (t == nullptr) continue;
      RouteConfig r;
      if (load_route(*t, path, cfg, r)) cfg.routes.push_back(std::move(r));
    }
    if (errors_.empty()) check_shadowed(*arr, cfg);
  }

  // Returns false when the route is too broken to take part in the later
  // cross-route checks (which would then only report noise).
  bool load_route(const toml::table& t, const std::string& path, const Config& cfg, RouteConfig& r) {
    const size_t errors_before = errors_.size();
    check_keys(t, path,
               {"name", "match", "upstream", "max_body_bytes", "rate", "burst", "scope", "client_rate",
                "client_burst", "client_key", "overflow", "dry_run", "core", "idempotency", "mode", "ack",
                "queue", "client_max_tickets", "on_failure_webhook", "cache", "on_unavailable"});

    if (const toml::node* n = t.get("name")) {
      if (read_string(*n, path + ".name", &r.name)) {
        if (!is_name(r.name)) {
          error(*n, path + ".name", "route names must be non-empty and use only letters, digits, '_', '-' and '.'");
        } else {
          for (size_t j = 0; j < cfg.routes.size(); ++j) {
            if (cfg.routes[j].name == r.name) {
              error(*n, path + ".name", "duplicate route name \"" + r.name + "\"");
              break;
            }
          }
        }
      }
    } else {
      error(t, path + ".name", "required");
    }

    if (const toml::node* n = t.get("match")) {
      if (const toml::table* m = as_table(*n, path + ".match")) load_match(*m, path + ".match", r.match);
    } else {
      error(t, path + ".match", "required, e.g. match = { prefix = \"/\" }");
    }

    if (const toml::node* n = t.get("upstream")) {
      if (read_string(*n, path + ".upstream", &r.upstream)) {
        bool found = false;
        for (size_t j = 0; j < cfg.upstreams.size(); ++j) {
          if (cfg.upstreams[j].name == r.upstream) {
            r.upstream_index = j;
            found = true;
            break;
          }
        }
        if (!found) error(*n, path + ".upstream", "unknown upstream \"" + r.upstream + "\"");
      }
    } else {
      error(t, path + ".upstream", "required");
    }

    if (const toml::node* n = t.get("max_body_bytes")) {
      // 0 would read as "inherit" in RouteConfig, so an override starts at 1.
      read_size(*n, path + ".max_body_bytes", 1, UINT64_MAX, &r.max_body_bytes);
    }
    if (const toml::node* n = t.get("mode")) {
      std::string v;
      if (read_string(*n, path + ".mode", &v)) {
        if (v == "store_and_forward") r.store_and_forward = true;
        else if (v != "forward") error(*n, path + ".mode", "expected \"forward\" or \"store_and_forward\", got \"" + v + "\"");
      }
    }
    load_admission(t, path, r);
    if (const toml::node* n = t.get("idempotency")) {
      if (const toml::table* it = as_table(*n, path + ".idempotency")) load_idempotency(*it, path + ".idempotency", r.idempotency);
    }
    load_queueing(t, path, cfg, r);
    load_unavailable(t, path, r);
    return errors_.size() == errors_before;
  }

  // cache and on_unavailable: what a route serves when its upstream cannot
  // answer (SPEC §7).
  void load_unavailable(const toml::table& t, const std::string& path, RouteConfig& r) {
    if (const toml::node* n = t.get("cache")) {
      const std::string p = path + ".cache";
      const bool reads_only =
          std::all_of(r.match.methods.begin(), r.match.methods.end(),
                      [](const std::string& m) { return m == "GET" || m == "HEAD"; });
      if (!reads_only) {
        error(*n, p, "cache applies to GET and HEAD routes only");
      } else if (r.store_and_forward) {
        error(*n, p, "a store_and_forward route answers every request with ack; a cache would never apply");
      } else if (const toml::table* ct = as_table(*n, p)) {
        load_cache(*ct, p, r.cache);
      }
    }
    if (const toml::node* n = t.get("on_unavailable")) {
      const std::string p = path + ".on_unavailable";
      std::string v;
      if (!read_string(*n, p, &v)) return;
      if (v == "error") {
        r.on_unavailable = OnUnavailable::kError;
      } else if (v == "degrade") {
        r.on_unavailable = OnUnavailable::kDegrade;
      } else if (v == "queue") {
        // Needs [redis]; that is checked with the other Redis users in load_root.
        r.on_unavailable = OnUnavailable::kQueue;
      } else if (v == "cache") {
        if (!t.contains("cache")) {
          error(*n, p, "on_unavailable = \"cache\" needs a cache on the route (cache = { ttl = \"2s\", "
                       "stale_if_error = \"5m\" })");
          return;
        }
        r.on_unavailable = OnUnavailable::kCache;
      } else {
        error(*n, p, "expected \"error\", \"queue\", \"cache\" or \"degrade\", got \"" + v + "\"");
        return;
      }
      if (r.store_and_forward) {
        // Its requests are only ever delivered from the queue, where the
        // upstream's retry settings decide what happens.
        error(*n, p, "a store_and_forward route never sends a request live; on_unavailable would never apply "
                     "(leave it out)");
      }
    }
  }

  void load_cache(const toml::table& t, const std::string& path, CacheConfig& c) {
    check_keys(t, path, {"ttl", "stale_if_error", "max_bytes", "max_entry_bytes"});
    c.enabled = true;
    if (const toml::node* n = t.get("ttl")) read_duration(*n, path + ".ttl", 0, kMaxDurationMs, &c.ttl_ms);
    if (const toml::node* n = t.get("stale_if_error")) {
      read_duration(*n, path + ".stale_if_error", 0, kMaxDurationMs, &c.stale_if_error_ms);
    }
    const toml::node* max = t.get("max_bytes");
    const toml::node* entry = t.get("max_entry_bytes");
    bool ok = true;
    if (max != nullptr) ok = read_size(*max, path + ".max_bytes", kMinCacheBytes, UINT64_MAX, &c.max_bytes) && ok;
    if (entry != nullptr) {
      ok = read_size(*entry, path + ".max_entry_bytes", 1, UINT64_MAX, &c.max_entry_bytes) && ok;
    }
    if (ok && c.max_entry_bytes > c.max_bytes) {
      if (entry != nullptr) {
        error(*entry, path + ".max_entry_bytes",
              "must not exceed max_bytes (" + std::to_string(c.max_bytes) + "), got " +
                  std::to_string(c.max_entry_bytes));
      } else {
        error(*max, path + ".max_bytes",
              "must be at least max_entry_bytes (" + std::to_string(c.max_entry_bytes) +
                  " unless set); set a smaller max_entry_bytes");
      }
    }
  }

  // mode = "store_and_forward" and overflow = "queue" as written, so that a
  // queue setting is judged by what the route asks for even when the value
  // that asks for it has another problem (overflow without rate).
  static bool wants_store_and_forward(const toml::table& t) {
    const toml::node* n = t.get("mode");
    return n != nullptr && n->value<std::string>() == "store_and_forward";
  }
  static bool wants_queue(const toml::table& t) {
    const toml::node* n = t.get("overflow");
    const toml::node* u = t.get("on_unavailable");
    return wants_store_and_forward(t) || (n != nullptr && n->value<std::string>() == "queue") ||
           (u != nullptr && u->value<std::string>() == "queue");
  }

  // ack, queue, client_max_tickets, on_failure_webhook.
  void load_queueing(const toml::table& t, const std::string& path, const Config& cfg, RouteConfig& r) {
    const bool queued = wants_queue(t);
    const std::string not_queued =
        "only valid on a queued route (overflow = \"queue\", on_unavailable = \"queue\" or "
        "mode = \"store_and_forward\")";

    if (const toml::node* n = t.get("ack")) {
      if (!wants_store_and_forward(t)) {
        error(*n, path + ".ack", "only valid together with mode = \"store_and_forward\"");
      } else if (const toml::table* at = as_table(*n, path + ".ack")) {
        load_ack(*at, path + ".ack", r.ack);
      }
    }

    const toml::node* queue = t.get("queue");
    if (queue != nullptr) {
      if (!queued) {
        error(*queue, path + ".queue", not_queued);
      } else if (const toml::table* qt = as_table(*queue, path + ".queue")) {
        load_queue(*qt, path + ".queue", r.queue);
      }
    }

    if (const toml::node* n = t.get("client_max_tickets")) {
      if (!queued) {
        error(*n, path + ".client_max_tickets", not_queued);
      } else {
        read_int(*n, path + ".client_max_tickets", 1, INT64_MAX, &r.client_max_tickets);
      }
    }

    if (const toml::node* n = t.get("on_failure_webhook")) {
      const std::string p = path + ".on_failure_webhook";
      std::string v;
      if (!queued) {
        error(*n, p, not_queued);
      } else if (read_string(*n, p, &v)) {
        std::string normalized;
        std::string why;
        if (parse_webhook_url(v, &normalized, &why)) r.on_failure_webhook = std::move(normalized);
        else error(*n, p, "invalid webhook URL \"" + v + "\": " + why);
      }
    }

    // A delivery still waiting for the shop must not be taken for one whose
    // worker died: it would be reclaimed and sent a second time.
    if (queued && r.upstream_index < cfg.upstreams.size() && cfg.upstreams[r.upstream_index].name == r.upstream) {
      const UpstreamConfig& u = cfg.upstreams[r.upstream_index];
      // An adaptive timeout may grow up to timeout_max.
      const uint64_t attempt_ms = u.connect_timeout_ms + (u.adaptive_timeout ? u.timeout_max_ms : u.timeout_ms);
      if (r.queue.processing_timeout_ms <= attempt_ms) {
        const toml::table* qt = queue != nullptr ? queue->as_table() : nullptr;
        const toml::node* at = qt != nullptr ? qt->get("processing_timeout") : nullptr;
        const std::string message =
            "must be longer than one delivery attempt, upstreams." + u.name + " connect_timeout + " +
            (u.adaptive_timeout ? "timeout_max (" : "timeout (") +
            format_ms(attempt_ms) + "); a delivery still waiting for the shop would be reclaimed and sent again";
        if (at != nullptr) {
          error(*at, path + ".queue.processing_timeout", message);
        } else {
          error(queue != nullptr ? *queue : static_cast<const toml::node&>(t), path + ".queue.processing_timeout",
                "(default " + format_ms(r.queue.processing_timeout_ms) + ") " + message);
        }
      }
    }
  }

  void load_ack(const toml::table& t, const std::string& path, AckConfig& a) {
    check_keys(t, path, {"status", "body", "content_type"});
    const toml::node* status = t.get("status");
    if (status != nullptr) {
      // 1xx are interim responses: a client would keep waiting for the real one.
      uint64_t v = 0;
      if (read_int(*status, path + ".status", 200, 599, &v)) a.status = static_cast<int>(v);
    }
    if (const toml::node* n = t.get("body")) read_string(*n, path + ".body", &a.body);
    if (const toml::node* n = t.get("content_type")) {
      std::string v;
      if (read_string(*n, path + ".content_type", &v)) {
        if (v.empty()) error(*n, path + ".content_type", "must not be empty");
        else if (has_control_char(v)) error(*n, path + ".content_type", "must not contain control characters");
        else a.content_type = std::move(v);
      }
    }
    if (status != nullptr && (a.status == 204 || a.status == 205 || a.status == 304) && !a.body.empty()) {
      error(*status, path + ".status",
            "a " + std::to_string(a.status) + " response cannot carry a body; set body = \"\" or use another status");
    }
  }

  void load_queue(const toml::table& t, const std::string& path, QueueConfig& q) {
    check_keys(t, path, {"max_depth", "max_wait", "processing_timeout", "ticket_ttl", "concurrency"});
    if (const toml::node* n = t.get("max_depth")) read_int(*n, path + ".max_depth", 1, kMaxQueueDepth, &q.max_depth);
    if (const toml::node* n = t.get("max_wait")) {
      read_duration(*n, path + ".max_wait", 1, kMaxQueueWaitMs, &q.max_wait_ms);
    }
    if (const toml::node* n = t.get("processing_timeout")) {
      read_duration(*n, path + ".processing_timeout", kMinProcessingTimeoutMs, kMaxDurationMs,
                    &q.processing_timeout_ms);
    }
    if (const toml::node* n = t.get("ticket_ttl")) {
      read_duration(*n, path + ".ticket_ttl", 1000, kMaxTicketTtlMs, &q.ticket_ttl_ms);
    }
    if (const toml::node* n = t.get("concurrency")) {
      read_int(*n, path + ".concurrency", 1, kMaxQueueConcurrency, &q.concurrency);
    }
  }

  // rate/burst (route budget), client_rate/client_burst/client_key (per
  // client), overflow, scope, dry_run, core. A key that only modifies another
  // one is rejected without it: left alone it would look like a limit that is
  // not there.
  void load_admission(const toml::table& t, const std::string& path, RouteConfig& r) {
    const bool has_rate = t.contains("rate");
    const bool has_client_rate = t.contains("client_rate");
    auto needs = [&](const toml::node& n, const std::string& key, const std::string& what) {
      error(n, join(path, key), "only valid together with " + what);
    };

    if (const toml::node* n = t.get("rate")) read_number(*n, path + ".rate", 0, true, kMaxRate, &r.rate);
    if (const toml::node* n = t.get("burst")) {
      if (read_number(*n, path + ".burst", 0, false, kMaxRate, &r.burst) && !has_rate) {
        needs(*n, "burst", "rate (burst adds to the route budget)");
      }
    }

    if (const toml::node* n = t.get("client_rate")) {
      read_number(*n, path + ".client_rate", 0, true, kMaxRate, &r.client_rate);
    }
    bool client_burst_set = false;
    if (const toml::node* n = t.get("client_burst")) {
      client_burst_set = read_number(*n, path + ".client_burst", 1, false, kMaxRate, &r.client_burst);
      if (client_burst_set && !has_client_rate) needs(*n, "client_burst", "client_rate");
    }
    // One second's worth of requests, and at least one request.
    if (!client_burst_set) r.client_burst = std::max(1.0, r.client_rate);
    if (const toml::node* n = t.get("client_key")) {
      // The key also counts the tickets a client holds (client_max_tickets).
      if (read_client_key(*n, path + ".client_key", &r.client_key) && !has_client_rate &&
          !t.contains("client_max_tickets")) {
        needs(*n, "client_key", "client_rate or client_max_tickets");
      }
    }

    if (const toml::node* n = t.get("overflow")) {
      const std::string p = path + ".overflow";
      std::string v;
      if (read_string(*n, p, &v)) {
        bool ok = true;
        if (v == "reject") {
          r.overflow = Overflow::kReject;
        } else if (v == "degrade") {
          r.overflow = Overflow::kDegrade;
        } else if (v == "queue") {
          r.overflow = Overflow::kQueue;
        } else {
          ok = false;
          error(*n, p, "expected \"reject\", \"degrade\" or \"queue\", got \"" + v + "\"");
        }
        if (ok && r.store_and_forward && r.overflow != Overflow::kQueue) {
          // Such a route parks every request; nothing is ever over the budget
          // at arrival, so the setting could not take effect.
          error(*n, p,
                "a store_and_forward route queues every request; overflow = \"" + v +
                    "\" would never apply (leave overflow out)");
        } else if (ok && !has_rate) {
          needs(*n, "overflow", "rate (overflow decides what happens beyond the route budget)");
        }
      }
    }

    if (const toml::node* n = t.get("scope")) {
      const std::string p = path + ".scope";
      std::string v;
      if (read_string(*n, p, &v) && v != "instance") {
        if (v == "cluster") {
          error(*n, p,
                "scope = \"cluster\" (one budget shared between instances through Redis) is not available "
                "in this build; use \"instance\"");
        } else {
          error(*n, p, "expected \"instance\", got \"" + v + "\"");
        }
      }
    }

    if (const toml::node* n = t.get("dry_run")) read_bool(*n, path + ".dry_run", &r.dry_run);
    if (const toml::node* n = t.get("core")) read_bool(*n, path + ".core", &r.core);
  }

  // "ip", or "header:NAME" with NAME a header field name (RFC 9110 token).
  bool read_client_key(const toml::node& node, const std::string& path, ClientKey* out) {
    std::string v;
    if (!read_string(node, path, &v)) return false;
    if (v == "ip") {
      out->by_header = false;
      out->header.clear();
      return true;
    }
    constexpr std::string_view kHeader = "header:";
    if (v.compare(0, kHeader.size(), kHeader) == 0) {
      const std::string name = v.substr(kHeader.size());
      if (name.empty() || !std::all_of(name.begin(), name.end(), is_tchar)) {
        error(node, path, "invalid header name \"" + name + "\" in \"" + v +
                              "\" (expected \"header:NAME\" such as \"header:X-User-Id\")");
        return false;
      }
      out->by_header = true;
      out->header = name;
      return true;
    }
    error(node, path, "expected \"ip\" or \"header:NAME\", got \"" + v + "\"");
    return false;
  }

  void load_match(const toml::table& t, const std::string& path, RouteMatch& m) {
    check_keys(t, path, {"methods", "path", "prefix"});

    if (const toml::node* n = t.get("methods")) {
      const toml::array* arr = n->as_array();
      if (arr == nullptr) {
        error(*n, path + ".methods", "expected an array of strings, got " + std::string(type_name(*n)));
      } else if (arr->empty()) {
        error(*n, path + ".methods", "must not be empty (leave it out to match any method)");
      } else {
        for (size_t i = 0; i < arr->size(); ++i) {
          const std::string p = index(path + ".methods", i);
          std::string method;
          if (!read_string((*arr)[i], p, &method)) continue;
          if (method.empty() || !std::all_of(method.begin(), method.end(), is_tchar)) {
            error((*arr)[i], p, "invalid HTTP method \"" + method + "\"");
            continue;
          }
          // Methods are case-sensitive on the wire; upper-casing here lets
          // matching stay a plain comparison while "get" still means GET.
          std::transform(method.begin(), method.end(), method.begin(),
                         [](char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; });
          if (std::find(m.methods.begin(), m.methods.end(), method) == m.methods.end()) {
            m.methods.push_back(std::move(method));
          }
        }
      }
    }

    const toml::node* exact = t.get("path");
    const toml::node* prefix = t.get("prefix");
    if (exact != nullptr && prefix != nullptr) {
      error(*prefix, path, "set either path (exact) or prefix, not both");
      return;
    }
    if (exact == nullptr && prefix == nullptr) {
      error(t, path, "needs path = \"/exact\" or prefix = \"/start/\"");
      return;
    }
    const toml::node& n = exact != nullptr ? *exact : *prefix;
    const std::string p = path + (exact != nullptr ? ".path" : ".prefix");
    if (!read_string(n, p, &m.path)) return;
    m.is_prefix = prefix != nullptr;
    if (m.path.empty() || m.path.front() != '/') {
      error(n, p, "must start with '/', got \"" + m.path + "\"");
      return;
    }
    for (char c : m.path) {
      const auto u = static_cast<unsigned char>(c);
      if (u <= 0x20 || u == 0x7f) {
        error(n, p, "must not contain spaces or control characters");
        return;
      }
      if (c == '?' || c == '#') {
        error(n, p, "matches the path only; it must not contain '?' or '#'");
        return;
      }
    }
  }

  // A route that an earlier one always wins over can never be selected, which
  // means its limits silently never apply (typically a catch-all placed
  // first). Methods are checked one by one, since GET and POST may be taken
  // by two different earlier routes.
  void check_shadowed(const toml::array& arr, const Config& cfg) {
    for (size_t i = 1; i < cfg.routes.size(); ++i) {
      const RouteConfig& later = cfg.routes[i];
      std::vector<std::string_view> methods(later.match.methods.begin(), later.match.methods.end());
      if (methods.empty()) methods.push_back("");  // "any method": only a method-less route covers it
      size_t winner = i;
      bool all_covered = true;
      for (std::string_view method : methods) {
        size_t by = i;
        for (size_t j = 0; j < i && by == i; ++j) {
          const RouteMatch& em = cfg.routes[j].match;
          const bool method_ok =
              em.methods.empty() ||
              (!method.empty() && std::find(em.methods.begin(), em.methods.end(), method) != em.methods.end());
          if (method_ok && covers(em, later.match)) by = j;
        }
        if (by == i) {
          all_covered = false;
          break;
        }
        winner = std::min(winner, by);
      }
      if (all_covered) {
        error(arr[i], index("routes", i),
              "route \"" + later.name + "\" can never match: earlier route \"" + cfg.routes[winner].name +
                  "\" (routes[" + std::to_string(winner) + "]) takes all of its requests");
      }
    }
  }

  // Whether every path `later` matches is also matched by `earlier`. For a
  // prefix it is enough that the prefix itself matches: the prefix rule then
  // also accepts every longer path under it. The check goes through
  // Config::match_route so it can never disagree with runtime matching.
  static bool covers(const RouteMatch& earlier, const RouteMatch& later) {
    if (!earlier.is_prefix) return !later.is_prefix && earlier.path == later.path;
    Config probe;
    RouteConfig r;
    r.match.path = earlier.path;
    r.match.is_prefix = true;
    probe.routes.push_back(std::move(r));
    return probe.match_route("", later.path) == 0;
  }

  void load_admin(const toml::table& t, Config& cfg) {
    AdminConfig& a = cfg.admin;
    check_keys(t, "admin", {"listen", "token"});

    if (const toml::node* n = t.get("listen")) {
      HostPort hp;
      if (read_host_port(*n, "admin.listen", false, &hp)) {
        if (const std::string clash = listener_clash(hp, cfg.server.listen); !clash.empty()) {
          error(*n, "admin.listen", clash);
        } else {
          a.listen = std::move(hp);
          a.enabled = true;
        }
      }
    }

    if (const toml::node* n = t.get("token")) {
      std::string token;
      if (read_string(*n, "admin.token", &token)) {
        // The token itself never appears in a message: they end up in logs.
        if (!token.empty() && token.size() < kMinTokenChars) {
          error(*n, "admin.token",
                "must be at least " + std::to_string(kMinTokenChars) + " characters, got " +
                    std::to_string(token.size()) + " (\"\" turns authentication off)");
        } else if (!std::all_of(token.begin(), token.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
          error(*n, "admin.token", "must be printable ASCII without spaces");
        } else {
          a.token = std::move(token);
        }
      }
    }
  }

  // Why `admin` cannot listen next to the client listeners, or "". Two equal
  // addresses, or a wildcard and an address it covers on the same port, would
  // either fail to bind or (with SO_REUSEPORT) share connections between
  // client and admin traffic.
  static std::string listener_clash(const HostPort& admin, const std::vector<HostPort>& servers) {
    const std::string host = canonical_ip(admin.host);
    const bool v6 = host.find(':') != std::string::npos;
    for (const HostPort& s : servers) {
      if (s.port != admin.port) continue;
      const std::string other = canonical_ip(s.host);
      const bool other_v6 = other.find(':') != std::string::npos;
      if (other == host) {
        return "\"" + admin.text + "\" is also a server.listen address; the admin listener needs an address of its own";
      }
      // "::" takes IPv4 too on a dual-stack socket; "0.0.0.0" only IPv4.
      const bool covered = host == "::" || other == "::" || (host == "0.0.0.0" && !other_v6) ||
                           (other == "0.0.0.0" && !v6);
      if (covered) {
        return "\"" + admin.text + "\" overlaps server.listen \"" + s.text +
               "\" (same port, wildcard address); the admin listener needs an address of its own";
      }
    }
    return "";
  }

  void load_degrade(const toml::table& t, DegradeConfig& d) {
    check_keys(t, "degrade", {"status", "body", "content_type", "retry_after"});
    const toml::node* status = t.get("status");
    if (status != nullptr) {
      uint64_t v = 0;
      if (read_int(*status, "degrade.status", 200, 599, &v)) d.status = static_cast<int>(v);
    }
    if (const toml::node* n = t.get("body")) read_string(*n, "degrade.body", &d.body);
    if (const toml::node* n = t.get("content_type")) {
      std::string v;
      if (read_string(*n, "degrade.content_type", &v)) {
        if (v.empty()) {
          error(*n, "degrade.content_type", "must not be empty");
        } else if (std::any_of(v.begin(), v.end(), [](char c) {
                     const auto u = static_cast<unsigned char>(c);
                     return u < 0x20 || u == 0x7f;
                   })) {
          // It becomes a header value; a CR or LF would split the response.
          error(*n, "degrade.content_type", "must not contain control characters");
        } else {
          d.content_type = std::move(v);
        }
      }
    }
    if (const toml::node* n = t.get("retry_after")) read_duration(*n, "degrade.retry_after", &d.retry_after_ms);
    // These statuses have no content by definition (RFC 9110); a body sent
    // with them would be read as the start of the next response.
    if (status != nullptr && (d.status == 204 || d.status == 205 || d.status == 304) && !d.body.empty()) {
      error(*status, "degrade.status",
            "a " + std::to_string(d.status) + " response cannot carry a body; set body = \"\" or use another status");
    }
  }

  void load_pressure(const toml::table& t, PressureConfig& p) {
    check_keys(t, "pressure", {"loop_lag", "queue_depth"});
    if (const toml::node* n = t.get("loop_lag")) read_duration(*n, "pressure.loop_lag", &p.loop_lag_ms);
    if (const toml::node* n = t.get("queue_depth")) read_int(*n, "pressure.queue_depth", 1, INT64_MAX, &p.queue_depth);
  }

  void load_idempotency(const toml::table& t, const std::string& path, IdempotencyConfig& c) {
    check_keys(t, path, {"key", "required", "per_client", "ttl", "max_response_bytes"});
    c.enabled = true;
    if (const toml::node* n = t.get("key")) {
      const toml::array* arr = n->as_array();
      std::vector<const toml::node*> items;
      if (arr) {
        for (size_t i = 0; i < arr->size(); ++i) items.push_back(arr->get(i));
      } else {
        items.push_back(n);
      }
      for (size_t i = 0; i < items.size(); ++i) {
        std::string src;
        const std::string p = arr ? index(path + ".key", i) : path + ".key";
        if (!read_string(*items[i], p, &src)) continue;
        Result<idempotency::KeySource> parsed = idempotency::parse_source(src);
        if (!parsed) {
          error(*items[i], p, parsed.message());
          continue;
        }
        c.key.push_back(std::move(src));
      }
      if (items.empty()) error(*n, path + ".key", "needs at least one key source");
    } else {
      c.key.push_back("header:Idempotency-Key");  // the IETF draft's header
    }
    if (const toml::node* n = t.get("required")) read_bool(*n, path + ".required", &c.required);
    if (const toml::node* n = t.get("per_client")) read_bool(*n, path + ".per_client", &c.per_client);
    if (const toml::node* n = t.get("ttl")) {
      // Unlike timeouts, a replay window may exceed a day: payment providers
      // repeat a notification for a day or more.
      const std::string p = path + ".ttl";
      if (const auto* v = n->as_string()) {
        Result<uint64_t> ms = parse_duration_ms(v->get());
        if (!ms) {
          error(*n, p, ms.message());
        } else if (*ms < 1000 || *ms > kMaxIdempotencyTtlMs) {
          error(*n, p, "must be between 1s and 30d, got \"" + v->get() + "\"");
        } else {
          c.ttl_ms = *ms;
        }
      } else {
        read_duration(*n, p, &c.ttl_ms);  // reports the type error
      }
    }
    if (const toml::node* n = t.get("max_response_bytes")) {
      read_size(*n, path + ".max_response_bytes", 1, 64ULL * 1024 * 1024, &c.max_response_bytes);
    }
  }

  void load_redis(const toml::table& t, RedisConfig& r) {
    check_keys(t, "redis", {"url", "prefix", "timeout", "on_failure", "wait_replicas", "wait_timeout"});
    r.enabled = true;
    if (const toml::node* n = t.get("url")) {
      if (read_string(*n, "redis.url", &r.url)) {
        Result<redis::Endpoint> ep = redis::parse_url(r.url);
        if (!ep) {
          // The message quotes the URL; a password in it must not reach logs
          // or the /reload answer.
          std::string message = ep.message();
          const std::string shown = redact_url_password(r.url);
          if (shown != r.url) {
            for (size_t at = message.find(r.url); at != std::string::npos;
                 at = message.find(r.url, at + shown.size())) {
              message.replace(at, r.url.size(), shown);
            }
          }
          error(*n, "redis.url", message);
        }
      }
    }
    if (const toml::node* n = t.get("prefix")) read_string(*n, "redis.prefix", &r.prefix);
    if (const toml::node* n = t.get("timeout")) read_duration(*n, "redis.timeout", &r.timeout_ms);
    if (const toml::node* n = t.get("on_failure")) {
      std::string v;
      if (read_string(*n, "redis.on_failure", &v)) {
        if (v == "open") r.fail_open = true;
        else if (v == "closed") r.fail_open = false;
        else error(*n, "redis.on_failure", "expected \"closed\" (503 where Redis is needed) or \"open\" (forward without dedupe), got \"" + v + "\"");
      }
    }
    const toml::node* replicas = t.get("wait_replicas");
    if (replicas != nullptr) read_int(*replicas, "redis.wait_replicas", 0, kMaxWaitReplicas, &r.wait_replicas);
    if (const toml::node* n = t.get("wait_timeout")) {
      if (read_duration(*n, "redis.wait_timeout", &r.wait_timeout_ms)) {
        if (replicas == nullptr) {
          error(*n, "redis.wait_timeout", "only valid together with wait_replicas");
        } else if (r.wait_replicas > 0 && r.wait_timeout_ms >= r.timeout_ms) {
          // WAIT is one command: its answer must arrive within redis.timeout,
          // or the connection is counted as stalled and re-established.
          error(*n, "redis.wait_timeout",
                "must be shorter than redis.timeout (" + format_ms(r.timeout_ms) +
                    "), which bounds every Redis command including WAIT");
        }
      }
    } else if (r.wait_replicas > 0 && r.wait_timeout_ms >= r.timeout_ms) {
      error(*replicas, "redis.wait_replicas",
            "WAIT uses wait_timeout (" + format_ms(r.wait_timeout_ms) + " by default), which must be shorter than "
            "redis.timeout (" + format_ms(r.timeout_ms) + "); set a shorter wait_timeout or a longer timeout");
    }
  }

  void load_reload(const toml::table& t, ReloadConfig& r) {
    check_keys(t, "reload", {"watch"});
    if (const toml::node* n = t.get("watch")) read_bool(*n, "reload.watch", &r.watch);
  }

  void load_log(const toml::table& t, LogConfig& log) {
    check_keys(t, "log", {"file", "access"});
    if (const toml::node* n = t.get("file")) read_string(*n, "log.file", &log.file);
    if (const toml::node* n = t.get("access")) read_bool(*n, "log.access", &log.access);
  }

  std::string name_;
  std::vector<std::string> errors_;
  bool truncated_ = false;
};

}  // namespace

Result<std::shared_ptr<const Config>> load_string(const std::string& text, const std::string& name) {
  try {
    Loader loader(name);
    return loader.load(text);
  } catch (const std::exception& e) {
    // Only allocation failure can get here; the loader itself reports errors
    // as values.
    return Status::error(name + ": " + e.what());
  }
}

Result<std::shared_ptr<const Config>> load_file(const std::string& path) {
  try {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::error(path + ": cannot read: " + std::strerror(errno));
    std::string text;
    char buf[16384];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::close(fd);
        return Status::error(path + ": cannot read: " + std::strerror(err));
      }
      if (n == 0) break;
      text.append(buf, static_cast<size_t>(n));
      if (text.size() > kMaxFileBytes) {
        ::close(fd);
        return Status::error(path + ": cannot read: larger than 16 MiB, not a config file");
      }
    }
    ::close(fd);
    return load_string(text, path);
  } catch (const std::exception& e) {
    return Status::error(path + ": " + e.what());
  }
}

}  // namespace fg::config
