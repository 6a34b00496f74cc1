// Dead-letter listing and re-delivery for the admin listener (see dead_letter_admin.h).
#include "net/dead_letter_admin.h"

#include <cstdlib>

#include "core/log.h"
#include "http/serialize.h"
#include "redis/endpoint.h"

namespace fg::net {
namespace {

constexpr uint64_t kDefaultLimit = 100;
constexpr uint64_t kMaxLimit = 1000;
constexpr uint64_t kRedeliverBatch = 500;
constexpr int kRedeliverRounds = 100;

std::string error_body(std::string_view code, std::string_view message) {
  std::string body = "{\"error\":\"" + std::string(code) + "\",\"message\":\"";
  http::append_json_escaped(body, message);
  return body + "\"}";
}

// A non-negative decimal integer without sign or spaces, at most `max`.
bool read_uint(const std::string& text, uint64_t max, uint64_t* out) {
  if (text.empty() || text.size() > 12) return false;
  for (char c : text)
    if (c < '0' || c > '9') return false;
  uint64_t v = std::strtoull(text.c_str(), nullptr, 10);
  if (v > max) return false;
  *out = v;
  return true;
}

void append_str(std::string& out, std::string_view key, std::string_view value) {
  out += "\"" + std::string(key) + "\":\"";
  http::append_json_escaped(out, value);
  out += "\"";
}

void log_redelivered(const std::string& route, std::string_view which, int64_t moved) {
  log::event("info", "dead_letters_redelivered", [&](log::Line& l) {
    l.str("route", route).str("ticket", which).num("moved", moved);
  });
}

}  // namespace

bool query_value(std::string_view query, std::string_view name, std::string* out) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      *out = eq == std::string_view::npos ? std::string() : std::string(pair.substr(eq + 1));
      return true;
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return false;
}

DeadLetterAdmin::DeadLetterAdmin(uv_loop_t* loop, std::function<void(const std::string&, int64_t)> on_redelivered)
    : loop_(loop), on_redelivered_(std::move(on_redelivered)) {}

DeadLetterAdmin::~DeadLetterAdmin() { close(); }

void DeadLetterAdmin::configure(const Config& cfg) {
  std::string url = cfg.redis.enabled ? cfg.redis.url : std::string();
  const redis::SentinelSet& sentinels = cfg.redis.endpoint.sentinel;
  if (url == redis_url_ && sentinels == sentinels_ && (redis_ != nullptr) == !url.empty()) return;
  close();
  if (url.empty()) return;
  redis::Client::Options opt;
  opt.endpoint = cfg.redis.endpoint;  // parsed by the loader, with the Sentinels if any
  opt.command_timeout_ms = cfg.redis.timeout_ms;
  opt.name = "admin";
  redis_ = std::make_unique<redis::Client>(loop_, std::move(opt));
  redis_->start();
  redis_url_ = url;
  sentinels_ = sentinels;
}

void DeadLetterAdmin::close() {
  if (!redis_) return;
  // The client is freed once its handles are closed.
  redis::Client* c = redis_.release();
  c->close([c] { delete c; });
  redis_url_.clear();
}

const RouteConfig* DeadLetterAdmin::route_of(const Config& cfg, std::string_view query, const Answer& done) {
  std::string name;
  if (!query_value(query, "route", &name) || name.empty()) {
    done(400, error_body("bad_request", "route=NAME is required"));
    return nullptr;
  }
  for (const RouteConfig& r : cfg.routes) {
    if (r.name != name) continue;
    if (!r.queued()) break;
    if (!redis_) {
      done(503, error_body("redis_unavailable", "no Redis connection"));
      return nullptr;
    }
    return &r;
  }
  done(404, error_body("unknown_route", "no queued route named \"" + name + "\""));
  return nullptr;
}

