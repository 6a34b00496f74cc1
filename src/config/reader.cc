// Typed readers and error reporting for the config walk (see reader.h).
#include "config/reader.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "floodgate/units.h"

namespace fg::config {

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

namespace {

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

}  // namespace

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

bool has_non_path_byte(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u >= 0x7f;
  });
}

// ---- Reader ----

void Reader::add_error(std::string line) {
  if (errors_.size() < kMaxErrors) errors_.push_back(std::move(line));
  else truncated_ = true;
}

// "FILE:LINE:COL: key.path: message", or "FILE: key.path: message" when the
// node has no position (tables that were never written in the file).
void Reader::error_at(const toml::source_region& where, const std::string& path, const std::string& message) {
  std::string line = name_;
  if (where.begin.line != 0) {
    line += ':' + std::to_string(where.begin.line) + ':' + std::to_string(where.begin.column);
  }
  line += ": ";
  if (!path.empty()) line += path + ": ";
  line += message;
  add_error(std::move(line));
}

Status Reader::finish() const {
  std::string all;
  for (const std::string& e : errors_) {
    if (!all.empty()) all += '\n';
    all += e;
  }
  if (truncated_) all += "\n" + name_ + ": (further errors not shown)";
  return Status::error(std::move(all));
}

void Reader::error_at_position(uint32_t line, uint32_t column, const std::string& message) {
  add_error(name_ + ':' + std::to_string(line) + ':' + std::to_string(column) + ": " + message);
}

// Rejects every key of `table` that is not in `allowed`, pointing at the key.
void Reader::check_keys(const toml::table& table, const std::string& path,
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

const toml::table* Reader::as_table(const toml::node& node, const std::string& path) {
  if (const toml::table* t = node.as_table()) return t;
  error(node, path, "expected a table, got " + std::string(type_name(node)));
  return nullptr;
}

bool Reader::read_string(const toml::node& node, const std::string& path, std::string* out) {
  if (const auto* v = node.as_string()) {
    *out = v->get();
    return true;
  }
  error(node, path, "expected a string, got " + std::string(type_name(node)));
  return false;
}

bool Reader::read_bool(const toml::node& node, const std::string& path, bool* out) {
  if (const auto* v = node.as_boolean()) {
    *out = v->get();
    return true;
  }
  error(node, path, "expected true or false, got " + std::string(type_name(node)));
  return false;
}

bool Reader::read_int(const toml::node& node, const std::string& path, int64_t min, int64_t max,
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
bool Reader::read_number(const toml::node& node, const std::string& path, double min, bool min_exclusive, double max,
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

bool Reader::read_duration(const toml::node& node, const std::string& path, uint64_t min_ms, uint64_t max_ms,
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
bool Reader::read_size(const toml::node& node, const std::string& path, uint64_t min, uint64_t max,
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
bool Reader::read_host_port(const toml::node& node, const std::string& path, bool allow_name, HostPort* out) {
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
void Reader::read_address_list(const toml::node& node, const std::string& path, bool allow_array,
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

}  // namespace fg::config
