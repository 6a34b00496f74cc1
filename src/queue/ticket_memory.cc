// The worker's ticket memory: entries, LRU order, reads in flight, route progress.
#include "queue/ticket_memory.h"

#include <algorithm>
#include <charconv>

namespace fg::queue {
namespace {

// Routes whose progress is kept: a handful in practice; beyond this (names from a
// misbehaving publisher) the map starts over.
constexpr size_t kMaxRoutes = 4096;

size_t entry_bytes(const std::string& ticket, const TicketView& v) {
  return 128 + ticket.size() + v.route.size() + v.response.size() + v.reason.size() + v.state.size();
}

}  // namespace

bool TicketMemory::final_state(TicketView::Kind k) {
  return k == TicketView::Kind::kDone || k == TicketView::Kind::kFailed || k == TicketView::Kind::kCancelled;
}

bool TicketMemory::find(std::string_view ticket, uint64_t now_ms, TicketView* out) {
  if (!live_) return false;
  auto it = entries_.find(std::string(ticket));
  if (it == entries_.end()) return false;
  if (now_ms >= it->second.expires_ms) {
    erase(it);
    return false;
  }
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  *out = it->second.view;
  if (out->kind == TicketView::Kind::kQueued) out->taken = std::max(out->taken, taken(out->route));
  return true;
}

void TicketMemory::begin_read(const std::string& ticket) { reading_[ticket].count++; }

bool TicketMemory::end_read(const std::string& ticket, const TicketView& v, int64_t ttl_ms, uint64_t now_ms) {
  auto r = reading_.find(ticket);
  if (r == reading_.end()) return false;  // no begin_read()
  bool changed = r->second.changed;
  if (--r->second.count == 0) reading_.erase(r);
  using K = TicketView::Kind;
  if (changed) return true;
  if (!live_ || v.kind == K::kUnknown || v.kind == K::kUnavailable) return false;
  size_t bytes = entry_bytes(ticket, v);
  if (bytes > kMaxEntryBytes) return false;
  uint64_t expires = now_ms + kMaxAgeMs;
  if (final_state(v.kind)) {
    // Final states never change; the hash's own expiry ends them (no TTL: kept until
    // the LRU bound pushes them out).
    if (ttl_ms == 0 || ttl_ms < -1) return false;
    expires = ttl_ms > 0 ? now_ms + static_cast<uint64_t>(ttl_ms) : UINT64_MAX;
  }
  auto it = entries_.find(ticket);
  if (it != entries_.end()) erase(it);
  while (!lru_.empty() && (entries_.size() >= kMaxEntries || bytes_ + bytes > kMaxBytes))
    erase(entries_.find(lru_.back()));
  lru_.push_front(ticket);
  entries_.emplace(ticket, Entry{v, expires, bytes, lru_.begin()});
  bytes_ += bytes;
  return false;
}

void TicketMemory::changed(std::string_view payload) {
  size_t sp = payload.find(' ');
  std::string ticket(payload.substr(0, sp));
  if (auto it = entries_.find(ticket); it != entries_.end()) erase(it);
  if (auto r = reading_.find(ticket); r != reading_.end()) r->second.changed = true;
  if (sp == std::string_view::npos) return;
  std::string_view rest = payload.substr(sp + 1);
  size_t sp2 = rest.rfind(' ');
  if (sp2 == std::string_view::npos || sp2 == 0) return;
  std::string_view route = rest.substr(0, sp2), num = rest.substr(sp2 + 1);
  int64_t n = 0;
  auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), n);
  if (ec != std::errc() || end != num.data() + num.size()) return;
  auto t = taken_.find(std::string(route));
  if (t == taken_.end()) {
    if (taken_.size() >= kMaxRoutes) taken_.clear();
    taken_.emplace(std::string(route), n);
  } else {
    t->second = std::max(t->second, n);
  }
}

void TicketMemory::forget(std::string_view ticket) {
  if (auto it = entries_.find(std::string(ticket)); it != entries_.end()) erase(it);
}

void TicketMemory::reset() {
  entries_.clear();
  lru_.clear();
  bytes_ = 0;
  for (auto& [id, r] : reading_) r.changed = true;
  taken_.clear();
}

void TicketMemory::set_live(bool live) {
  if (live_ != live) reset();
  live_ = live;
}

int64_t TicketMemory::taken(std::string_view route) const {
  auto t = taken_.find(std::string(route));
  return t == taken_.end() ? 0 : t->second;
}

void TicketMemory::erase(std::unordered_map<std::string, Entry>::iterator it) {
  bytes_ -= it->second.bytes;
  lru_.erase(it->second.lru);
  entries_.erase(it);
}

}  // namespace fg::queue
