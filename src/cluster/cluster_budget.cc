// What happens on failure:
//   lease call times out, Redis down,     fallback: the lease and the debt are dropped and
//   error reply (READONLY, OOM, script)   requests are judged by a local budget of
//                                         rate / live instances, burst / live instances;
//                                         a lease is tried again every probe_ms
//   a lease succeeds again                back to the shared budget at once
//   the lease runs dry before the refill  up to max_debt requests on credit, then refused
//                                         until the lease arrives (never blocks)
//   lease not used within lease_ttl_ms    its tokens die (counted in tokens_expired)
//
// Clock: the lease script refills the bucket by Redis TIME. Every instance then draws
// on one clock, so a host whose clock is ahead cannot refill the shared bucket early,
// and no instance's clock has to be synchronised with the others. Redis 7 replicates
// scripts by their effects, so TIME inside the script is allowed and a replica stores
// the same state. After a failover to a host with another clock the bucket can at most
// refill early (up to burst) or late by the skew; it never goes above burst.
//
// Overshoot: tokens only leave the shared bucket through leases (which the GCRA bounds
// by rate * T + burst + 1 over any interval T) and debt (charged unconditionally with
// the next lease; credit is given again only after a lease granted a token, i.e. after
// the charge fit in the bucket). Requests admitted in an interval T are those leased in it, plus the
// tokens each instance held when it began (H = min(max_lease, burst + 1) each: a lease
// never exceeds what the bucket holds), plus the debt not yet charged (at most max_debt
// each), plus the relaxed-atomic error below (one per instance), so with N instances:
//   admitted(T) <= rate * T + burst + 1 + N * (H + max_debt + 1).
// In fallback each instance admits rate/n * T + burst/n + 1 where n is the last live
// count it saw: the sum is exact while n is right, and off by the instances that
// appeared or vanished since the last heartbeat.
#include "cluster/cluster_budget.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "core/clock.h"

namespace fg::cluster {
namespace {

// KEYS[1] the route's bucket; ARGV rate, burst, want, debt. Returns {granted, left in
// the bucket after the grant, ms until the missing part of `want` would be there}.
// The hash holds only the theoretical arrival time in microseconds of Redis TIME; it
// expires once it is in the past (an absent bucket is a full one).
redis::Script lease_script() {
  return redis::Script{R"(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = 1000000 / tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2]) * interval
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0')
if tat < now then tat = now end
tat = tat + tonumber(ARGV[4]) * interval
local avail = math.floor((now + tolerance + interval - tat) / interval)
if avail < 0 then avail = 0 end
local grant = math.min(want, avail)
tat = tat + grant * interval
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat))
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil((tat - now) / 1000) + 1000))
local wait = 0
if grant < want then
  -- Until the missing part has refilled, but before the bucket is full again: refill
  -- beyond burst + 1 is lost (3/4 leaves room for the round trip and timer lag), so a
  -- small burst means frequent, small leases.
  wait = math.min(tat + (want - grant) * interval - now - tolerance - interval, 0.75 * (tat - now))
  wait = math.ceil(wait / 1000)
  if wait < 0 then wait = 0 end
end
return {grant, avail - grant, wait}
)", ""};
}

redis::Script& shared_lease_script() {
  thread_local redis::Script script = lease_script();
  return script;
}

uint32_t default_max_lease(double rate, uint64_t horizon_ms) {
  return static_cast<uint32_t>(std::max(1.0, std::ceil(rate * static_cast<double>(horizon_ms) / 1000.0)));
}

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

}  // namespace

ClusterBudget::ClusterBudget(uv_loop_t* loop, redis::Client* redis, const Membership* membership,
                             ClusterBudgetOptions options)
    : redis_(redis),
      membership_(membership),
      options_(std::move(options)),
      key_(options_.prefix + "budget:{" + options_.route + "}"),
      local_(options_.rate, options_.burst, uv_hrtime()) {
  max_lease_ = options_.max_lease != 0 ? options_.max_lease : default_max_lease(options_.rate, options_.horizon_ms);
  publish_rate();
  timer_ = std::make_unique<loop::Timer>(loop, [this] { tick(); });
  retry_ = std::make_unique<loop::Timer>(loop, [this] {
    next_lease_ms_ = 0;
    maybe_lease();
  });
  wakeup_ = std::make_unique<loop::Wakeup>(loop, [this] { maybe_lease(); });
}

