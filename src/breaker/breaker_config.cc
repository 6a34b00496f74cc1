// Validation of [upstreams.X.breaker] (see breaker_config.h).
#include "breaker/breaker_config.h"

#include "config/reader.h"

namespace fg::breaker {
namespace {

using config::Reader;
using config::Table;

constexpr uint64_t kMaxBreakerWindowMs = 10 * 60 * 1000;
constexpr int64_t kMaxBreakerMinRequests = 1'000'000;
constexpr uint64_t kMinBreakerOpenMs = 100;
constexpr uint64_t kMaxBreakerOpenMs = 3600 * 1000;
constexpr int64_t kMaxHalfOpenProbes = 1000;

}  // namespace

// [upstreams.X.breaker]: one circuit breaker per server, per instance.
void load_config(Reader& rd, const Table& table, BreakerConfig& b) {
  const toml::table& t = table.toml();
  const std::string& path = table.path();
  rd.check_keys(t, path,
             {"enabled", "window", "min_requests", "error_rate", "timeout_rate", "open_for", "half_open_probes"});
  if (const toml::node* n = t.get("enabled")) rd.read_bool(*n, path + ".enabled", &b.enabled);
  if (const toml::node* n = t.get("window")) {
    uint64_t ms = 0;
    if (rd.read_duration(*n, path + ".window", 1000, kMaxBreakerWindowMs, &ms)) {
      if (ms % 1000 != 0) {
        // The window is a ring of 1 s buckets.
        rd.error(*n, path + ".window",
              "must be a whole number of seconds (the window counts 1s buckets), got \"" +
                  n->value<std::string>().value_or("") + "\"");
      } else {
        b.window_ms = ms;
      }
    }
  }
  if (const toml::node* n = t.get("min_requests")) {
    rd.read_int(*n, path + ".min_requests", 1, kMaxBreakerMinRequests, &b.min_requests);
  }
  if (const toml::node* n = t.get("error_rate")) rd.read_number(*n, path + ".error_rate", 0, true, 1, &b.error_rate);
  if (const toml::node* n = t.get("timeout_rate")) {
    rd.read_number(*n, path + ".timeout_rate", 0, true, 1, &b.timeout_rate);
  }
  if (const toml::node* n = t.get("open_for")) {
    rd.read_duration(*n, path + ".open_for", kMinBreakerOpenMs, kMaxBreakerOpenMs, &b.open_for_ms);
  }
  if (const toml::node* n = t.get("half_open_probes")) {
    rd.read_int(*n, path + ".half_open_probes", 1, kMaxHalfOpenProbes, &b.half_open_probes);
  }
}

}  // namespace fg::breaker
