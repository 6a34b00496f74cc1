// The circuit breaker of one upstream server (SPEC §7): closed → open → half-open →
// closed, shared by every worker of the instance. No libuv: callers pass the monotonic
// time in milliseconds and, to evaluate(), a random number for the jitter.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "breaker/second_slot.h"
#include "floodgate/config.h"

namespace fg::breaker {

// The numbers are the values of the floodgate_breaker_state metric.
enum class State { kClosed = 0, kHalfOpen = 1, kOpen = 2 };

enum class Outcome {
  kSuccess,
  kError,    // a 5xx answer or a connect error
  kTimeout,  // no (complete) answer within the upstream timeout
};

// Requests, errors and timeouts recorded in the current window.
struct Snapshot {
  uint64_t requests = 0;
  uint64_t errors = 0;
  uint64_t timeouts = 0;
};

// How the breaker moves:
//   closed    → open       evaluate(): requests in the window >= min_requests and
//                          errors/requests >= error_rate or timeouts/requests >= timeout_rate
//   open      → half-open  evaluate(): once now >= open_until, where
//                          open_until = opened_at + open_for * (1 + jitter), jitter in [0, 0.2)
//   half-open → closed     record(): half_open_probes successes; the window is cleared
//   half-open → open       record(): any failure (error or timeout), at once, with a new
//                          jittered open_until; evaluate(): no verdict within
//                          kProbeStallMs (a probe was abandoned without a record())
//
// Threads: allow(), record(), state(), counts() and transitions() are lock-free (relaxed
// or acquire/release atomics) and may be called from any thread. evaluate() takes a
// short mutex and is meant for one thread, every ~100 ms. The state and its deadline
// live in one atomic word, so every transition is a single compare-and-swap.
//
// Approximations, beyond those of SecondSlot (second_slot.h):
// - The window is the current whole second plus the window_ms/1000 - 1 seconds before
//   it, so a sample leaves it more than window_ms - 1000 and at most window_ms after
//   it was recorded (at the start of a second).
// - record() does not know whether a request was a probe: while half-open, an answer
//   to a request admitted before the breaker opened counts like a probe's.
// - A record() that read "half-open" just before the breaker reopened and half-opened
//   again may count its success in the new half-open period.
// - set_config() stores each parameter separately: an allow()/record()/evaluate()
//   racing a reload may see some old and some new parameters, for that one call.
class Breaker {
 public:
  // Longest window the ring can hold (config.cc caps `window` at 10 minutes).
  static constexpr uint64_t kRingSeconds = 600;
  // A half-open breaker with no verdict for this long reopens: its probes were
  // abandoned (their caller never called record()) or the server cannot answer them.
  static constexpr uint64_t kProbeStallMs = 30000;

  explicit Breaker(const BreakerConfig& config);
  Breaker(const Breaker&) = delete;
  Breaker& operator=(const Breaker&) = delete;

  // Applies a reloaded configuration; the state, its deadline and the window's counts
  // are kept. A window_ms change applies at once to the counts (the ring keeps
  // kRingSeconds of history). enabled = false makes allow() true and the next
  // evaluate() close the breaker. Any thread.
  void set_config(const BreakerConfig& config);

  State state() const { return state_of(word_.load(std::memory_order_relaxed)); }

  // May a request go to this server now? closed: yes; open: no; half-open: yes for the
  // first half_open_probes calls of the half-open period, no after that (each true
  // takes a permit for good, even if the caller ends up not sending; an unused permit
  // is given back only by the kProbeStallMs reopening). now_ms is not used today: the
  // state moves only in evaluate() and record(). Any thread.
  bool allow(uint64_t now_ms);

  // Reports how an exchange with the server ended. Counts it in the current second and,
  // while half-open, may close or reopen the breaker. Any thread.
  void record(Outcome outcome, uint64_t now_ms);

  // Moves closed → open and open → half-open (and half-open → open after
  // kProbeStallMs). `rnd` is a fresh random number: its top 53 bits pick the jitter of
  // a new open_until, and it seeds the jitter of record()'s reopenings. Returns true
  // when this call changed the state (the caller logs an event); transitions made by
  // record() are not reported here (see transitions()). One thread, every ~100 ms.
  bool evaluate(uint64_t now_ms, uint64_t rnd);

  // Counts of the window ending at now_ms (for /status and evaluate()). Any thread.
  Snapshot counts(uint64_t now_ms) const;

  // Number of state changes since construction, by evaluate() and record() alike: a
  // change of this number between two looks means the state moved in between.
  uint64_t transitions() const { return transitions_.load(std::memory_order_relaxed); }

  // While open: the time (ms) evaluate() half-opens it; otherwise 0.
  uint64_t open_until_ms() const;

 private:
  enum Counter : size_t { kRequests, kErrors, kTimeouts, kCounters };

  // word_ = state in the low 2 bits, time in the rest: open_until while open, the
  // time it half-opened while half-open, 0 while closed.
  static uint64_t pack(State s, uint64_t ms) { return (ms << 2) | static_cast<uint64_t>(s); }
  static State state_of(uint64_t word) { return static_cast<State>(word & 3); }
  static uint64_t time_of(uint64_t word) { return word >> 2; }

  uint64_t probes() const;
  uint64_t open_until(uint64_t now_ms, uint64_t rnd) const;
  bool should_open(const Snapshot& c) const;
  // CAS word_ from `expected` to `desired`; counts the transition when it succeeds.
  bool transition(uint64_t expected, uint64_t desired);
  void clear_window();

  std::atomic<uint64_t> word_;
  std::atomic<uint64_t> probes_taken_{0};     // allow() permits handed out this half-open period
  std::atomic<uint64_t> probe_successes_{0};  // successes recorded this half-open period
  std::atomic<uint64_t> transitions_{0};
  std::atomic<uint64_t> seed_;                // last evaluate() rnd, for record()'s jitter

  // The configuration, one atomic per field (see set_config()).
  std::atomic<bool> enabled_;
  std::atomic<uint64_t> window_s_;
  std::atomic<uint64_t> min_requests_;
  std::atomic<double> error_rate_;
  std::atomic<double> timeout_rate_;
  std::atomic<uint64_t> open_for_ms_;
  std::atomic<uint64_t> half_open_probes_;

  std::mutex evaluate_mu_;  // evaluate() only: keeps a second caller from interleaving

  // Slot s % kRingSeconds counts second s.
  SecondSlot<kCounters> slots_[kRingSeconds];
};

}  // namespace fg::breaker
