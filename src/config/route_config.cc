// Validation of [[routes]] (see route_config.h): a route's own keys, the feature
// loaders it hands its table to, and the checks across routes.
#include "config/route_config.h"

#include <algorithm>

#include "config/reader.h"
#include "floodgate/config.h"

namespace fg::config {
namespace {

// mode = "store_and_forward" and overflow = "queue" as written, so that a
// queue setting is judged by what the route asks for even when the value
// that asks for it has another problem (overflow without rate).
bool wants_store_and_forward(const toml::table& t) {
  const toml::node* n = t.get("mode");
  return n != nullptr && n->value<std::string>() == "store_and_forward";
}

bool wants_queue(const toml::table& t) {
  const toml::node* n = t.get("overflow");
  const toml::node* u = t.get("on_unavailable");
  return wants_store_and_forward(t) || (n != nullptr && n->value<std::string>() == "queue") ||
         (u != nullptr && u->value<std::string>() == "queue");
}

void load_match(Reader& rd, const toml::table& t, const std::string& path, RouteMatch& m) {
  rd.check_keys(t, path, {"methods", "path", "prefix"});

  if (const toml::node* n = t.get("methods")) {
    const toml::array* arr = n->as_array();
    if (arr == nullptr) {
      rd.error(*n, path + ".methods", "expected an array of strings, got " + std::string(type_name(*n)));
    } else if (arr->empty()) {
      rd.error(*n, path + ".methods", "must not be empty (leave it out to match any method)");
    } else {
      for (size_t i = 0; i < arr->size(); ++i) {
        const std::string p = Reader::index(path + ".methods", i);
        std::string method;
        if (!rd.read_string((*arr)[i], p, &method)) continue;
        if (method.empty() || !std::all_of(method.begin(), method.end(), is_tchar)) {
          rd.error((*arr)[i], p, "invalid HTTP method \"" + method + "\"");
          continue;
        }
        // Methods are case-sensitive on the wire; upper-casing here lets
        // matching stay a plain comparison while "get" still means GET.
        std::transform(method.begin(), method.end(), method.begin(),
                       [](char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; });
        if (std::find(m.methods.begin(), m.methods.end(), method) == m.methods.end()) {
          m.methods.push_back(std::move(method));
        }
      }
    }
  }

  const toml::node* exact = t.get("path");
  const toml::node* prefix = t.get("prefix");
  if (exact != nullptr && prefix != nullptr) {
    rd.error(*prefix, path, "set either path (exact) or prefix, not both");
    return;
  }
  if (exact == nullptr && prefix == nullptr) {
    rd.error(t, path, "needs path = \"/exact\" or prefix = \"/start/\"");
    return;
  }
  const toml::node& n = exact != nullptr ? *exact : *prefix;
  const std::string p = path + (exact != nullptr ? ".path" : ".prefix");
  if (!rd.read_string(n, p, &m.path)) return;
  m.is_prefix = prefix != nullptr;
  if (m.path.empty() || m.path.front() != '/') {
    rd.error(n, p, "must start with '/', got \"" + m.path + "\"");
    return;
  }
  for (char c : m.path) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) {
      rd.error(n, p, "must not contain spaces or control characters");
      return;
    }
    if (c == '?' || c == '#') {
      rd.error(n, p, "matches the path only; it must not contain '?' or '#'");
      return;
    }
  }
}

// Whether every path `later` matches is also matched by `earlier`. For a
// prefix it is enough that the prefix itself matches: the prefix rule then
// also accepts every longer path under it. The check goes through
// Config::match_route so it can never disagree with runtime matching.
bool covers(const RouteMatch& earlier, const RouteMatch& later) {
  if (!earlier.is_prefix) return !later.is_prefix && earlier.path == later.path;
  Config probe;
  RouteConfig r;
  r.match.path = earlier.path;
  r.match.is_prefix = true;
  probe.routes.push_back(std::move(r));
  return probe.match_route("", later.path) == 0;
}

