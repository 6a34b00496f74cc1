// Retry schedules: the jittered wait after each failed delivery attempt, and the
// validation of the route keys that configure them.
#include "queue/retry_schedule.h"

#include <algorithm>

#include "floodgate/units.h"

namespace fg::queue {

uint64_t RetrySchedule::next_delay_ms(uint64_t failed_attempts, double u) const {
  if (delays_ms.empty()) return 0;
  size_t i = static_cast<size_t>(std::clamp<uint64_t>(failed_attempts, 1, delays_ms.size()) - 1);
  uint64_t d = delays_ms[i];
  // Clamping (rather than rejecting) keeps a bad random source from producing waits
  // longer than the listed step.
  if (!(u >= 0.0)) u = 0.0;
  if (u > 1.0) u = 1.0;
  switch (jitter) {
    case Jitter::kNone:
      return d;
    case Jitter::kFull:
      return static_cast<uint64_t>(static_cast<double>(d) * u);
    case Jitter::kEqual:
      return d - d / 2 + static_cast<uint64_t>(static_cast<double>(d / 2) * u);
  }
  return d;
}

uint64_t RetrySchedule::total_ms() const {
  uint64_t sum = 0;
  for (uint64_t d : delays_ms) sum += d;
  return sum;
}

RetrySchedule default_store_and_forward_schedule() {
  constexpr uint64_t s = 1000, m = 60 * s, h = 60 * m;
  RetrySchedule r;
  r.delays_ms = {15 * s, 1 * m, 4 * m, 10 * m, 10 * m, 1 * h, 2 * h, 6 * h, 15 * h};
  r.jitter = RetrySchedule::Jitter::kEqual;
  return r;
}

bool parse_retry_jitter(std::string_view text, RetrySchedule::Jitter* out) {
  using J = RetrySchedule::Jitter;
  if (text == "none") *out = J::kNone;
  else if (text == "full") *out = J::kFull;
  else if (text == "equal") *out = J::kEqual;
  else return false;
  return true;
}

std::vector<std::string> validate_retry_schedule(const RetryScheduleInput& in) {
  std::vector<std::string> errors;
  // Only queued routes have a dispatcher that could follow the schedule; elsewhere the
  // key would be silently ignored, which hides a misunderstanding.
  if (!in.route_queued)
    errors.push_back("retry_schedule: only queued routes (overflow = \"queue\", on_unavailable = \"queue\" or "
                     "mode = \"store_and_forward\") retry deliveries");
  if (in.delays.empty()) errors.push_back("retry_schedule: must list at least one delay");
  if (in.delays.size() > kMaxRetryScheduleSteps)
    errors.push_back("retry_schedule: " + std::to_string(in.delays.size()) + " steps, at most " +
                     std::to_string(kMaxRetryScheduleSteps) + " are allowed");
  uint64_t total = 0;
  for (size_t i = 0; i < in.delays.size(); i++) {
    std::string where = "retry_schedule[" + std::to_string(i) + "]: ";
    auto d = parse_duration_ms(in.delays[i]);
    if (!d.is_ok()) {
      errors.push_back(where + d.message());
      continue;
    }
    if (*d < kMinRetryDelayMs) {
      errors.push_back(where + "\"" + in.delays[i] + "\" is shorter than the minimum of 100ms");
    } else if (*d > kMaxRetryDelayMs) {
      errors.push_back(where + "\"" + in.delays[i] + "\" is longer than the maximum of 7d");
    }
    total += std::min(*d, kMaxRetryDelayMs + 1);
  }
  if (total > kMaxRetryTotalMs) errors.push_back("retry_schedule: the delays add up to more than 30d");
  RetrySchedule::Jitter j;
  if (!in.jitter.empty() && !parse_retry_jitter(in.jitter, &j))
    errors.push_back("retry_jitter: \"" + in.jitter + "\" is not one of \"none\", \"full\", \"equal\"");
  return errors;
}

Result<RetrySchedule> parse_retry_schedule(const RetryScheduleInput& in) {
  auto errors = validate_retry_schedule(in);
  if (!errors.empty()) return Status::error(errors.front());
  RetrySchedule r;
  for (const auto& text : in.delays) r.delays_ms.push_back(*parse_duration_ms(text));
  if (!in.jitter.empty()) parse_retry_jitter(in.jitter, &r.jitter);
  return r;
}

}  // namespace fg::queue
