// Per-route caches of a worker: lookups, coalescing, storing.
#include "cache/stage.h"

#include <strings.h>

namespace fg::cache {

void Recorded::note(std::string_view name, std::string_view value) {
  auto is = [&](std::string_view want) {
    return name.size() == want.size() && strncasecmp(name.data(), want.data(), want.size()) == 0;
  };
  if (is("Cache-Control")) {
    if (!cache_control.empty()) cache_control += ",";
    cache_control.append(value);
  } else if (is("Set-Cookie")) {
    set_cookie = true;
  }
}

Stage::RouteCache& Stage::route_cache(const RouteSettings& route) {
  auto it = routes_.find(route.name);
  if (it == routes_.end()) it = routes_.emplace(std::string(route.name), nullptr).first;
  auto& slot = it->second;
  if (!slot) {
    slot = std::make_unique<RouteCache>();
    slot->cache = std::make_unique<ResponseCache>(route.max_bytes, route.max_entry_bytes);
  } else if (slot->cache->max_bytes() != route.max_bytes || slot->cache->max_entry_bytes() != route.max_entry_bytes) {
    slot->cache->set_limits(route.max_bytes, route.max_entry_bytes);
  }
  return *slot;
}

ResponseCache& Stage::cache(const RouteSettings& route) { return *route_cache(route).cache; }

bool Stage::find(const RouteSettings& route, const std::string& key, uint64_t now_ms, bool stale_ok, Hit* hit) {
  const CachedResponse* e = cache(route).get(key);
  if (e == nullptr) return false;
  bool fresh = is_fresh(*e, now_ms);
  if (!fresh && !(stale_ok && is_usable_stale(*e, now_ms))) return false;
  hit->entry = e;
  hit->fresh = fresh;
  hit->header_lines = "Age: " + std::to_string(age_seconds(*e, now_ms)) + "\r\nX-Cache: " + (fresh ? "HIT" : "STALE") +
                      "\r\n";
  return true;
}

Stage::Join Stage::join(const RouteSettings& route, const std::string& key, uint64_t* waiter) {
  RouteCache& c = route_cache(route);
  *waiter = c.next_waiter++;
  switch (c.pending.join(key, *waiter)) {
    case PendingMap::Join::kLeader:
      return Join::kLead;
    case PendingMap::Join::kWaiter:
      return Join::kWait;
    case PendingMap::Join::kOverflow:
      break;
  }
  return Join::kFetch;
}

void Stage::wait(const RouteSettings& route, uint64_t waiter, std::function<void()> wake) {
  route_cache(route).waiters[waiter] = std::move(wake);
}

bool Stage::store(const RouteSettings& route, const std::string& key, int status, std::string_view reason,
                  std::string_view header_lines, std::string_view body, const Recorded& rec, bool authorization,
                  uint64_t now_ms) {
  Directives d = parse_cache_control(rec.cache_control);
  if (!storable(status, d, rec.set_cookie, authorization)) return false;
  CachedResponse r;
  r.status = status;
  r.reason.assign(reason);
  r.header_lines.assign(header_lines);
  r.body.assign(body);
  set_freshness(r, d, now_ms, route.ttl_ms, route.stale_if_error_ms);
  return cache(route).put(key, std::move(r));
}

void Stage::finish(const RouteSettings& route, const std::string& key) {
  RouteCache& c = route_cache(route);
  // Woken after the lists are updated: a waiter may join (and lead) again at once.
  std::vector<std::function<void()>> wake;
  for (uint64_t id : c.pending.finish(key)) {
    auto it = c.waiters.find(id);
    if (it == c.waiters.end()) continue;
    wake.push_back(std::move(it->second));
    c.waiters.erase(it);
  }
  for (auto& w : wake) w();
}

}  // namespace fg::cache
