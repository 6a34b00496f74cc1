// Validation of [server], [admin], [reload] and [log] (see server_config.h).
#include "config/server_config.h"

#include <algorithm>
#include <thread>
#include <tuple>

#include "config/reader.h"
#include "core/log.h"

namespace fg::config {
namespace {

constexpr uint64_t kMinHeaderBytes = 1024;
constexpr uint64_t kMaxHeaderBytes = 1024 * 1024;
constexpr uint64_t kMinUriBytes = 64;
constexpr int kMaxWorkers = 256;
// Per-route slots of the per-client limiter (16 bytes each).
constexpr int64_t kMinClientTableSize = 1024;
constexpr int64_t kMaxClientTableSize = 16 * 1024 * 1024;
// An admin token shorter than this is guessable by brute force over the network.
constexpr size_t kMinTokenChars = 16;
// Request and response buffers are held in memory, per request: beyond this a
// few hundred slow clients would exhaust a typical host.

// The path prefix that ticket polls and cancellations are answered under,
// ahead of route matching: "/_floodgate/tickets/" + id.
void read_tickets_path(Reader& rd, const toml::node& n, ServerConfig& s) {
  const std::string p = "server.tickets_path";
  std::string v;
  if (!rd.read_string(n, p, &v)) return;
  if (v.size() < 2 || v.front() != '/' || v.back() != '/') {
    rd.error(n, p, "must start and end with '/' and name at least one segment, e.g. \"/_floodgate/tickets/\"; got \"" +
                    v + "\"");
    return;
  }
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      rd.error(n, p, "must not contain spaces, control characters or non-ASCII bytes");
      return;
    }
    if (c == '?' || c == '#') {
      rd.error(n, p, "is a path; it must not contain '?' or '#'");
      return;
    }
  }
  s.tickets_path = std::move(v);
}

// server.trusted_proxies: CIDR blocks or single addresses, IPv4 or IPv6.
void read_trusted_proxies(Reader& rd, const toml::node& n, ServerConfig& s) {
  const std::string p = "server.trusted_proxies";
  const toml::array* arr = n.as_array();
  if (arr == nullptr) {
    rd.error(n, p, "expected an array of CIDR blocks, e.g. [\"10.0.0.0/8\", \"2001:db8::/32\"], got " +
                       std::string(type_name(n)));
    return;
  }
  for (size_t i = 0; i < arr->size(); i++) {
    const toml::node& item = *arr->get(i);
    std::string text;
    if (!rd.read_string(item, Reader::index(p, i), &text)) continue;
    Cidr c;
    std::string why;
    if (!Cidr::parse(text, &c, &why)) {
      rd.error(item, Reader::index(p, i), why);
      continue;
    }
    s.trusted_proxies.blocks.push_back(c);
  }
}

// log.access_fields: which fields access lines carry (always in the documented order).
void read_access_fields(Reader& rd, const toml::node& n, LogConfig& log) {
  const std::string p = "log.access_fields";
  const toml::array* arr = n.as_array();
  if (arr == nullptr || arr->empty()) {
    rd.error(n, p, "expected a non-empty array of field names, e.g. [\"ts\", \"client\", \"path\", \"status\"]");
    return;
  }
  uint32_t mask = 0;
  for (size_t i = 0; i < arr->size(); i++) {
    std::string name;
    if (!rd.read_string(*arr->get(i), Reader::index(p, i), &name)) continue;
    int found = -1;
    for (int f = 0; f < kAccessFieldCount; f++)
      if (name == kAccessFieldNames[f]) found = f;
    if (found < 0) {
      std::string known;
      for (const char* k : kAccessFieldNames) known += known.empty() ? std::string(k) : ", " + std::string(k);
      rd.error(*arr->get(i), Reader::index(p, i), "unknown access-log field \"" + name + "\"; known: " + known);
      continue;
    }
    mask |= 1u << found;
  }
  if (mask != 0) log.access_fields = mask;
}

