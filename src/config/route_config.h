// [[routes]]: how a request is matched and which feature settings apply to it. Each
// feature's keys are read by that feature's *_config.cc; this file (route_config.cc)
// reads name, match, upstream, mode and on_unavailable and checks routes together.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "admission/admission_config.h"
#include "cache/cache_config.h"
#include "config/reader_fwd.h"
#include "idempotency/idempotency_config.h"
#include "queue/queue_config.h"

namespace fg {

struct Config;

struct RouteMatch {
  std::vector<std::string> methods;  // empty: any method; upper-case
  std::string path;                  // exact match when !is_prefix
  bool is_prefix = false;
};

// What a route answers when no server of its upstream can take the request (every
// primary and backup is open, down or at max_connections).
enum class OnUnavailable { kError, kQueue, kCache, kDegrade };

// The admission fields (rate, burst, client_*, overflow, dry_run, core) come from
// AdmissionConfig, the queue fields (ack, queue, client_max_tickets,
// on_failure_webhook) from RouteQueueConfig.
struct RouteConfig : AdmissionConfig, RouteQueueConfig {
  std::string name;
  RouteMatch match;
  std::string upstream;          // name of an [upstreams.X] table
  size_t upstream_index = 0;     // index into Config::upstreams, resolved by the loader
  uint64_t max_body_bytes = 0;   // 0: server.max_body_bytes applies
  std::optional<uint64_t> request_buffering;  // unset: server.request_buffering applies

  IdempotencyConfig idempotency;

  // Queueing. `queued` is true when overflow = "queue" or store_and_forward.
  bool store_and_forward = false;  // mode = "store_and_forward": every request queued, answered with `ack`
  // The route parks requests in its durable queue in some case (and so needs a
  // dispatcher): overflow = "queue", store_and_forward, or on_unavailable = "queue".
  bool queued() const {
    return store_and_forward || overflow == Overflow::kQueue || on_unavailable == OnUnavailable::kQueue;
  }

  CacheConfig cache;
  OnUnavailable on_unavailable = OnUnavailable::kError;
};

namespace config {
// The "routes" array of the root table into cfg.routes (cfg.upstreams already
// loaded). Config loading only.
void load_routes(Reader& reader, const Table& root, Config& cfg);
}  // namespace config

}  // namespace fg
