// Validation of a route's idempotency table (see idempotency_config.h).
#include "idempotency/idempotency_config.h"

#include "config/reader.h"
#include "floodgate/units.h"

namespace fg::idempotency {
namespace {

using config::Reader;
using config::Table;

// How long a completed idempotent answer may be kept for replay.
constexpr uint64_t kMaxIdempotencyTtlMs = 30 * config::kMaxDurationMs;

}  // namespace

void load_config(Reader& rd, const Table& table, IdempotencyConfig& c) {
  const toml::table& t = table.toml();
  const std::string& path = table.path();
  rd.check_keys(t, path, {"key", "required", "per_client", "ttl", "max_response_bytes"});
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
      const std::string p = arr ? Reader::index(path + ".key", i) : path + ".key";
      if (!rd.read_string(*items[i], p, &src)) continue;
      Result<KeySource> parsed = parse_source(src);
      if (!parsed) {
        rd.error(*items[i], p, parsed.message());
        continue;
      }
      c.sources.push_back(std::move(parsed.value()));
    c.key.push_back(std::move(src));
    }
    if (items.empty()) rd.error(*n, path + ".key", "needs at least one key source");
  } else {
    c.key.push_back("header:Idempotency-Key");  // the IETF draft's header
    c.sources.push_back(KeySource{KeySource::Kind::kHeader, "Idempotency-Key"});
  }
  if (const toml::node* n = t.get("required")) rd.read_bool(*n, path + ".required", &c.required);
  if (const toml::node* n = t.get("per_client")) rd.read_bool(*n, path + ".per_client", &c.per_client);
  if (const toml::node* n = t.get("ttl")) {
    // Unlike timeouts, a replay window may exceed a day: payment providers
    // repeat a notification for a day or more.
    const std::string p = path + ".ttl";
    if (const auto* v = n->as_string()) {
      Result<uint64_t> ms = parse_duration_ms(v->get());
      if (!ms) {
        rd.error(*n, p, ms.message());
      } else if (*ms < 1000 || *ms > kMaxIdempotencyTtlMs) {
        rd.error(*n, p, "must be between 1s and 30d, got \"" + v->get() + "\"");
      } else {
        c.ttl_ms = *ms;
      }
    } else {
      rd.read_duration(*n, p, &c.ttl_ms);  // reports the type error
    }
  }
  if (const toml::node* n = t.get("max_response_bytes")) {
    rd.read_size(*n, path + ".max_response_bytes", 1, 64ULL * 1024 * 1024, &c.max_response_bytes);
  }
}

}  // namespace fg::idempotency
