// A worker's side of the shared caches: lookups, coalescing, storing, wake-ups.
#include "cache/stage.h"

#include <strings.h>

#include <charconv>
#include <vector>

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

Stage::Stage(std::function<void()> signal) : inbox_(std::make_shared<Inbox>(std::move(signal))) {}

Stage::~Stage() { close(); }

bool Stage::find(SharedCache& cache, const std::string& key, uint64_t now_ms, bool stale_ok, Hit* hit) {
  SharedCache::Entry e = cache.get(key, now_ms);
  if (!e) return false;
  bool fresh = is_fresh(*e, now_ms);
  if (!fresh && !(stale_ok && is_usable_stale(*e, now_ms))) return false;
  char age[24];
  auto [end, ec] = std::to_chars(age, age + sizeof age, age_seconds(*e, now_ms));
  (void)ec;  // 24 characters hold any uint64_t
  std::string& h = hit->header_lines;
  h.assign("Age: ");
  h.append(age, static_cast<size_t>(end - age));
  h.append(fresh ? "\r\nX-Cache: HIT\r\n" : "\r\nX-Cache: STALE\r\n");
  hit->entry = std::move(e);
  hit->fresh = fresh;
  return true;
}

Stage::Join Stage::join(SharedCache& cache, const std::string& key, uint64_t* waiter) {
  *waiter = next_waiter_++;
  switch (cache.join(key, Waiter{inbox_, *waiter})) {
    case SharedCache::Join::kLeader:
      return Join::kLead;
    case SharedCache::Join::kWaiter:
      return Join::kWait;
    case SharedCache::Join::kOverflow:
      break;
  }
  return Join::kFetch;
}

void Stage::wait(uint64_t waiter, std::function<void()> wake) { waiters_[waiter] = std::move(wake); }

bool Stage::store(SharedCache& cache, const RouteSettings& route, const std::string& key, int status,
                  std::string_view reason, std::string_view header_lines, std::string_view body, const Recorded& rec,
                  bool authorization, uint64_t now_ms) {
  Directives d = parse_cache_control(rec.cache_control);
  if (!storable(status, d, rec.set_cookie, authorization)) return false;
  CachedResponse r;
  r.status = status;
  r.reason.assign(reason);
  r.header_lines.assign(header_lines);
  r.body.assign(body);
  set_freshness(r, d, now_ms, route.ttl_ms, route.stale_if_error_ms);
  return cache.put(key, std::move(r), now_ms);
}

void Stage::finish(SharedCache& cache, const std::string& key) {
  // Woken after the table is updated: a waiter may join (and lead) again at once.
  std::vector<uint64_t> mine;
  for (Waiter& w : cache.finish(key)) {
    if (w.inbox == inbox_) mine.push_back(w.id);
    else w.inbox->post(w.id);
  }
  for (uint64_t id : mine) wake(id);
}

void Stage::deliver() {
  for (uint64_t id : inbox_->take()) wake(id);
}

void Stage::close() { inbox_->close(); }

void Stage::wake(uint64_t waiter) {
  auto it = waiters_.find(waiter);
  if (it == waiters_.end()) return;
  std::function<void()> f = std::move(it->second);
  waiters_.erase(it);
  f();
}

}  // namespace fg::cache
