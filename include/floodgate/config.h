// The typed configuration snapshot. Built and validated by fg::config::load_file()
// off the event loops; immutable once built and shared by workers through
// std::shared_ptr<const Config>. Includes every feature's config header, so one
// include gives the whole snapshot.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "admission/admission_config.h"
#include "breaker/breaker_config.h"
#include "cache/cache_config.h"
#include "config/host_port.h"
#include "config/route_config.h"
#include "config/server_config.h"
#include "config/upstream_config.h"
#include "floodgate/status.h"
#include "idempotency/idempotency_config.h"
#include "queue/queue_config.h"
#include "redis/redis_config.h"

namespace fg::pages {
class PageSet;  // pages/pages_config.h: the parsed [pages] templates
}

// Each feature's settings are declared next to the feature (the headers above) and
// validated there; this header assembles them into one snapshot.
namespace fg {

struct Config {
  std::string source_path;
  std::string hash;  // hex digest of the file's bytes, for /status and logs
  ServerConfig server;
  std::vector<UpstreamConfig> upstreams;
  std::vector<RouteConfig> routes;  // in file order; first match wins
  LogConfig log;
  AdminConfig admin;
  RedisConfig redis;
  DegradeConfig degrade;
  PressureConfig pressure;
  ReloadConfig reload;
  uint64_t client_table_size = 65536;  // per-client limiter slots per route (server.client_table_size)
  // [pages]: the templates Floodgate renders for browsers, parsed at load (immutable,
  // so a reload swaps them with the rest). Always set by load_file/load_string.
  std::shared_ptr<const pages::PageSet> pages;

  // Index of the first route matching method and path (path without query), or -1.
  int match_route(std::string_view method, std::string_view path) const;
};

namespace config {

// Reads, parses and validates a config file. On failure the message has the form
// "FILE:LINE:COL: message" (syntax or typed-value errors) or "FILE: key.path: message"
// (semantic errors without a position). Never throws. Safe on any thread.
Result<std::shared_ptr<const Config>> load_file(const std::string& path);

// Same, from text already in memory (any bytes: malformed UTF-8 and NUL bytes are
// reported, never handed to the TOML parser); `name` is used in messages.
Result<std::shared_ptr<const Config>> load_string(const std::string& text, const std::string& name);

}  // namespace config
}  // namespace fg
