// Admission settings: a route's rate/burst/client_* keys, [degrade] (the answer of a
// shed request) and [pressure] (when to shed); validation in admission_config.cc.
#pragma once

#include <cstdint>
#include <string>

#include "config/reader_fwd.h"

namespace fg {

enum class Overflow { kReject, kDegrade, kQueue };

struct ClientKey {
  bool by_header = false;  // false: the client's IP address
  std::string header;      // header name when by_header ("header:X-User-Id")
};

// The admission fields of a route (RouteConfig derives from this). rate == 0: no route budget.
struct AdmissionConfig {
  double rate = 0;               // requests/s admitted to the upstream
  double burst = 0;              // extra requests allowed at once; default 0
  double client_rate = 0;        // per client key; 0: no per-client limit
  double client_burst = 0;       // default: client_rate (one second's worth), at least 1
  ClientKey client_key;
  Overflow overflow = Overflow::kReject;
  bool dry_run = false;          // decide and count, but forward anyway
  bool core = true;              // false: shed first under [pressure]
  bool cluster_scope = false;    // scope = "cluster": one budget for every instance sharing the Redis
};

struct DegradeConfig {
  int status = 503;
  std::string body = "{\"error\":\"busy\",\"message\":\"the service is busy, please retry shortly\"}";
  std::string content_type = "application/json; charset=utf-8";
  uint64_t retry_after_ms = 1000; // sent as Retry-After (seconds, rounded up)
};

struct PressureConfig {
  uint64_t loop_lag_ms = 0;      // 0: this condition is off
  uint64_t queue_depth = 0;      // 0: off; else shed while any route's queue is deeper
};

namespace admission {
// Reads rate, burst, client_rate, client_burst, client_key, overflow, scope, dry_run
// and core of a route table. Config loading only.
void load_route_admission(config::Reader& reader, const config::Table& route, bool store_and_forward,
                          AdmissionConfig& out);
void load_degrade(config::Reader& reader, const config::Table& table, DegradeConfig& out);
void load_pressure(config::Reader& reader, const config::Table& table, PressureConfig& out);
}  // namespace admission

}  // namespace fg