// Why `admin` cannot listen next to the client listeners, or "". Two equal
// addresses, or a wildcard and an address it covers on the same port, would
// either fail to bind or (with SO_REUSEPORT) share connections between
// client and admin traffic.
std::string listener_clash(const HostPort& admin, const std::vector<HostPort>& servers) {
  const std::string host = canonical_ip(admin.host);
  const bool v6 = host.find(':') != std::string::npos;
  for (const HostPort& s : servers) {
    if (s.port != admin.port) continue;
    const std::string other = canonical_ip(s.host);
    const bool other_v6 = other.find(':') != std::string::npos;
    if (other == host) {
      return "\"" + admin.text + "\" is also a server.listen address; the admin listener needs an address of its own";
    }
    // "::" takes IPv4 too on a dual-stack socket; "0.0.0.0" only IPv4.
    const bool covered = host == "::" || other == "::" || (host == "0.0.0.0" && !other_v6) ||
                         (other == "0.0.0.0" && !v6);
    if (covered) {
      return "\"" + admin.text + "\" overlaps server.listen \"" + s.text +
             "\" (same port, wildcard address); the admin listener needs an address of its own";
    }
  }
  return "";
}

// server.listen: "addr", or an array of "addr" and { address = "addr", tls = { ... } }.
void read_listen(Reader& rd, const toml::node& node, ServerConfig& s) {
  const std::string path = "server.listen";
  auto add = [&](const toml::node& n, const std::string& p, ListenTlsConfig tls) {
    HostPort hp;
    if (!rd.read_host_port(n, p, false, &hp)) return;
    for (const HostPort& seen : s.listen) {
      if (seen.host == hp.host && seen.port == hp.port) {
        rd.error(n, p, "\"" + hp.text + "\" is listed twice");
        return;
      }
    }
    s.listen.push_back(std::move(hp));
    s.listen_tls.push_back(std::move(tls));
  };
  auto entry = [&](const toml::node& n, const std::string& p) {
    const toml::table* t = n.as_table();
    if (t == nullptr) {
      add(n, p, {});
      return;
    }
    rd.check_keys(*t, p, {"address", "tls"});
    ListenTlsConfig tls;
    if (const toml::node* tn = t->get("tls")) {
      if (const toml::table* tt = rd.as_table(*tn, p + ".tls")) read_listen_tls(rd, Table(*tt, p + ".tls"), &tls);
    }
    if (const toml::node* a = t->get("address")) {
      add(*a, p + ".address", std::move(tls));
    } else {
      rd.error(*t, p + ".address", "required, e.g. { address = \"0.0.0.0:8443\", tls = { cert = ..., key = ... } }");
    }
  };
  if (const toml::array* arr = node.as_array()) {
    if (arr->empty()) {
      rd.error(node, path, "must list at least one address");
      return;
    }
    for (size_t i = 0; i < arr->size(); ++i) entry((*arr)[i], Reader::index(path, i));
    return;
  }
  if (node.is_string() || node.is_table()) {
    entry(node, path);
    return;
  }
  rd.error(node, path, "expected a string, a { address, tls } table or an array of them, got " +
                           std::string(type_name(node)));
}

}  // namespace