// A route that an earlier one always wins over can never be selected, which
// means its limits silently never apply (typically a catch-all placed
// first). Methods are checked one by one, since GET and POST may be taken
// by two different earlier routes.
void check_shadowed(Reader& rd, const toml::array& arr, const Config& cfg) {
  for (size_t i = 1; i < cfg.routes.size(); ++i) {
    const RouteConfig& later = cfg.routes[i];
    std::vector<std::string_view> methods(later.match.methods.begin(), later.match.methods.end());
    if (methods.empty()) methods.push_back("");  // "any method": only a method-less route covers it
    size_t winner = i;
    bool all_covered = true;
    for (std::string_view method : methods) {
      size_t by = i;
      for (size_t j = 0; j < i && by == i; ++j) {
        const RouteMatch& em = cfg.routes[j].match;
        const bool method_ok =
            em.methods.empty() ||
            (!method.empty() && std::find(em.methods.begin(), em.methods.end(), method) != em.methods.end());
        if (method_ok && covers(em, later.match)) by = j;
      }
      if (by == i) {
        all_covered = false;
        break;
      }
      winner = std::min(winner, by);
    }
    if (all_covered) {
      rd.error(arr[i], Reader::index("routes", i),
            "route \"" + later.name + "\" can never match: earlier route \"" + cfg.routes[winner].name +
                "\" (routes[" + std::to_string(winner) + "]) takes all of its requests");
    }
  }
}

// cache and on_unavailable: what a route serves when its upstream cannot
// answer (SPEC §7).
void load_unavailable(Reader& rd, const toml::table& t, const std::string& path, RouteConfig& r) {
  if (const toml::node* n = t.get("cache")) {
    const std::string p = path + ".cache";
    const bool reads_only =
        std::all_of(r.match.methods.begin(), r.match.methods.end(),
                    [](const std::string& m) { return m == "GET" || m == "HEAD"; });
    if (!reads_only) {
      rd.error(*n, p, "cache applies to GET and HEAD routes only");
    } else if (r.store_and_forward) {
      rd.error(*n, p, "a store_and_forward route answers every request with ack; a cache would never apply");
    } else if (const toml::table* ct = rd.as_table(*n, p)) {
      cache::load_config(rd, Table(*ct, p), r.cache);
    }
  }
  if (const toml::node* n = t.get("on_unavailable")) {
    const std::string p = path + ".on_unavailable";
    std::string v;
    if (!rd.read_string(*n, p, &v)) return;
    if (v == "error") {
      r.on_unavailable = OnUnavailable::kError;
    } else if (v == "degrade") {
      r.on_unavailable = OnUnavailable::kDegrade;
    } else if (v == "queue") {
      // Needs [redis]; that is checked with the other Redis users in load_root.
      r.on_unavailable = OnUnavailable::kQueue;
    } else if (v == "cache") {
      if (!t.contains("cache")) {
        rd.error(*n, p, "on_unavailable = \"cache\" needs a cache on the route (cache = { ttl = \"2s\", "
                     "stale_if_error = \"5m\" })");
        return;
      }
      r.on_unavailable = OnUnavailable::kCache;
    } else {
      rd.error(*n, p, "expected \"error\", \"queue\", \"cache\" or \"degrade\", got \"" + v + "\"");
      return;
    }
    if (r.store_and_forward) {
      // Its requests are only ever delivered from the queue, where the
      // upstream's retry settings decide what happens.
      rd.error(*n, p, "a store_and_forward route never sends a request live; on_unavailable would never apply "
                   "(leave it out)");
    }
  }
}

