// Route response cache settings (cache = { ... } on a route) and their validation
// (cache_config.cc; the cache itself is response_cache.h).
#pragma once

#include <cstdint>

#include "config/reader_fwd.h"

namespace fg {

// Route response cache for GET/HEAD (SPEC §7): one per route for the instance, byte-capped LRU.
struct CacheConfig {
  bool enabled = false;
  uint64_t ttl_ms = 0;              // freshness when the upstream gives no max-age
  uint64_t stale_if_error_ms = 0;   // how long a stale entry may serve while the upstream fails
  uint64_t max_bytes = 64ULL * 1024 * 1024;   // per route, all workers together
  uint64_t max_entry_bytes = 1024 * 1024;     // larger responses are not cached
};

namespace cache {
// Reads a route's cache table into `out` (and sets enabled). Config loading only.
void load_config(config::Reader& reader, const config::Table& table, CacheConfig& out);
}  // namespace cache

}  // namespace fg
