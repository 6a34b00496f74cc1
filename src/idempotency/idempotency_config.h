// Route idempotency settings (idempotency = { ... } on a route) and their validation
// (idempotency_config.cc). Key sources are parsed here once (key_spec.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/reader_fwd.h"
#include "idempotency/key_spec.h"

namespace fg {

// Route idempotency (SPEC §5).
struct IdempotencyConfig {
  bool enabled = false;
  std::vector<std::string> key;            // sources as written ("header:Idempotency-Key", ...), first present wins
  std::vector<idempotency::KeySource> sources;  // the same, parsed (same order)
  bool required = false;                   // 400 idempotency_key_missing without a key
  bool per_client = false;                 // scope keys by client key too
  uint64_t ttl_ms = 24ULL * 3600 * 1000;   // how long a completed answer is replayed
  uint64_t max_response_bytes = 1024 * 1024;  // larger answers are forwarded, not stored
};

namespace idempotency {
// Reads a route's idempotency table into `out` (and sets enabled). Config loading only.
void load_config(config::Reader& reader, const config::Table& table, IdempotencyConfig& out);
}  // namespace idempotency

}  // namespace fg