void DeadLetterAdmin::list(const Config& cfg, std::string_view query, Answer done) {
  const RouteConfig* rc = route_of(cfg, query, done);
  if (rc == nullptr) return;
  uint64_t offset = 0, limit = kDefaultLimit;
  std::string v;
  if ((query_value(query, "offset", &v) && !read_uint(v, UINT32_MAX, &offset)) ||
      (query_value(query, "limit", &v) && (!read_uint(v, kMaxLimit, &limit) || limit == 0))) {
    done(400, error_body("bad_request", "offset must be a number >= 0 and limit a number from 1 to 1000"));
    return;
  }
  std::string route = rc->name;
  queue::list_dead(*redis_, scripts_, queue::Keys{cfg.redis.prefix}, route, offset, limit,
                   [route, offset, done = std::move(done)](queue::DeadPage& page) {
                     if (!page.ok) {
                       done(503, error_body("redis_unavailable", "Redis did not answer"));
                       return;
                     }
                     std::string out = "{";
                     append_str(out, "route", route);
                     out += ",\"total\":" + std::to_string(page.total) + ",\"offset\":" + std::to_string(offset) +
                            ",\"items\":[";
                     for (size_t i = 0; i < page.items.size(); i++) {
                       const queue::DeadLetter& d = page.items[i];
                       out += i ? ",{" : "{";
                       append_str(out, "ticket", d.id);
                       out += ",\"created_ms\":" + std::to_string(d.created_ms) +
                              ",\"dead_ms\":" + std::to_string(d.dead_ms) +
                              ",\"attempts\":" + std::to_string(d.attempts) + ",";
                       append_str(out, "reason", d.reason);
                       out += ",";
                       append_str(out, "method", d.method);
                       out += ",";
                       append_str(out, "target", d.target);
                       out += "}";
                     }
                     done(200, out + "]}");
                   });
}

void DeadLetterAdmin::redeliver(const Config& cfg, std::string_view query, Answer done) {
  const RouteConfig* rc = route_of(cfg, query, done);
  if (rc == nullptr) return;
  std::string route = rc->name;
  std::string ticket;
  if (!query_value(query, "ticket", &ticket)) {
    redeliver_batches(route, cfg.redis.prefix, kRedeliverRounds, 0, std::move(done));
    return;
  }
  if (!queue::valid_ticket_id(ticket)) {
    done(400, error_body("bad_request", "not a ticket id"));
    return;
  }
  queue::redeliver(*redis_, scripts_, queue::Keys{cfg.redis.prefix}, route, ticket, log::wall_ms(),
                   [this, route, ticket, done = std::move(done)](const queue::Redelivered& r) {
                     if (!r.ok) {
                       done(503, error_body("redis_unavailable", "Redis did not take the write"));
                       return;
                     }
                     log_redelivered(route, ticket, r.moved);
                     if (r.moved > 0 && on_redelivered_) on_redelivered_(route, r.moved);
                     done(200, "{\"moved\":" + std::to_string(r.moved) +
                                   ",\"remaining\":" + std::to_string(r.remaining) + "}");
                   });
}

void DeadLetterAdmin::redeliver_batches(std::string route, std::string prefix, int rounds_left, int64_t moved_so_far,
                                        Answer done) {
  if (!redis_) {
    done(503, error_body("redis_unavailable", "no Redis connection"));
    return;
  }
  queue::redeliver_all(
      *redis_, scripts_, queue::Keys{prefix}, route, log::wall_ms(), kRedeliverBatch,
      [this, route, prefix, rounds_left, moved_so_far, done = std::move(done)](const queue::Redelivered& r) mutable {
        int64_t moved = moved_so_far + (r.ok ? r.moved : 0);
        if (r.ok && r.moved > 0 && on_redelivered_) on_redelivered_(route, r.moved);
        if (r.ok && r.moved > 0 && r.remaining > 0 && rounds_left > 1) {
          redeliver_batches(std::move(route), std::move(prefix), rounds_left - 1, moved, std::move(done));
          return;
        }
        log_redelivered(route, "all", moved);
        if (!r.ok) {
          done(503, error_body("redis_unavailable", "Redis did not take the write; moved " + std::to_string(moved) +
                                                        " before that"));
          return;
        }
        done(200, "{\"moved\":" + std::to_string(moved) + ",\"remaining\":" + std::to_string(r.remaining) + "}");
      });
}

}  // namespace fg::net
