// Admission decisions for one request (see gate.h for the order).
#include "admission/gate.h"

#include <charconv>

namespace fg::admission {

Verdict Gate::decide(const Request& r) const {
  Verdict v;
  const RouteConfig& rc = route_;
  if (!rc.core && r.under_pressure) {
    if (!rc.dry_run) {
      v.kind = Verdict::Kind::kDegrade;
      return v;
    }
    v.would_shed = true;
  }
  if (clients_) {
    Decision d = clients_->try_acquire(r.client_key, r.now_ns);
    if (!d.admitted) {
      if (!rc.dry_run) {
        v.kind = Verdict::Kind::kClientLimited;
        v.retry_after_ns = d.retry_after_ns;
        return v;
      }
      v.would_client_limit = true;
    }
  }
  // Queued routes: store_and_forward always parks; otherwise, while tickets are
  // waiting, new arrivals queue behind them (FIFO) without touching the budget, which
  // the dispatcher draws from.
  bool queue = rc.overflow == Overflow::kQueue && !rc.dry_run;
  bool park = rc.store_and_forward || (queue && r.queue_waiting);
  if ((budget_ || shared_) && !park) {
    Decision d = take(r.now_ns);
    v.rated = true;
    v.budget = d;
    if (!d.admitted && queue) {
      park = true;
    } else if (!d.admitted) {
      bool degrade = rc.overflow == Overflow::kDegrade;
      if (rc.dry_run) {
        (degrade ? v.would_degrade : v.would_reject) = true;
      } else {
        v.kind = degrade ? Verdict::Kind::kDegrade : Verdict::Kind::kRateLimited;
        v.retry_after_ns = d.retry_after_ns;
        return v;
      }
    }
  }
  v.kind = park ? Verdict::Kind::kPark : Verdict::Kind::kAdmit;
  return v;
}

Decision Gate::take(uint64_t now_ns) const {
  if (!shared_) return budget_->try_acquire(now_ns);
  // A cluster budget knows what this instance holds, not the whole bucket: the
  // remaining quota is what this instance can still admit at once, the reset one second
  // (leases are refilled well within it).
  Decision d;
  d.admitted = shared_->try_take(now_ns);
  d.remaining = shared_->available();
  d.reset_ns = 1000000000ULL;
  if (!d.admitted) d.retry_after_ns = shared_->retry_after_ns();
  return d;
}

void Gate::append_headers(const Verdict& v, std::string& out) const {
  if (!v.rated) return;
  // The policy (quota per 1 s window) and the current state (remaining quota, seconds
  // until it is whole again).
  const Decision& d = v.budget;
  uint64_t reset = (d.reset_ns + 999999999ULL) / 1000000000ULL;
  out.reserve(out.size() + policy_header_.size() + route_.name.size() + 48);
  out.append(policy_header_);
  out += "RateLimit: \"";
  out.append(route_.name);
  char num[24];
  out += "\";r=";
  out.append(num, static_cast<size_t>(std::to_chars(num, num + sizeof num, d.remaining).ptr - num));
  out += ";t=";
  out.append(num, static_cast<size_t>(std::to_chars(num, num + sizeof num, reset).ptr - num));
  out += "\r\n";
}

}  // namespace fg::admission