void load_server(Reader& rd, const Table& table, ServerConfig& s, uint64_t* client_table_size) {
  const toml::table& t = table.toml();
  rd.check_keys(t, "server",
             {"listen", "workers", "max_connections", "header_timeout", "body_timeout", "idle_timeout",
              "send_timeout", "drain_timeout", "max_header_bytes", "max_uri_bytes", "max_body_bytes",
              "client_table_size", "tickets_path", "merge_slashes", "underscores_in_headers",
              "max_connections_per_client", "request_buffering", "request_buffering_total",
              "response_buffering", "response_buffering_total", "tls", "trusted_proxies", "real_ip_header",
              "proxy_protocol", "proxy_protocol_timeout"});

  if (const toml::node* n = t.get("listen")) {
    read_listen(rd, *n, s);
  } else {
    rd.error(t, "server.listen", "required, e.g. listen = \"0.0.0.0:8080\"");
  }
  if (const toml::node* n = t.get("tls")) {
    // server.tls: every listener without its own `tls` speaks TLS with these settings.
    ListenTlsConfig all;
    if (const toml::table* tt = rd.as_table(*n, "server.tls")) read_listen_tls(rd, Table(*tt, "server.tls"), &all);
    for (auto& l : s.listen_tls) {
      if (!l.enabled) l = all;
    }
  }

  if (const toml::node* n = t.get("workers")) {
    if (const auto* str = n->as_string()) {
      if (str->get() == "auto") {
        s.workers_auto = true;
        const unsigned cores = std::thread::hardware_concurrency();
        s.workers = static_cast<int>(std::clamp(cores, 1u, static_cast<unsigned>(kMaxWorkers)));
      } else {
        rd.error(*n, "server.workers", "expected \"auto\" or a number 1-256, got \"" + str->get() + "\"");
      }
    } else if (n->is_integer()) {
      uint64_t w = 0;
      if (rd.read_int(*n, "server.workers", 1, kMaxWorkers, &w)) s.workers = static_cast<int>(w);
    } else {
      rd.error(*n, "server.workers", "expected \"auto\" or a number 1-256, got " + std::string(type_name(*n)));
    }
  }

  if (const toml::node* n = t.get("max_connections")) {
    rd.read_int(*n, "server.max_connections", 1, INT64_MAX, &s.max_connections);
  }

  const std::pair<std::string_view, uint64_t*> timeouts[] = {
      {"header_timeout", &s.header_timeout_ms}, {"body_timeout", &s.body_timeout_ms},
      {"idle_timeout", &s.idle_timeout_ms},     {"send_timeout", &s.send_timeout_ms},
      {"drain_timeout", &s.drain_timeout_ms},
  };
  for (const auto& [key, field] : timeouts) {
    if (const toml::node* n = t.get(key)) rd.read_duration(*n, Reader::join("server", key), field);
  }

  if (const toml::node* n = t.get("max_header_bytes")) {
    rd.read_size(*n, "server.max_header_bytes", kMinHeaderBytes, kMaxHeaderBytes, &s.max_header_bytes);
  }
  if (const toml::node* n = t.get("max_uri_bytes")) {
    // The request line is part of the head, so a URI limit above the head
    // limit could never fire: 431 would always come first.
    if (rd.read_size(*n, "server.max_uri_bytes", kMinUriBytes, kMaxHeaderBytes, &s.max_uri_bytes) &&
        s.max_uri_bytes > s.max_header_bytes) {
      rd.error(*n, "server.max_uri_bytes",
            "must not exceed server.max_header_bytes (" + std::to_string(s.max_header_bytes) + ")");
    }
  }
  if (const toml::node* n = t.get("max_connections_per_client")) {
    // Above max_connections it could never take effect.
    if (rd.read_int(*n, "server.max_connections_per_client", 0, INT64_MAX, &s.max_connections_per_client) &&
        s.max_connections_per_client > s.max_connections) {
      rd.error(*n, "server.max_connections_per_client",
               "must not exceed server.max_connections (" + std::to_string(s.max_connections) + ")");
    }
  }
  if (const toml::node* n = t.get("merge_slashes")) rd.read_bool(*n, "server.merge_slashes", &s.merge_slashes);
  if (const toml::node* n = t.get("underscores_in_headers")) {
    rd.read_bool(*n, "server.underscores_in_headers", &s.underscores_in_headers);
  }
  if (const toml::node* n = t.get("max_body_bytes")) {
    rd.read_size(*n, "server.max_body_bytes", 0, UINT64_MAX, &s.max_body_bytes);
  }
  // Request and response buffers live in memory: one of them is at most 1 GiB.
  const std::tuple<std::string_view, uint64_t*, uint64_t> buffers[] = {
      {"request_buffering", &s.request_buffering, kMaxRequestBuffering},
      {"request_buffering_total", &s.request_buffering_total, 1024 * kMaxRequestBuffering},
      {"response_buffering", &s.response_buffering, kMaxRequestBuffering},
      {"response_buffering_total", &s.response_buffering_total, 1024 * kMaxRequestBuffering},
  };
  for (const auto& [key, field, max] : buffers) {
    if (const toml::node* n = t.get(key)) rd.read_size(*n, Reader::join("server", key), 0, max, field);
  }
  if (const toml::node* n = t.get("client_table_size")) {
    rd.read_int(*n, "server.client_table_size", kMinClientTableSize, kMaxClientTableSize, client_table_size);
  }
  if (const toml::node* n = t.get("tickets_path")) read_tickets_path(rd, *n, s);
  if (const toml::node* n = t.get("trusted_proxies")) read_trusted_proxies(rd, *n, s);
  if (const toml::node* n = t.get("real_ip_header")) {
    std::string v;
    if (rd.read_string(*n, "server.real_ip_header", &v)) {
      if (v.empty() || !std::all_of(v.begin(), v.end(), is_tchar)) {
        rd.error(*n, "server.real_ip_header", "must be a header name, e.g. \"X-Forwarded-For\" or \"CF-Connecting-IP\"");
      } else {
        s.real_ip_header = std::move(v);
      }
    }
  }
  if (const toml::node* n = t.get("proxy_protocol")) rd.read_bool(*n, "server.proxy_protocol", &s.proxy_protocol);
  if (const toml::node* n = t.get("proxy_protocol_timeout")) {
    rd.read_duration(*n, "server.proxy_protocol_timeout", &s.proxy_protocol_timeout_ms);
  }
}

