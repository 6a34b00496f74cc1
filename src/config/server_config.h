// [server], [admin], [reload] and [log]: the instance-wide settings, and their
// validation (server_config.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/host_port.h"
#include "config/reader_fwd.h"
#include "config/tls_config.h"

namespace fg {

// Largest server.request_buffering / response_buffering (and a route's request_buffering).
constexpr uint64_t kMaxRequestBuffering = 1024ULL * 1024 * 1024;

struct ServerConfig {
  std::vector<HostPort> listen;  // at least one
  // One per `listen` entry, same order: a `{ address, tls }` entry's own settings, else
  // server.tls (every listener), else disabled (plain HTTP).
  std::vector<ListenTlsConfig> listen_tls;
  int workers = 1;               // resolved: "auto" becomes the number of cores
  bool workers_auto = false;
  uint64_t max_connections = 20000;
  uint64_t max_connections_per_client = 0;  // per client IP address; 0: unlimited
  uint64_t header_timeout_ms = 10000;
  uint64_t body_timeout_ms = 30000;
  uint64_t idle_timeout_ms = 60000;
  uint64_t send_timeout_ms = 30000;
  uint64_t drain_timeout_ms = 15000;
  uint64_t max_header_bytes = 16 * 1024;
  uint64_t max_uri_bytes = 8 * 1024;
  uint64_t max_body_bytes = 1024 * 1024;
  // Request bodies up to this size are read whole before an upstream is chosen; 0: off.
  uint64_t request_buffering = 1024 * 1024;
  // Request body bytes held that way across the instance; past it new bodies stream.
  uint64_t request_buffering_total = 256 * 1024 * 1024;
  // Response bytes queued towards one client before the upstream read pauses (0: the
  // fixed 256 KiB of streaming), and across the instance before every response falls
  // back to that 256 KiB.
  uint64_t response_buffering = 1024 * 1024;
  uint64_t response_buffering_total = 256 * 1024 * 1024;
  std::string tickets_path = "/_floodgate/tickets/";  // starts and ends with '/'
  bool merge_slashes = true;            // "//" in a request path counts as "/" for matching
  bool underscores_in_headers = false;  // false: request header names with '_' are dropped
};

struct AdminConfig {
  bool enabled = false;          // true when [admin] listen is set
  HostPort listen;
  std::string token;             // empty: no authentication
};

struct ReloadConfig {
  bool watch = false;            // reload when the config file is saved
};

struct LogConfig {
  std::string file;     // empty: stderr
  bool access = true;   // one JSON line per request
  std::string level = "info";  // event lines below it are not written: debug|info|warn|error
  double access_sample = 1.0;  // share of access lines kept for answers < 400 (errors: all)
};

namespace config {
// [server]; server.client_table_size goes to `client_table_size`. Config loading only.
void load_server(Reader& reader, const Table& table, ServerConfig& out, uint64_t* client_table_size);
// [admin]; its address is checked against the already loaded server.listen.
void load_admin(Reader& reader, const Table& table, const ServerConfig& server, AdminConfig& out);
void load_reload(Reader& reader, const Table& table, ReloadConfig& out);
void load_log(Reader& reader, const Table& table, LogConfig& out);
}  // namespace config

}  // namespace fg