ClusterBudget::~ClusterBudget() { stop(); }

void ClusterBudget::start() {
  running_ = true;
  last_tick_ms_ = clock::mono_ms();
  last_attempts_ = attempts();
  timer_->start(options_.tick_ms, options_.tick_ms);
}

void ClusterBudget::stop() {
  if (!running_) return;
  running_ = false;
  anchor_.renew();  // replies to what was sent before stop() are dropped
  timer_->stop();
  retry_->stop();
  tokens_expired_.fetch_add(static_cast<uint64_t>(std::max<int64_t>(0, tokens_.exchange(0))),
                            std::memory_order_relaxed);
}

// The hot path. Relaxed atomics are enough: tokens_ is only ever moved by atomic
// read-modify-writes, so no token is taken twice and none is created; what relaxed order
// can get wrong is which lease a take is counted against when it races with the owner
// expiring or adding a lease (the take can land on a lease up to one tick_ms after its
// expiry: at most one take per worker thread per expiry), and a worker can see
// fallback_ a moment late (a take from the local budget just after the lease came back,
// or the reverse: one request per worker per switch).
bool ClusterBudget::try_take(uint64_t now_ns) {
  if (fallback_.load(std::memory_order_relaxed)) return take_local(now_ns);
  int64_t have = tokens_.load(std::memory_order_relaxed);
  while (have > 0) {
    if (tokens_.compare_exchange_weak(have, have - 1, std::memory_order_relaxed)) {
      if (have - 1 < low_water_.load(std::memory_order_relaxed)) want_refill();
      return true;
    }
  }
  want_refill();
  int64_t owed = debt_.load(std::memory_order_relaxed);
  bool credit = credit_.load(std::memory_order_relaxed);
  while (credit && owed < static_cast<int64_t>(options_.max_debt)) {
    if (debt_.compare_exchange_weak(owed, owed + 1, std::memory_order_relaxed)) {
      admitted_on_debt_.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
  }
  refused_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

bool ClusterBudget::take_local(uint64_t now_ns) {
  if (local_.try_acquire(now_ns).admitted) return true;
  refused_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

// Requests seen so far, without a counter on the admit path: the tokens taken from
// leases (leased, minus expired, minus still held) plus those admitted on credit plus
// the refused. Admissions from the fallback budget are not in it (no lease is sized
// then). Owner loop: tokens_leased_ and tokens_expired_ only change here, and tokens_
// only falls between the loads, so the sum never goes backwards.
uint64_t ClusterBudget::attempts() const {
  uint64_t leased = tokens_leased_.load(std::memory_order_relaxed);
  uint64_t expired = tokens_expired_.load(std::memory_order_relaxed);
  uint64_t held = static_cast<uint64_t>(std::max<int64_t>(0, tokens_.load(std::memory_order_relaxed)));
  return leased - expired - held + admitted_on_debt_.load(std::memory_order_relaxed) +
         refused_.load(std::memory_order_relaxed);
}

void ClusterBudget::want_refill() {
  // Load first: under load every take below the mark would otherwise write the line.
  if (refill_wanted_.load(std::memory_order_relaxed)) return;
  if (!refill_wanted_.exchange(true, std::memory_order_relaxed)) wakeup_->send();
}

void ClusterBudget::set_rate(double rate, double burst) {
  options_.rate = rate;
  options_.burst = burst;
  if (options_.max_lease == 0) max_lease_ = default_max_lease(rate, options_.horizon_ms);
  publish_rate();
  uint32_t n = fallback_share_of_ ? fallback_share_of_ : 1;
  local_.set_rate(rate / n, burst / n, uv_hrtime());
}

void ClusterBudget::publish_rate() {
  rate_.store(options_.rate, std::memory_order_relaxed);
  burst_.store(options_.burst, std::memory_order_relaxed);
  max_lease_seen_.store(max_lease_, std::memory_order_relaxed);
}

uint64_t ClusterBudget::available() const {
  if (fallback_.load(std::memory_order_relaxed)) return local_.peek(uv_hrtime()).remaining;
  return static_cast<uint64_t>(std::max<int64_t>(0, tokens_.load(std::memory_order_relaxed)));
}

uint64_t ClusterBudget::retry_after_ns() const {
  double n = membership_ ? membership_->live_instances() : 1;
  double rate = std::max(rate_.load(std::memory_order_relaxed), 1e-9);
  return static_cast<uint64_t>(std::max(1e9, std::ceil(n / rate) * 1e9));
}

uint64_t ClusterBudget::per_instance_slack() const {
  double held = std::min<double>(max_lease_seen_.load(std::memory_order_relaxed),
                                 std::floor(burst_.load(std::memory_order_relaxed)) + 1);
  return static_cast<uint64_t>(held) + options_.max_debt + 1;
}

int64_t ClusterBudget::target() const {
  double t = std::floor(demand_per_s_ * static_cast<double>(options_.horizon_ms) / 1000.0);
  return static_cast<int64_t>(std::clamp(t, 1.0, static_cast<double>(max_lease_)));
}

void ClusterBudget::tick() {
  uint64_t now = clock::mono_ms();
  uint64_t attempts = this->attempts();
  bool demanded = attempts != last_attempts_;
  // Demand over the last kDemandTicks ticks (~100 ms), or since start() when that is
  // shorter: a cold start is followed from the first tick (not one-token leases while
  // the shared bucket overflows), a single request of an idle instance counts as 10/s
  // (a lease of one token), and a drop is forgotten within the window.
  window_sum_ -= window_[window_pos_];
  window_[window_pos_] = attempts - last_attempts_;
  window_sum_ += window_[window_pos_];
  window_pos_ = (window_pos_ + 1) % kDemandTicks;
  window_span_ms_ = std::min<uint64_t>(window_span_ms_ + (now - last_tick_ms_), kDemandTicks * options_.tick_ms);
  demand_per_s_ = static_cast<double>(window_sum_) * 1000.0 / static_cast<double>(std::max<uint64_t>(1, window_span_ms_));
  last_tick_ms_ = now;
  last_attempts_ = attempts;
  low_water_.store((target() + 1) / 2, std::memory_order_relaxed);

  if (!fallback_.load(std::memory_order_relaxed) && lease_expires_ms_ != 0 && now >= lease_expires_ms_) {
    lease_expires_ms_ = 0;
    tokens_expired_.fetch_add(static_cast<uint64_t>(std::max<int64_t>(0, tokens_.exchange(0))),
                              std::memory_order_relaxed);
  }
  if (fallback_.load(std::memory_order_relaxed)) {
    // Follow the live count while in fallback (an instance died or came back).
    uint32_t n = membership_ ? membership_->live_instances() : 1;
    if (n != fallback_share_of_) {
      fallback_share_of_ = n;
      local_.set_rate(options_.rate / n, options_.burst / n, uv_hrtime());
    }
    maybe_lease();  // the probe
    return;
  }
  if (debt_.load(std::memory_order_relaxed) > 0 ||
      (demanded && tokens_.load(std::memory_order_relaxed) < low_water_.load(std::memory_order_relaxed))) {
    maybe_lease();
  }
}

void ClusterBudget::maybe_lease() {
  if (!running_ || lease_in_flight_) return;
  uint64_t now = clock::mono_ms();
  if (now < next_lease_ms_) return;  // the tick comes back for it
  bool fallback = fallback_.load(std::memory_order_relaxed);
  int64_t debt = fallback ? 0 : debt_.load(std::memory_order_relaxed);
  int64_t want = std::max<int64_t>(0, target() - tokens_.load(std::memory_order_relaxed));
  if (fallback) want = std::max<int64_t>(1, want);
  refill_wanted_.store(false, std::memory_order_relaxed);
  if (want == 0 && debt == 0) return;
  lease_in_flight_ = true;
  loop::Guard<ClusterBudget> guard = anchor_.guard();
  redis_->eval(&shared_lease_script(), {key_},
               {number(options_.rate), number(options_.burst), std::to_string(want), std::to_string(debt)},
               [this, guard, debt](redis::Failure failure, redis::Reply& reply) {
                 if (!guard) return;
                 on_lease(failure, reply, debt);
               });
}

void ClusterBudget::on_lease(redis::Failure failure, const redis::Reply& reply, int64_t debt_sent) {
  lease_in_flight_ = false;
  uint64_t now = clock::mono_ms();
  bool ok = failure == redis::Failure::kNone && reply.type == redis::Reply::Type::kArray &&
            reply.elements.size() == 3;
  if (!ok) {
    lease_failures_.fetch_add(1, std::memory_order_relaxed);
    if (!fallback_.load(std::memory_order_relaxed)) enter_fallback();
    next_lease_ms_ = now + options_.probe_ms;
    return;
  }
  int64_t granted = std::max<int64_t>(0, reply.elements[0].integer);
  int64_t wait_ms = std::max<int64_t>(0, reply.elements[2].integer);
  leases_taken_.fetch_add(1, std::memory_order_relaxed);
  tokens_leased_.fetch_add(static_cast<uint64_t>(granted), std::memory_order_relaxed);
  if (fallback_.load(std::memory_order_relaxed)) {
    // Redis answers again: back to the shared budget. The probe's debt was zero.
    fallback_share_of_ = 0;
    fallback_.store(false, std::memory_order_relaxed);
  } else {
    debt_.fetch_sub(debt_sent, std::memory_order_relaxed);
  }
  tokens_.fetch_add(granted, std::memory_order_relaxed);
  // Credit only while the bucket covers what was charged: a grant of at least one token
  // means the debt just charged fit in the bucket. A lease that granted nothing may have
  // charged debt beyond it, and credit given again then would be paid by nobody: a
  // steady max_debt per lease round trip on top of the rate, whatever the rate (a queue
  // dispatcher asking every few ms drew 3x a rate of 10/s that way).
  credit_.store(granted > 0, std::memory_order_relaxed);
  lease_expires_ms_ = now + options_.lease_ttl_ms;
  // A short grant means the bucket is (nearly) empty: asking again at once would only
  // cost Redis calls, so ask again when about what is missing has refilled, and no later
  // than the bucket is full (the script caps the wait there: later, refill is lost). A
  // timer of its own keeps that on time; the tick would add up to tick_ms.
  if (wait_ms > 0) {
    uint64_t wait = std::clamp<uint64_t>(static_cast<uint64_t>(wait_ms), options_.min_retry_ms, options_.horizon_ms);
    next_lease_ms_ = now + wait;
    retry_->start(wait, 0);
    return;
  }
  next_lease_ms_ = 0;
  if (tokens_.load(std::memory_order_relaxed) < low_water_.load(std::memory_order_relaxed) ||
      debt_.load(std::memory_order_relaxed) > 0) {
    maybe_lease();
  }
}

void ClusterBudget::enter_fallback() {
  uint32_t n = membership_ ? membership_->live_instances() : 1;
  fallback_share_of_ = n;
  local_.set_rate(options_.rate / n, options_.burst / n, uv_hrtime());
  fallbacks_.fetch_add(1, std::memory_order_relaxed);
  fallback_.store(true, std::memory_order_relaxed);
  // The lease may be unusable by the time Redis is back, and the debt cannot be charged
  // while it is away: both are dropped (the local share judges from now on).
  tokens_expired_.fetch_add(static_cast<uint64_t>(std::max<int64_t>(0, tokens_.exchange(0))),
                            std::memory_order_relaxed);
  debt_.store(0, std::memory_order_relaxed);
  lease_expires_ms_ = 0;
}

ClusterBudgetStats ClusterBudget::stats() const {
  ClusterBudgetStats s;
  s.tokens_leased = tokens_leased_.load(std::memory_order_relaxed);
  s.leases_taken = leases_taken_.load(std::memory_order_relaxed);
  s.lease_failures = lease_failures_.load(std::memory_order_relaxed);
  s.lease_tokens_held = std::max<int64_t>(0, tokens_.load(std::memory_order_relaxed));
  s.tokens_expired = tokens_expired_.load(std::memory_order_relaxed);
  s.fallbacks = fallbacks_.load(std::memory_order_relaxed);
  s.admitted_on_debt = admitted_on_debt_.load(std::memory_order_relaxed);
  s.in_fallback = fallback_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace fg::cluster
