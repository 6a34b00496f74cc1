// The TOML walk shared by every feature's config loader: typed readers that check a
// value and report "FILE:LINE:COL: key.path: message" (with a did-you-mean for
// unknown keys), collecting every problem of a file instead of stopping at the first.
// Only the config library and the *_config.cc files of features include this header
// (it pulls in toml++); feature headers name its types by forward declaration.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "config/host_port.h"
#include "floodgate/status.h"

namespace fg::config {

// After this many problems the rest is usually fallout from the first ones.
constexpr size_t kMaxErrors = 20;
// The longest timeout any key accepts.
constexpr uint64_t kMaxDurationMs = 24ull * 60 * 60 * 1000;

// A TOML table together with its key path ("routes[2].queue"), as handed to the
// loader of one feature.
class Table {
 public:
  Table(const toml::table& table, std::string path) : table_(table), path_(std::move(path)) {}
  const toml::table& toml() const { return table_; }
  const std::string& path() const { return path_; }

 private:
  const toml::table& table_;
  std::string path_;
};

class Reader {
 public:
  explicit Reader(std::string name) : name_(std::move(name)) {}

  const std::string& name() const { return name_; }
  size_t error_count() const { return errors_.size(); }
  bool ok() const { return errors_.empty(); }
  // Every message, one per line.
  Status finish() const;

  // ---- error reporting ----

  // "FILE:LINE:COL: key.path: message", or "FILE: key.path: message" when the
  // node has no position (tables that were never written in the file).
  void error_at(const toml::source_region& where, const std::string& path, const std::string& message);
  void error(const toml::node& node, const std::string& path, const std::string& message) {
    error_at(node.source(), path, message);
  }
  void error_no_pos(const std::string& path, const std::string& message) {
    error_at(toml::source_region{}, path, message);
  }
  // "FILE:LINE:COL: message" for a position found outside toml++ (the byte check).
  void error_at_position(uint32_t line, uint32_t column, const std::string& message);
  // A complete message made elsewhere (a page template's "TEMPLATE:LINE:COL: ...").
  void error_line(std::string line) { add_error(std::move(line)); }

  static std::string join(const std::string& path, std::string_view key) {
    if (path.empty()) return std::string(key);
    return path + "." + std::string(key);
  }
  static std::string index(const std::string& path, size_t i) { return path + "[" + std::to_string(i) + "]"; }

  // ---- typed readers: each reports its own error and returns false ----

  // Rejects every key of `table` that is not in `allowed`, pointing at the key.
  void check_keys(const toml::table& table, const std::string& path, std::initializer_list<std::string_view> allowed);
  const toml::table* as_table(const toml::node& node, const std::string& path);
  bool read_string(const toml::node& node, const std::string& path, std::string* out);
  bool read_bool(const toml::node& node, const std::string& path, bool* out);
  bool read_int(const toml::node& node, const std::string& path, int64_t min, int64_t max, uint64_t* out);
  // Rates and bursts: an integer or a float, finite, between `min` (excluded
  // when `min_exclusive`) and `max`.
  bool read_number(const toml::node& node, const std::string& path, double min, bool min_exclusive, double max,
                   double* out);
  // Durations are strings with a unit; without bounds they must be 1ms..1d.
  bool read_duration(const toml::node& node, const std::string& path, uint64_t* out) {
    return read_duration(node, path, 1, kMaxDurationMs, out);
  }
  bool read_duration(const toml::node& node, const std::string& path, uint64_t min_ms, uint64_t max_ms,
                     uint64_t* out);
  // Sizes are strings with a unit, or integers counting bytes.
  bool read_size(const toml::node& node, const std::string& path, uint64_t min, uint64_t max, uint64_t* out);
  // "host:port", "[v6]:port". Listeners need literal addresses (nothing to
  // resolve at bind time); upstream servers may also name a host.
  bool read_host_port(const toml::node& node, const std::string& path, bool allow_name, HostPort* out);
  // A string or an array of strings; duplicates are rejected because two
  // entries for one address is always a copy-paste slip.
  void read_address_list(const toml::node& node, const std::string& path, bool allow_array, bool allow_name,
                         std::vector<HostPort>* out);

 private:
  void add_error(std::string line);

  std::string name_;
  std::vector<std::string> errors_;
  bool truncated_ = false;
};

// ---- value checks and message formatting shared by the feature loaders ----

std::string_view type_name(const toml::node& node);
// RFC 9110 tchar: what an HTTP method or header name may contain.
bool is_tchar(char c);
// Route and upstream names end up in metric labels and log fields, so they
// are kept to characters that need no escaping there.
bool is_name(std::string_view s);
bool is_hostname(std::string_view s);
// A value that becomes (part of) an HTTP header: a CR or LF would split the
// response, so control characters are refused.
bool has_control_char(std::string_view s);
// A path written into a request line: no spaces, controls or non-ASCII bytes.
bool has_non_path_byte(std::string_view s);
// An IP address in one spelling ("::0001" and "::1" are the same listener);
// anything inet_pton does not take is returned unchanged.
std::string canonical_ip(const std::string& host);
// A number for messages: integral values without a fraction ("3000").
std::string format_number(double x);
// A duration for messages, in the largest unit that divides it: "30s", "7d".
std::string format_ms(uint64_t ms);

}  // namespace fg::config
