#include "cache/response_cache.h"

#include <iterator>
#include <limits>
#include <utility>

namespace fg::cache {

namespace {

// RFC 9111 §1.2.2: a delta-seconds too large to represent is sent on as 2^31.
constexpr int64_t kMaxDeltaSeconds = int64_t{1} << 31;

bool is_space(char c) { return c == ' ' || c == '\t'; }

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// A directive value as delta-seconds, or -1 when it is not one. Quotes are tolerated
// (max-age="10") although the grammar forbids them, as most caches do.
int64_t parse_delta_seconds(std::string_view v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  if (v.empty()) return -1;
  int64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return -1;
    // Clamping inside the loop keeps a 40-digit value from overflowing.
    if (n < kMaxDeltaSeconds) n = n * 10 + (c - '0');
  }
  return n < kMaxDeltaSeconds ? n : kMaxDeltaSeconds;
}

uint64_t saturating_add(uint64_t a, uint64_t b) {
  return a > std::numeric_limits<uint64_t>::max() - b ? std::numeric_limits<uint64_t>::max() : a + b;
}

}  // namespace

Directives parse_cache_control(std::string_view value) {
  Directives d;
  int64_t max_age = -1;
  int64_t s_maxage = -1;
  size_t i = 0;
  while (i < value.size()) {
    // One directive runs to the next comma outside a quoted string. An unterminated quote
    // swallows the rest of the value, which then only affects that directive.
    size_t start = i;
    bool quoted = false;
    for (; i < value.size(); ++i) {
      char c = value[i];
      if (quoted) {
        if (c == '\\' && i + 1 < value.size()) {
          ++i;
        } else if (c == '"') {
          quoted = false;
        }
      } else if (c == '"') {
        quoted = true;
      } else if (c == ',') {
        break;
      }
    }
    std::string_view item = trim(value.substr(start, i - start));
    if (i < value.size()) ++i;  // the comma
    if (item.empty()) continue;

    std::string_view name = item;
    std::string_view arg;
    bool has_arg = false;
    if (size_t eq = item.find('='); eq != std::string_view::npos) {
      name = trim(item.substr(0, eq));
      arg = trim(item.substr(eq + 1));
      has_arg = true;
    }

    if (iequals(name, "no-store")) {
      d.no_store = true;
    } else if (iequals(name, "private")) {
      d.private_ = true;
    } else if (iequals(name, "no-cache")) {
      d.no_cache = true;
    } else if (iequals(name, "max-age")) {
      if (has_arg && max_age < 0) max_age = parse_delta_seconds(arg);
    } else if (iequals(name, "s-maxage")) {
      if (has_arg && s_maxage < 0) s_maxage = parse_delta_seconds(arg);
    }
  }
  d.max_age = s_maxage >= 0 ? s_maxage : max_age;
  return d;
}

bool storable(int status, const Directives& d, bool has_set_cookie, bool has_authorization_request) {
  switch (status) {
    case 200:
    case 203:
    case 204:
    case 301:
    case 404:
    case 410:
      break;
    default:
      return false;
  }
  if (d.no_store || d.private_ || d.no_cache) return false;
  if (has_set_cookie || has_authorization_request) return false;
  return true;
}

uint64_t freshness_ms(const Directives& d, uint64_t route_ttl_ms) {
  // max_age is clamped to 2^31 s by the parser, so the product fits easily.
  if (d.max_age >= 0) return static_cast<uint64_t>(d.max_age) * 1000;
  return route_ttl_ms;
}

void set_freshness(CachedResponse& r, const Directives& d, uint64_t now_ms, uint64_t route_ttl_ms,
                   uint64_t stale_if_error_ms) {
  r.stored_ms = now_ms;
  r.fresh_until_ms = saturating_add(now_ms, freshness_ms(d, route_ttl_ms));
  r.stale_until_ms = saturating_add(r.fresh_until_ms, stale_if_error_ms);
}

std::string cache_key(std::string_view method, std::string_view target) {
  std::string key;
  cache_key(method, target, &key);
  return key;
}

void cache_key(std::string_view method, std::string_view target, std::string* out) {
  out->clear();
  out->reserve(method.size() + 1 + target.size());
  out->append(method);
  out->push_back('\n');
  out->append(target);
}

// ---- ResponseCache ----

ResponseCache::ResponseCache(uint64_t max_bytes, uint64_t max_entry_bytes)
    : max_bytes_(max_bytes), max_entry_bytes_(max_entry_bytes) {}

size_t ResponseCache::entry_bytes(std::string_view key, const CachedResponse& r) {
  return key.size() + r.reason.size() + r.header_lines.size() + r.body.size() + kEntryOverhead;
}

const CachedResponse* ResponseCache::get(const std::string& key) {
  auto found = index_.find(std::string_view(key));
  if (found == index_.end()) return nullptr;
  // splice relinks the node in place: iterators (and the index's string_view) stay valid.
  lru_.splice(lru_.begin(), lru_, found->second);
  return found->second->response.get();
}

std::shared_ptr<const CachedResponse> ResponseCache::share(const std::string& key, uint64_t now_ms) {
  auto found = index_.find(std::string_view(key));
  if (found == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, found->second);
  found->second->used_ms = now_ms;
  return found->second->response;
}

bool ResponseCache::put(const std::string& key, CachedResponse r, uint64_t now_ms) {
  erase(key);
  size_t size = entry_bytes(key, r);
  if (size > max_entry_bytes_ || size > max_bytes_) return false;
  lru_.push_front(Node{key, std::make_shared<const CachedResponse>(std::move(r)), size, now_ms});
  index_.emplace(std::string_view(lru_.front().key), lru_.begin());
  bytes_ += size;
  // The new entry is at the front and alone fits under max_bytes, so it is never evicted here.
  evict_to(max_bytes_);
  return true;
}

bool ResponseCache::erase(const std::string& key) {
  auto found = index_.find(std::string_view(key));
  if (found == index_.end()) return false;
  remove(found->second);
  return true;
}

void ResponseCache::clear() {
  index_.clear();
  lru_.clear();
  bytes_ = 0;
}

void ResponseCache::set_limits(uint64_t max_bytes, uint64_t max_entry_bytes) {
  max_bytes_ = max_bytes;
  max_entry_bytes_ = max_entry_bytes;
  for (auto it = lru_.begin(); it != lru_.end();) {
    auto next = std::next(it);
    if (it->bytes > max_entry_bytes_) remove(it);
    it = next;
  }
  evict_to(max_bytes_);
}

uint64_t ResponseCache::lru_stamp() const {
  return lru_.empty() ? std::numeric_limits<uint64_t>::max() : lru_.back().used_ms;
}

bool ResponseCache::evict_lru() {
  if (lru_.empty()) return false;
  remove(std::prev(lru_.end()));
  ++evictions_;
  return true;
}

void ResponseCache::remove(List::iterator it) {
  // The index entry views it->key: erase it before the node that owns the string.
  index_.erase(std::string_view(it->key));
  bytes_ -= it->bytes;
  lru_.erase(it);
}

void ResponseCache::evict_to(uint64_t limit) {
  while (bytes_ > limit && evict_lru()) {
  }
}

}  // namespace fg::cache
