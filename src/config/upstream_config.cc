// Validation of [upstreams.NAME] and its retry and health tables (see
// upstream_config.h); the breaker table is read by breaker/breaker_config.cc.
#include "config/upstream_config.h"

#include <algorithm>
#include <cctype>

#include "config/reader.h"
#include "floodgate/units.h"

namespace fg::config {
namespace {

// Re-resolving more often than this only loads the name servers.
constexpr uint64_t kMinResolveEveryMs = 1000;

constexpr int64_t kMaxRetryAttempts = 20;
constexpr uint64_t kMinHealthIntervalMs = 100;
constexpr int64_t kMaxHealthThreshold = 100;

// backup: servers used only while every primary is unavailable. Unlike
// servers it may be empty (a placeholder for later); an address may not be
// both a primary and a backup, since it would then be tried twice.
void read_backup(Reader& rd, const toml::node& node, const std::string& path, UpstreamConfig& u) {
  const toml::array* arr = node.as_array();
  if (arr == nullptr) {
    rd.error(node, path, "expected an array of strings, got " + std::string(type_name(node)));
    return;
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    const toml::node& n = (*arr)[i];
    const std::string p = Reader::index(path, i);
    HostPort hp;
    if (!rd.read_host_port(n, p, true, &hp)) continue;
    auto same = [&](const HostPort& other) {
      return other.port == hp.port && canonical_ip(other.host) == canonical_ip(hp.host);
    };
    if (std::any_of(u.backup.begin(), u.backup.end(), same)) {
      rd.error(n, p, "\"" + hp.text + "\" is listed twice");
    } else if (std::any_of(u.servers.begin(), u.servers.end(), same)) {
      rd.error(n, p, "\"" + hp.text + "\" is also in servers; a backup must be a different server");
    } else {
      u.backup.push_back(std::move(hp));
    }
  }
}

// timeout: a duration, or "adaptive" (derived from the observed latency,
// between timeout_min and timeout_max).
void read_upstream_timeout(Reader& rd, const toml::node& node, const std::string& path, UpstreamConfig& u) {
  const auto* v = node.as_string();
  if (v == nullptr) {
    rd.error(node, path, "expected a duration string such as \"5s\" or \"adaptive\", got " +
                          std::string(type_name(node)));
    return;
  }
  if (v->get() == "adaptive") {
    u.adaptive_timeout = true;
    return;
  }
  if (Result<uint64_t> ms = parse_duration_ms(v->get()); !ms) {
    rd.error(node, path, ms.message() + ", or \"adaptive\"");
    return;
  }
  rd.read_duration(node, path, &u.timeout_ms);
}

// timeout_min/timeout_max bound the adaptive timeout. They are accepted next
// to a fixed timeout too, so that switching to "adaptive" is a one-word edit.
void read_timeout_bounds(Reader& rd, const toml::table& t, const std::string& path, UpstreamConfig& u) {
  const toml::node* lo = t.get("timeout_min");
  const toml::node* hi = t.get("timeout_max");
  bool ok = true;
  if (lo != nullptr) ok = rd.read_duration(*lo, path + ".timeout_min", &u.timeout_min_ms) && ok;
  if (hi != nullptr) ok = rd.read_duration(*hi, path + ".timeout_max", &u.timeout_max_ms) && ok;
  if (!ok || u.timeout_min_ms <= u.timeout_max_ms) return;
  if (hi != nullptr) {
    rd.error(*hi, path + ".timeout_max",
          "must be at least timeout_min (" + format_ms(u.timeout_min_ms) + "), got " + format_ms(u.timeout_max_ms));
  } else {
    rd.error(*lo, path + ".timeout_min",
          "must not exceed timeout_max (" + format_ms(u.timeout_max_ms) + " unless set); raise timeout_max as well");
  }
}

// health = { path, interval, timeout, rise, fall }: active checks, once per
// instance. The table switches them on; every key has a default.
void load_health(Reader& rd, const toml::table& t, const std::string& path, HealthConfig& h) {
  rd.check_keys(t, path, {"path", "interval", "timeout", "rise", "fall"});
  h.enabled = true;
  if (const toml::node* n = t.get("path")) {
    const std::string p = path + ".path";
    std::string v;
    if (rd.read_string(*n, p, &v)) {
      if (v.empty() || v.front() != '/') {
        rd.error(*n, p, "must start with '/', got \"" + v + "\"");
      } else if (std::any_of(v.begin(), v.end(), [](char c) {
                   const auto u = static_cast<unsigned char>(c);
                   return u <= 0x20 || u >= 0x7f;
                 })) {
        // It becomes the request line of the check.
        rd.error(*n, p, "must not contain spaces, control characters or non-ASCII bytes (percent-encode them)");
      } else if (v.find('#') != std::string::npos) {
        rd.error(*n, p, "must not contain a fragment ('#')");
      } else {
        h.path = std::move(v);
      }
    }
  }
  const toml::node* interval = t.get("interval");
  const toml::node* timeout = t.get("timeout");
  bool ok = true;
  if (interval != nullptr) {
    ok = rd.read_duration(*interval, path + ".interval", kMinHealthIntervalMs, kMaxDurationMs, &h.interval_ms) && ok;
  }
  if (timeout != nullptr) ok = rd.read_duration(*timeout, path + ".timeout", &h.timeout_ms) && ok;
  if (ok && h.timeout_ms >= h.interval_ms) {
    // A check still running when the next one is due would overlap it.
    if (timeout != nullptr) {
      rd.error(*timeout, path + ".timeout",
            "must be shorter than interval (" + format_ms(h.interval_ms) + "), got " + format_ms(h.timeout_ms));
    } else {
      rd.error(*interval, path + ".interval",
            "must be longer than timeout (" + format_ms(h.timeout_ms) + " unless set); set a shorter timeout");
    }
  }
  if (const toml::node* n = t.get("rise")) rd.read_int(*n, path + ".rise", 1, kMaxHealthThreshold, &h.rise);
  if (const toml::node* n = t.get("fall")) rd.read_int(*n, path + ".fall", 1, kMaxHealthThreshold, &h.fall);
}

// [upstreams.X.retry]: how queued and store-and-forward deliveries are
// retried (live requests are never retried by these settings).
void load_retry(Reader& rd, const toml::table& t, const std::string& path, RetryConfig& r) {
  rd.check_keys(t, path, {"attempts", "backoff", "max_backoff", "on"});
  if (const toml::node* n = t.get("attempts")) {
    rd.read_int(*n, path + ".attempts", 1, kMaxRetryAttempts, &r.attempts);
  }
  const toml::node* backoff = t.get("backoff");
  const toml::node* max_backoff = t.get("max_backoff");
  bool ok = true;
  if (backoff != nullptr) ok = rd.read_duration(*backoff, path + ".backoff", &r.backoff_ms) && ok;
  if (max_backoff != nullptr) ok = rd.read_duration(*max_backoff, path + ".max_backoff", &r.max_backoff_ms) && ok;
  if (ok && r.max_backoff_ms < r.backoff_ms) {
    if (max_backoff != nullptr) {
      rd.error(*max_backoff, path + ".max_backoff",
            "must be at least backoff (" + format_ms(r.backoff_ms) + "), got " + format_ms(r.max_backoff_ms));
    } else {
      rd.error(*backoff, path + ".backoff",
            "must not exceed max_backoff (" + format_ms(r.max_backoff_ms) +
                " unless set); raise max_backoff as well");
    }
  }
  if (const toml::node* n = t.get("on")) {
    const std::string p = path + ".on";
    const toml::array* arr = n->as_array();
    if (arr == nullptr) {
      rd.error(*n, p, "expected an array such as [\"connect\", \"timeout\", \"503\"], got " +
                       std::string(type_name(*n)));
      return;
    }
    if (arr->empty()) {
      rd.error(*n, p, "must list at least one condition (attempts = 1 turns retries off)");
      return;
    }
    RetryConfig parsed;
    parsed.on_connect = false;
    parsed.on_timeout = false;
    parsed.on_status.clear();
    std::vector<std::string> seen;
    bool all_ok = true;
    for (size_t i = 0; i < arr->size(); ++i) {
      const std::string ip = Reader::index(p, i);
      std::string v;
      if (!rd.read_string((*arr)[i], ip, &v)) {
        all_ok = false;
        continue;
      }
      if (std::find(seen.begin(), seen.end(), v) != seen.end()) {
        rd.error((*arr)[i], ip, "\"" + v + "\" is listed twice");
        all_ok = false;
        continue;
      }
      seen.push_back(v);
      if (v == "connect") {
        parsed.on_connect = true;
      } else if (v == "timeout") {
        parsed.on_timeout = true;
      } else if (v.size() == 3 && v[0] == '5' && std::isdigit(static_cast<unsigned char>(v[1])) &&
                 std::isdigit(static_cast<unsigned char>(v[2]))) {
        parsed.on_status.push_back(std::stoi(v));
      } else {
        rd.error((*arr)[i], ip,
              "expected \"connect\", \"timeout\" or a status code \"500\" to \"599\", got \"" + v + "\"");
        all_ok = false;
      }
    }
    if (all_ok) {
      r.on_connect = parsed.on_connect;
      r.on_timeout = parsed.on_timeout;
      r.on_status = std::move(parsed.on_status);
    }
  }
}

void load_upstream(Reader& rd, const toml::table& t, const std::string& path, UpstreamConfig& u) {
  rd.check_keys(t, path,
             {"servers", "backup", "balance", "connect_timeout", "timeout", "timeout_min", "timeout_max",
              "max_connections", "keepalive", "keepalive_timeout", "retry", "breaker", "health", "tls", "tls_ca",
              "tls_verify", "tls_server_name", "resolve_every", "resolver"});
  read_upstream_tls(rd, Table(t, path), &u.tls);

  if (const toml::node* n = t.get("servers")) {
    rd.read_address_list(*n, path + ".servers", false, true, &u.servers);
  } else {
    rd.error(t, path + ".servers", "required, e.g. servers = [\"127.0.0.1:8081\"]");
  }
  if (const toml::node* n = t.get("backup")) read_backup(rd, *n, path + ".backup", u);

  if (const toml::node* n = t.get("balance")) {
    std::string b;
    if (rd.read_string(*n, path + ".balance", &b)) {
      if (b == "round_robin") u.balance = Balance::kRoundRobin;
      else if (b == "least_conn") u.balance = Balance::kLeastConn;
      else rd.error(*n, path + ".balance", "expected \"round_robin\" or \"least_conn\", got \"" + b + "\"");
    }
  }
  if (const toml::node* n = t.get("connect_timeout")) {
    rd.read_duration(*n, path + ".connect_timeout", &u.connect_timeout_ms);
  }
  if (const toml::node* n = t.get("timeout")) read_upstream_timeout(rd, *n, path + ".timeout", u);
  read_timeout_bounds(rd, t, path, u);
  if (const toml::node* n = t.get("keepalive_timeout")) {
    rd.read_duration(*n, path + ".keepalive_timeout", &u.keepalive_timeout_ms);
  }
  if (const toml::node* n = t.get("max_connections")) {
    rd.read_int(*n, path + ".max_connections", 1, INT64_MAX, &u.max_connections);
  }
  if (const toml::node* n = t.get("keepalive")) rd.read_int(*n, path + ".keepalive", 0, INT64_MAX, &u.keepalive);
  if (const toml::node* n = t.get("resolve_every")) {
    rd.read_duration(*n, path + ".resolve_every", kMinResolveEveryMs, kMaxDurationMs, &u.resolve_every_ms);
  }
  if (const toml::node* n = t.get("resolver")) {
    // Name servers are addresses: resolving the resolver would need a resolver.
    rd.read_address_list(*n, path + ".resolver", true, false, &u.resolver);
  }
  if (const toml::node* n = t.get("retry")) {
    if (const toml::table* rt = rd.as_table(*n, path + ".retry")) load_retry(rd, *rt, path + ".retry", u.retry);
  }
  if (const toml::node* n = t.get("breaker")) {
    if (const toml::table* bt = rd.as_table(*n, path + ".breaker")) breaker::load_config(rd, Table(*bt, path + ".breaker"), u.breaker);
  }
  if (const toml::node* n = t.get("health")) {
    if (const toml::table* ht = rd.as_table(*n, path + ".health")) load_health(rd, *ht, path + ".health", u.health);
  }
}

}  // namespace

void load_upstreams(Reader& rd, const Table& table, std::vector<UpstreamConfig>& out) {
  const toml::table& t = table.toml();
  if (t.empty()) {
    rd.error(t, "upstreams", "at least one [upstreams.NAME] table is required");
    return;
  }
  // toml++ keeps keys sorted; file order is what an operator expects to see
  // in /status, so sort by position before loading.
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (auto&& [key, node] : t) entries.emplace_back(&key, &node);
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    const auto& pa = a.first->source().begin;
    const auto& pb = b.first->source().begin;
    return pa.line != pb.line ? pa.line < pb.line : pa.column < pb.column;
  });
  for (const auto& [key, node] : entries) {
    const std::string name(key->str());
    const std::string path = "upstreams." + name;
    if (!is_name(name)) {
      rd.error_at(key->source(), path, "upstream names may use only letters, digits, '_', '-' and '.'");
      continue;
    }
    const toml::table* ut = rd.as_table(*node, path);
    if (ut == nullptr) continue;
    UpstreamConfig u;
    u.name = name;
    load_upstream(rd, *ut, path, u);
    out.push_back(std::move(u));
  }
}

}  // namespace fg::config
