// Breaker: one atomic word holds the state and its deadline so that a transition is
// one compare-and-swap; the window is a ring of per-second slots (second_slot.h).
#include "breaker/breaker.h"

#include <algorithm>
#include <cmath>

namespace fg::breaker {
namespace {

// splitmix64's finaliser: spreads a seed over all 64 bits.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The window in whole 1 s slots: at least one, at most the ring.
uint64_t window_seconds(uint64_t window_ms) {
  return std::clamp<uint64_t>((window_ms + 999) / 1000, 1, Breaker::kRingSeconds);
}

}  // namespace

Breaker::Breaker(const BreakerConfig& config)
    : word_(pack(State::kClosed, 0)), seed_(mix(reinterpret_cast<uintptr_t>(this))) {
  set_config(config);
}

void Breaker::set_config(const BreakerConfig& config) {
  enabled_.store(config.enabled, std::memory_order_relaxed);
  window_s_.store(window_seconds(config.window_ms), std::memory_order_relaxed);
  min_requests_.store(config.min_requests, std::memory_order_relaxed);
  error_rate_.store(config.error_rate, std::memory_order_relaxed);
  timeout_rate_.store(config.timeout_rate, std::memory_order_relaxed);
  open_for_ms_.store(config.open_for_ms, std::memory_order_relaxed);
  half_open_probes_.store(config.half_open_probes, std::memory_order_relaxed);
}

uint64_t Breaker::probes() const {
  // Zero probes would leave a half-open breaker with nothing to decide on.
  return std::max<uint64_t>(1, half_open_probes_.load(std::memory_order_relaxed));
}

uint64_t Breaker::open_until(uint64_t now_ms, uint64_t rnd) const {
  // The top 53 bits of rnd as a double in [0, 1); jitter = floor(0.2 * open_for * u) is
  // then strictly below 20% of open_for. Jitter spreads the half-open probes of
  // breakers that opened together (one shop outage trips every server at once).
  const uint64_t open_for = open_for_ms_.load(std::memory_order_relaxed);
  const double u = static_cast<double>(rnd >> 11) * 0x1.0p-53;
  const auto jitter = static_cast<uint64_t>(std::floor(0.2 * static_cast<double>(open_for) * u));
  return now_ms + open_for + jitter;
}

bool Breaker::should_open(const Snapshot& c) const {
  if (c.requests == 0 || c.requests < min_requests_.load(std::memory_order_relaxed)) return false;
  // Divisions, not products: when errors/requests equals error_rate exactly, both
  // round to the same double, so the threshold itself opens the breaker.
  const auto requests = static_cast<double>(c.requests);
  return static_cast<double>(c.errors) / requests >= error_rate_.load(std::memory_order_relaxed) ||
         static_cast<double>(c.timeouts) / requests >= timeout_rate_.load(std::memory_order_relaxed);
}

bool Breaker::transition(uint64_t expected, uint64_t desired) {
  if (!word_.compare_exchange_strong(expected, desired, std::memory_order_acq_rel, std::memory_order_acquire)) {
    return false;
  }
  transitions_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Breaker::clear_window() {
  for (auto& slot : slots_) slot.clear();
}

bool Breaker::allow(uint64_t /*now_ms*/) {
  if (!enabled_.load(std::memory_order_relaxed)) return true;
  switch (state_of(word_.load(std::memory_order_acquire))) {
    case State::kClosed:
      return true;
    case State::kOpen:
      return false;
    case State::kHalfOpen:
      // The counter only grows during a half-open period, so at most probes() calls
      // see a value below it, however many threads race here.
      return probes_taken_.fetch_add(1, std::memory_order_relaxed) < probes();
  }
  return false;
}

void Breaker::record(Outcome outcome, uint64_t now_ms) {
  const uint64_t sec = now_ms / 1000;
  SecondSlot<kCounters>& slot = slots_[sec % kRingSeconds];
  if (slot.enter(sec)) {
    slot.add(kRequests);
    if (outcome == Outcome::kError) slot.add(kErrors);
    if (outcome == Outcome::kTimeout) slot.add(kTimeouts);
  }

  const uint64_t word = word_.load(std::memory_order_acquire);
  if (state_of(word) != State::kHalfOpen || !enabled_.load(std::memory_order_relaxed)) return;
  if (outcome != Outcome::kSuccess) {
    // A failed probe: open again at once. Several failures racing here produce one
    // transition (the CAS from this half-open word succeeds once).
    const uint64_t rnd = mix(seed_.load(std::memory_order_relaxed) ^ now_ms);
    transition(word, pack(State::kOpen, open_until(now_ms, rnd)));
    return;
  }
  if (probe_successes_.fetch_add(1, std::memory_order_relaxed) + 1 < probes()) return;
  // Enough successes. Clear the window before closing: evaluate() reads it as soon as
  // it sees "closed", and must not find the failures that opened the breaker. If a
  // failure reopens the breaker first, the CAS fails and the clearing cost nothing that
  // an open breaker needs.
  clear_window();
  transition(word, pack(State::kClosed, 0));
}

bool Breaker::evaluate(uint64_t now_ms, uint64_t rnd) {
  std::lock_guard<std::mutex> lock(evaluate_mu_);
  seed_.store(rnd, std::memory_order_relaxed);
  const uint64_t word = word_.load(std::memory_order_acquire);
  const State state = state_of(word);

  if (!enabled_.load(std::memory_order_relaxed)) {
    if (state == State::kClosed) return false;
    clear_window();
    return transition(word, pack(State::kClosed, 0));
  }

  switch (state) {
    case State::kClosed:
      if (!should_open(counts(now_ms))) return false;
      return transition(word, pack(State::kOpen, open_until(now_ms, rnd)));
    case State::kOpen:
      if (now_ms < time_of(word)) return false;
      // Reset the period's counters before publishing "half-open" (the CAS releases
      // them), so that allow() and record() on other threads start from zero.
      probes_taken_.store(0, std::memory_order_relaxed);
      probe_successes_.store(0, std::memory_order_relaxed);
      return transition(word, pack(State::kHalfOpen, now_ms));
    case State::kHalfOpen:
      if (now_ms - std::min(now_ms, time_of(word)) < kProbeStallMs) return false;
      return transition(word, pack(State::kOpen, open_until(now_ms, rnd)));
  }
  return false;
}

Snapshot Breaker::counts(uint64_t now_ms) const {
  const uint64_t sec = now_ms / 1000;
  const uint64_t window = std::min(window_s_.load(std::memory_order_relaxed), sec + 1);
  Snapshot c;
  for (uint64_t s = sec + 1 - window; s <= sec; s++) {
    const SecondSlot<kCounters>& slot = slots_[s % kRingSeconds];
    if (!slot.holds(s)) continue;
    c.requests += slot.get(kRequests);
    c.errors += slot.get(kErrors);
    c.timeouts += slot.get(kTimeouts);
  }
  return c;
}

uint64_t Breaker::open_until_ms() const {
  const uint64_t word = word_.load(std::memory_order_acquire);
  return state_of(word) == State::kOpen ? time_of(word) : 0;
}

}  // namespace fg::breaker