void load_admin(Reader& rd, const Table& table, const ServerConfig& server, AdminConfig& a) {
  const toml::table& t = table.toml();
  rd.check_keys(t, "admin", {"listen", "token"});

  if (const toml::node* n = t.get("listen")) {
    HostPort hp;
    if (rd.read_host_port(*n, "admin.listen", false, &hp)) {
      if (const std::string clash = listener_clash(hp, server.listen); !clash.empty()) {
        rd.error(*n, "admin.listen", clash);
      } else {
        a.listen = std::move(hp);
        a.enabled = true;
      }
    }
  }

  if (const toml::node* n = t.get("token")) {
    std::string token;
    if (rd.read_string(*n, "admin.token", &token)) {
      // The token itself never appears in a message: they end up in logs.
      if (!token.empty() && token.size() < kMinTokenChars) {
        rd.error(*n, "admin.token",
              "must be at least " + std::to_string(kMinTokenChars) + " characters, got " +
                  std::to_string(token.size()) + " (\"\" turns authentication off)");
      } else if (!std::all_of(token.begin(), token.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
        rd.error(*n, "admin.token", "must be printable ASCII without spaces");
      } else {
        a.token = std::move(token);
      }
    }
  }
}

void load_reload(Reader& rd, const Table& table, ReloadConfig& r) {
  const toml::table& t = table.toml();
  rd.check_keys(t, "reload", {"watch"});
  if (const toml::node* n = t.get("watch")) rd.read_bool(*n, "reload.watch", &r.watch);
}

void load_log(Reader& rd, const Table& table, LogConfig& log) {
  const toml::table& t = table.toml();
  rd.check_keys(t, "log", {"file", "access", "level", "access_sample", "access_fields"});
  if (const toml::node* n = t.get("file")) rd.read_string(*n, "log.file", &log.file);
  if (const toml::node* n = t.get("access")) rd.read_bool(*n, "log.access", &log.access);
  if (const toml::node* n = t.get("level")) {
    log::Level unused;
    if (rd.read_string(*n, "log.level", &log.level) && !log::parse_level(log.level, &unused)) {
      rd.error(*n, "log.level", "must be \"debug\", \"info\", \"warn\" or \"error\", got \"" + log.level + "\"");
    }
  }
  if (const toml::node* n = t.get("access_sample")) {
    rd.read_number(*n, "log.access_sample", 0, false, 1, &log.access_sample);
  }
  if (const toml::node* n = t.get("access_fields")) read_access_fields(rd, *n, log);
}

}  // namespace fg::config
