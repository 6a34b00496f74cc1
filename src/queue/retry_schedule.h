// The durable retry schedule of a queued route: how long a delivery waits after each
// failed attempt, and when it is given up (then the ticket becomes a dead letter, it is
// never dropped). Pure code: no Redis, no libuv; the caller supplies the randomness.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "floodgate/status.h"

namespace fg::queue {

struct RetrySchedule {
  // How a wait is spread so that tickets that failed together do not all come back
  // together: kNone waits exactly the listed delay; kFull anywhere in [0, delay]; kEqual
  // in [delay/2, delay] (never much shorter than listed, still spread).
  enum class Jitter { kNone, kFull, kEqual };

  std::vector<uint64_t> delays_ms;  // wait after the 1st, 2nd, ... failed attempt
  Jitter jitter = Jitter::kEqual;

  // After `failed_attempts` failed attempts (1 = the first delivery failed): true when
  // no further attempt is scheduled, i.e. the ticket is to become a dead letter. An
  // empty schedule is exhausted after the first failure.
  bool exhausted(uint64_t failed_attempts) const { return failed_attempts > delays_ms.size(); }

  // The wait before the next attempt after `failed_attempts` failed ones, jittered with
  // `u` in [0, 1) (uniform; values outside are clamped). Past the end of the schedule
  // (exhausted) the last delay is returned, 0 for an empty schedule. failed_attempts 0
  // is treated as 1.
  uint64_t next_delay_ms(uint64_t failed_attempts, double u) const;

  // The sum of the listed delays: how long a ticket is retried before it is dead.
  uint64_t total_ms() const;
};

// A payment provider's own rhythm (about a day): 15s, 1m, 4m, 10m, 10m, 1h, 2h, 6h, 15h,
// with equal jitter. The default for store_and_forward routes.
RetrySchedule default_store_and_forward_schedule();

// Bounds the validation enforces.
inline constexpr size_t kMaxRetryScheduleSteps = 64;
inline constexpr uint64_t kMinRetryDelayMs = 100;
inline constexpr uint64_t kMaxRetryDelayMs = 7ULL * 24 * 3600 * 1000;     // one step: 7 days
inline constexpr uint64_t kMaxRetryTotalMs = 30ULL * 24 * 3600 * 1000;   // all steps: 30 days

// What the config loader knows about the route when it reads `retry_schedule` and
// `retry_jitter`.
struct RetryScheduleInput {
  std::vector<std::string> delays;  // the array's strings, as written ("15s", "1m", ...)
  std::string jitter;               // "" (default: "equal"), "none", "full" or "equal"
  bool route_queued = false;        // overflow = "queue", on_unavailable = "queue" or store_and_forward
};

// Validates the route keys `retry_schedule` / `retry_jitter`. Every problem is one
// message naming the key and, for a step, its index, e.g.
//   retry_schedule[2]: "0s" is shorter than the minimum of 100ms
// (the loader prefixes FILE:LINE:COL and the route). An empty result means valid.
std::vector<std::string> validate_retry_schedule(const RetryScheduleInput& in);

// Builds the schedule from input that validate_retry_schedule() accepted; on input it
// refuses, the first of its messages.
Result<RetrySchedule> parse_retry_schedule(const RetryScheduleInput& in);

// "none" | "full" | "equal"; false for anything else.
bool parse_retry_jitter(std::string_view text, RetrySchedule::Jitter* out);

}  // namespace fg::queue
