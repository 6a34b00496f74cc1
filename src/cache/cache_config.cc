// Validation of a route's cache table (see cache_config.h).
#include "cache/cache_config.h"

#include "config/reader.h"

namespace fg::cache {
namespace {

using config::Reader;
using config::Table;

// The smallest useful per-route budget.
constexpr uint64_t kMinCacheBytes = 1024;

}  // namespace

void load_config(Reader& rd, const Table& table, CacheConfig& c) {
  const toml::table& t = table.toml();
  const std::string& path = table.path();
  rd.check_keys(t, path, {"ttl", "stale_if_error", "max_bytes", "max_entry_bytes"});
  c.enabled = true;
  if (const toml::node* n = t.get("ttl")) rd.read_duration(*n, path + ".ttl", 0, config::kMaxDurationMs, &c.ttl_ms);
  if (const toml::node* n = t.get("stale_if_error")) {
    rd.read_duration(*n, path + ".stale_if_error", 0, config::kMaxDurationMs, &c.stale_if_error_ms);
  }
  const toml::node* max = t.get("max_bytes");
  const toml::node* entry = t.get("max_entry_bytes");
  bool ok = true;
  if (max != nullptr) ok = rd.read_size(*max, path + ".max_bytes", kMinCacheBytes, UINT64_MAX, &c.max_bytes) && ok;
  if (entry != nullptr) {
    ok = rd.read_size(*entry, path + ".max_entry_bytes", 1, UINT64_MAX, &c.max_entry_bytes) && ok;
  }
  if (ok && c.max_entry_bytes > c.max_bytes) {
    if (entry != nullptr) {
      rd.error(*entry, path + ".max_entry_bytes",
            "must not exceed max_bytes (" + std::to_string(c.max_bytes) + "), got " +
                std::to_string(c.max_entry_bytes));
    } else {
      rd.error(*max, path + ".max_bytes",
            "must be at least max_entry_bytes (" + std::to_string(c.max_entry_bytes) +
                " unless set); set a smaller max_entry_bytes");
    }
  }
}

}  // namespace fg::cache