// Returns false when the route is too broken to take part in the later
// cross-route checks (which would then only report noise).
bool load_route(Reader& rd, const toml::table& t, const std::string& path, const Config& cfg, RouteConfig& r) {
  const size_t errors_before = rd.error_count();
  rd.check_keys(t, path,
             {"name", "match", "upstream", "max_body_bytes", "request_buffering", "rate", "burst", "scope", "client_rate",
              "client_burst", "client_key", "overflow", "dry_run", "core", "idempotency", "mode", "ack",
              "queue", "client_max_tickets", "on_failure_webhook", "retry_schedule", "retry_jitter", "cache",
              "on_unavailable"});

  if (const toml::node* n = t.get("name")) {
    if (rd.read_string(*n, path + ".name", &r.name)) {
      if (!is_name(r.name)) {
        rd.error(*n, path + ".name", "route names must be non-empty and use only letters, digits, '_', '-' and '.'");
      } else {
        for (size_t j = 0; j < cfg.routes.size(); ++j) {
          if (cfg.routes[j].name == r.name) {
            rd.error(*n, path + ".name", "duplicate route name \"" + r.name + "\"");
            break;
          }
        }
      }
    }
  } else {
    rd.error(t, path + ".name", "required");
  }

  if (const toml::node* n = t.get("match")) {
    if (const toml::table* m = rd.as_table(*n, path + ".match")) load_match(rd, *m, path + ".match", r.match);
  } else {
    rd.error(t, path + ".match", "required, e.g. match = { prefix = \"/\" }");
  }

  if (const toml::node* n = t.get("upstream")) {
    if (rd.read_string(*n, path + ".upstream", &r.upstream)) {
      bool found = false;
      for (size_t j = 0; j < cfg.upstreams.size(); ++j) {
        if (cfg.upstreams[j].name == r.upstream) {
          r.upstream_index = j;
          found = true;
          break;
        }
      }
      if (!found) rd.error(*n, path + ".upstream", "unknown upstream \"" + r.upstream + "\"");
    }
  } else {
    rd.error(t, path + ".upstream", "required");
  }

  if (const toml::node* n = t.get("max_body_bytes")) {
    // 0 would read as "inherit" in RouteConfig, so an override starts at 1.
    rd.read_size(*n, path + ".max_body_bytes", 1, UINT64_MAX, &r.max_body_bytes);
  }
  if (const toml::node* n = t.get("request_buffering")) {
    uint64_t v = 0;
    if (rd.read_size(*n, path + ".request_buffering", 0, kMaxRequestBuffering, &v)) r.request_buffering = v;
  }
  if (const toml::node* n = t.get("mode")) {
    std::string v;
    if (rd.read_string(*n, path + ".mode", &v)) {
      if (v == "store_and_forward") r.store_and_forward = true;
      else if (v != "forward") rd.error(*n, path + ".mode", "expected \"forward\" or \"store_and_forward\", got \"" + v + "\"");
    }
  }
  admission::load_route_admission(rd, Table(t, path), r.store_and_forward, r);
  if (const toml::node* n = t.get("idempotency")) {
    if (const toml::table* it = rd.as_table(*n, path + ".idempotency")) {
      idempotency::load_config(rd, Table(*it, path + ".idempotency"), r.idempotency);
    }
  }
  const UpstreamConfig* upstream = r.upstream_index < cfg.upstreams.size() &&
                                           cfg.upstreams[r.upstream_index].name == r.upstream
                                       ? &cfg.upstreams[r.upstream_index]
                                       : nullptr;
  queue::load_route_queueing(rd, Table(t, path), wants_store_and_forward(t), wants_queue(t), upstream, r);
  load_unavailable(rd, t, path, r);
  return rd.error_count() == errors_before;
}

}  // namespace

void load_routes(Reader& rd, const Table& root, Config& cfg) {
  const toml::node& node = *root.toml().get("routes");
  const toml::array* arr = node.as_array();
  if (arr == nullptr) {
    rd.error(node, "routes", "expected [[routes]] entries (an array of tables), got " +
                              std::string(type_name(node)));
    return;
  }
  if (arr->empty()) {
    rd.error(node, "routes", "at least one [[routes]] entry is required");
    return;
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    const std::string path = Reader::index("routes", i);
    const toml::table* t = rd.as_table((*arr)[i], path);
    if (t == nullptr) continue;
    RouteConfig r;
    if (load_route(rd, *t, path, cfg, r)) cfg.routes.push_back(std::move(r));
  }
  if (rd.ok()) check_shadowed(rd, *arr, cfg);
}

}  // namespace fg::config
