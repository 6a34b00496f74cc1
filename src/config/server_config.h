// [server], [admin], [reload] and [log]: the instance-wide settings, and their
// validation (server_config.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/cidr.h"
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
  // Peers whose real_ip_header is believed (http/real_ip.h); empty: none, the TCP peer
  // (or the PROXY header's address) is always the client.
  CidrList trusted_proxies;
  std::string real_ip_header = "X-Forwarded-For";
  // Every connection on the server listeners starts with a PROXY v1/v2 header
  // (http/proxy_protocol.h), which must be complete within proxy_protocol_timeout.
  bool proxy_protocol = false;
  uint64_t proxy_protocol_timeout_ms = 5000;
};

struct AdminConfig {
  bool enabled = false;          // true when [admin] listen is set
  HostPort listen;
  std::string token;             // empty: no authentication
};

struct ReloadConfig {
  bool watch = false;            // reload when the config file is saved
};

// The fields of an access line, in the order they are written (log.access_fields).
enum AccessField : int {
  kFieldTs = 0, kFieldRequestId, kFieldClient, kFieldMethod, kFieldPath, kFieldRoute, kFieldStatus, kFieldOutcome,
  kFieldUpstream, kFieldUpstreamMs, kFieldTotalMs, kAccessFieldCount
};
inline constexpr const char* kAccessFieldNames[kAccessFieldCount] = {
    "ts", "request_id", "client", "method", "path", "route", "status", "outcome", "upstream", "upstream_ms", "total_ms"};

struct LogConfig {
  std::string file;     // empty: stderr
  bool access = true;   // one JSON line per request
  std::string level = "info";  // event lines below it are not written: debug|info|warn|error
  double access_sample = 1.0;  // share of access lines kept for answers < 400 (errors: all)
  uint32_t access_fields = (1u << kAccessFieldCount) - 1;  // bit per AccessField written
  bool has_field(AccessField f) const { return (access_fields >> f) & 1u; }
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
