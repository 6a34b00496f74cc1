// Validation of a route's admission keys, [degrade] and [pressure] (see
// admission_config.h).
#include "admission/admission_config.h"

#include <cmath>
#include <algorithm>

#include "config/reader.h"

namespace fg::admission {
namespace {

using config::format_number;
using config::is_tchar;
using config::Reader;
using config::Table;

// Admission rates and bursts, in requests (per second). Far above what one
// instance can serve, low enough that the limiter's arithmetic stays exact.
constexpr double kMaxRate = 10'000'000;

// "ip", or "header:NAME" with NAME a header field name (RFC 9110 token).
bool read_client_key(Reader& rd, const toml::node& node, const std::string& path, ClientKey* out) {
  std::string v;
  if (!rd.read_string(node, path, &v)) return false;
  if (v == "ip") {
    out->by_header = false;
    out->header.clear();
    return true;
  }
  constexpr std::string_view kHeader = "header:";
  if (v.compare(0, kHeader.size(), kHeader) == 0) {
    const std::string name = v.substr(kHeader.size());
    if (name.empty() || !std::all_of(name.begin(), name.end(), is_tchar)) {
      rd.error(node, path, "invalid header name \"" + name + "\" in \"" + v +
                            "\" (expected \"header:NAME\" such as \"header:X-User-Id\")");
      return false;
    }
    out->by_header = true;
    out->header = name;
    return true;
  }
  rd.error(node, path, "expected \"ip\" or \"header:NAME\", got \"" + v + "\"");
  return false;
}

}  // namespace

// rate/burst (route budget), client_rate/client_burst/client_key (per
// client), overflow, scope, dry_run, core. A key that only modifies another
// one is rejected without it: left alone it would look like a limit that is
// not there.
void load_route_admission(Reader& rd, const Table& route, bool store_and_forward, AdmissionConfig& r) {
  const toml::table& t = route.toml();
  const std::string& path = route.path();
  const bool has_rate = t.contains("rate");
  const bool has_client_rate = t.contains("client_rate");
  auto needs = [&](const toml::node& n, const std::string& key, const std::string& what) {
    rd.error(n, Reader::join(path, key), "only valid together with " + what);
  };

  if (const toml::node* n = t.get("rate")) rd.read_number(*n, path + ".rate", 0, true, kMaxRate, &r.rate);
  if (const toml::node* n = t.get("burst")) {
    if (rd.read_number(*n, path + ".burst", 0, false, kMaxRate, &r.burst) && !has_rate) {
      needs(*n, "burst", "rate (burst adds to the route budget)");
    }
  } else if (has_rate) {
    // Real arrivals bunch: with no burst at all a GCRA refuses a request that comes a
    // moment before its slot, so a route at a fraction of its rate still sees 429s.
    // A tenth of a second of the rate absorbs that jitter; `burst = 0` stays possible.
    r.burst = std::ceil(r.rate / 10.0);
  }

  if (const toml::node* n = t.get("client_rate")) {
    rd.read_number(*n, path + ".client_rate", 0, true, kMaxRate, &r.client_rate);
  }
  bool client_burst_set = false;
  if (const toml::node* n = t.get("client_burst")) {
    client_burst_set = rd.read_number(*n, path + ".client_burst", 1, false, kMaxRate, &r.client_burst);
    if (client_burst_set && !has_client_rate) needs(*n, "client_burst", "client_rate");
  }
  // One second's worth of requests, and at least one request.
  if (!client_burst_set) r.client_burst = std::max(1.0, r.client_rate);
  if (const toml::node* n = t.get("client_key")) {
    // The key also counts the tickets a client holds (client_max_tickets).
    if (read_client_key(rd, *n, path + ".client_key", &r.client_key) && !has_client_rate &&
        !t.contains("client_max_tickets")) {
      needs(*n, "client_key", "client_rate or client_max_tickets");
    }
  }

  if (const toml::node* n = t.get("overflow")) {
    const std::string p = path + ".overflow";
    std::string v;
    if (rd.read_string(*n, p, &v)) {
      bool ok = true;
      if (v == "reject") {
        r.overflow = Overflow::kReject;
      } else if (v == "degrade") {
        r.overflow = Overflow::kDegrade;
      } else if (v == "queue") {
        r.overflow = Overflow::kQueue;
      } else {
        ok = false;
        rd.error(*n, p, "expected \"reject\", \"degrade\" or \"queue\", got \"" + v + "\"");
      }
      if (ok && store_and_forward && r.overflow != Overflow::kQueue) {
        // Such a route parks every request; nothing is ever over the budget
        // at arrival, so the setting could not take effect.
        rd.error(*n, p,
              "a store_and_forward route queues every request; overflow = \"" + v +
                  "\" would never apply (leave overflow out)");
      } else if (ok && !has_rate) {
        needs(*n, "overflow", "rate (overflow decides what happens beyond the route budget)");
      }
    }
  }

  if (const toml::node* n = t.get("scope")) {
    const std::string p = path + ".scope";
    std::string v;
    if (rd.read_string(*n, p, &v)) {
      if (v == "cluster") {
        // The [redis] table it needs is checked with the other Redis users in load_root.
        r.cluster_scope = true;
        if (!has_rate) needs(*n, "scope", "rate (scope says who shares the route budget)");
      } else if (v != "instance") {
        rd.error(*n, p, "expected \"instance\" or \"cluster\", got \"" + v + "\"");
      }
    }
  }

  if (const toml::node* n = t.get("dry_run")) rd.read_bool(*n, path + ".dry_run", &r.dry_run);
  if (const toml::node* n = t.get("core")) rd.read_bool(*n, path + ".core", &r.core);
}

void load_degrade(Reader& rd, const Table& table, DegradeConfig& d) {
  const toml::table& t = table.toml();
  rd.check_keys(t, "degrade", {"status", "body", "content_type", "retry_after"});
  const toml::node* status = t.get("status");
  if (status != nullptr) {
    uint64_t v = 0;
    if (rd.read_int(*status, "degrade.status", 200, 599, &v)) d.status = static_cast<int>(v);
  }
  if (const toml::node* n = t.get("body")) rd.read_string(*n, "degrade.body", &d.body);
  if (const toml::node* n = t.get("content_type")) {
    std::string v;
    if (rd.read_string(*n, "degrade.content_type", &v)) {
      if (v.empty()) {
        rd.error(*n, "degrade.content_type", "must not be empty");
      } else if (std::any_of(v.begin(), v.end(), [](char c) {
                   const auto u = static_cast<unsigned char>(c);
                   return u < 0x20 || u == 0x7f;
                 })) {
        // It becomes a header value; a CR or LF would split the response.
        rd.error(*n, "degrade.content_type", "must not contain control characters");
      } else {
        d.content_type = std::move(v);
      }
    }
  }
  if (const toml::node* n = t.get("retry_after")) rd.read_duration(*n, "degrade.retry_after", &d.retry_after_ms);
  // These statuses have no content by definition (RFC 9110); a body sent
  // with them would be read as the start of the next response.
  if (status != nullptr && (d.status == 204 || d.status == 205 || d.status == 304) && !d.body.empty()) {
    rd.error(*status, "degrade.status",
          "a " + std::to_string(d.status) + " response cannot carry a body; set body = \"\" or use another status");
  }
}

void load_pressure(Reader& rd, const Table& table, PressureConfig& p) {
  const toml::table& t = table.toml();
  rd.check_keys(t, "pressure", {"loop_lag", "queue_depth"});
  if (const toml::node* n = t.get("loop_lag")) rd.read_duration(*n, "pressure.loop_lag", &p.loop_lag_ms);
  if (const toml::node* n = t.get("queue_depth")) rd.read_int(*n, "pressure.queue_depth", 1, INT64_MAX, &p.queue_depth);
}

}  // namespace fg::admission
