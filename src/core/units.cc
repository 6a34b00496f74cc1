// Duration and size parsing for configuration values. Arithmetic is done in
// integers so that "1.5s" is exactly 1500 ms and overflow is detected rather
// than rounded away by a double.
#include "floodgate/units.h"

#include <array>
#include <string>

namespace fg {
namespace {

struct Unit {
  std::string_view suffix;
  uint64_t factor;
};

// Durations resolve to milliseconds; "m" is minutes here (for sizes it is MiB).
constexpr std::array<Unit, 5> kDurationUnits{{
    {"ms", 1},
    {"s", 1000},
    {"m", 60 * 1000},
    {"h", 60 * 60 * 1000},
    {"d", 24 * 60 * 60 * 1000},
}};

constexpr uint64_t kKi = 1024;
constexpr uint64_t kMi = kKi * 1024;
constexpr uint64_t kGi = kMi * 1024;

constexpr std::array<Unit, 14> kSizeUnits{{
    {"B", 1},
    {"KiB", kKi},
    {"MiB", kMi},
    {"GiB", kGi},
    {"KB", 1000},
    {"MB", 1000 * 1000},
    {"GB", 1000 * 1000 * 1000},
    {"k", kKi},
    {"K", kKi},
    {"m", kMi},
    {"M", kMi},
    {"g", kGi},
    {"G", kGi},
    {"", 1},
}};

// Fraction digits beyond this are dropped. Nine digits keep the fractional
// product below 2^64 even for the largest factor (1 GiB or 1 day), and the
// dropped part is always smaller than the 1 ms / 1 byte resolution.
constexpr size_t kMaxFractionDigits = 9;

constexpr std::string_view kDurationHint = " (use ms, s, m, h, d, e.g. \"250ms\" or \"1.5s\")";
constexpr std::string_view kSizeHint =
    " (use a number of bytes or B, KiB, MiB, GiB, KB, MB, GB, e.g. \"16KiB\")";

// Long garbage should not flood a log line; a prefix is enough to find it.
std::string quoted(std::string_view text) {
  constexpr size_t kMaxShown = 64;
  std::string out = "\"";
  out.append(text.substr(0, kMaxShown));
  if (text.size() > kMaxShown) out.append("...");
  out.push_back('"');
  return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

struct Number {
  uint64_t whole = 0;
  uint64_t fraction = 0;       // digits after the point, as an integer
  uint64_t fraction_scale = 1; // 10^(number of fraction digits kept)
  bool has_fraction = false;
  bool overflow = false;
  size_t length = 0;           // characters consumed
};

// Reads "DIGITS[.DIGITS]" from the start of text. length == 0 means no number.
Number read_number(std::string_view text) {
  Number n;
  size_t i = 0;
  while (i < text.size() && is_digit(text[i])) {
    const uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (__builtin_mul_overflow(n.whole, 10, &n.whole) ||
        __builtin_add_overflow(n.whole, digit, &n.whole)) {
      n.overflow = true;
    }
    ++i;
  }
  if (i == 0) return n;
  if (i < text.size() && text[i] == '.') {
    size_t j = i + 1;
    size_t kept = 0;
    while (j < text.size() && is_digit(text[j])) {
      if (kept < kMaxFractionDigits) {
        n.fraction = n.fraction * 10 + static_cast<uint64_t>(text[j] - '0');
        n.fraction_scale *= 10;
        ++kept;
      }
      ++j;
    }
    // "1." and "1.s" are typos, not a fraction of zero.
    if (j == i + 1) {
      n.length = 0;
      return n;
    }
    n.has_fraction = true;
    i = j;
  }
  n.length = i;
  return n;
}

// whole * factor + fraction * factor / scale, truncated; false on overflow.
bool scale(const Number& n, uint64_t factor, uint64_t* out) {
  uint64_t value = 0;
  if (n.overflow || __builtin_mul_overflow(n.whole, factor, &value)) return false;
  const uint64_t part = n.fraction * factor / n.fraction_scale;
  return !__builtin_add_overflow(value, part, out);
}

const Unit* find_unit(std::string_view suffix, const Unit* begin, const Unit* end) {
  for (const Unit* u = begin; u != end; ++u) {
    if (u->suffix == suffix) return u;
  }
  return nullptr;
}

}  // namespace

Result<uint64_t> parse_duration_ms(std::string_view text) {
  const std::string prefix = "invalid duration " + quoted(text);
  if (text.empty()) return Status::error(prefix + ": empty" + std::string(kDurationHint));
  if (text.front() == '-') return Status::error(prefix + ": must not be negative");
  const Number n = read_number(text);
  if (n.length == 0) return Status::error(prefix + std::string(kDurationHint));
  const std::string_view suffix = text.substr(n.length);
  // A bare number is ambiguous (seconds? milliseconds?), so the unit is mandatory.
  if (suffix.empty()) return Status::error(prefix + ": missing unit" + std::string(kDurationHint));
  const Unit* unit = find_unit(suffix, kDurationUnits.data(), kDurationUnits.data() + kDurationUnits.size());
  if (unit == nullptr) return Status::error(prefix + std::string(kDurationHint));
  uint64_t ms = 0;
  if (!scale(n, unit->factor, &ms)) return Status::error(prefix + ": too large");
  return ms;
}

Result<uint64_t> parse_size_bytes(std::string_view text) {
  const std::string prefix = "invalid size " + quoted(text);
  if (text.empty()) return Status::error(prefix + ": empty" + std::string(kSizeHint));
  if (text.front() == '-') return Status::error(prefix + ": must not be negative");
  const Number n = read_number(text);
  if (n.length == 0) return Status::error(prefix + std::string(kSizeHint));
  const std::string_view suffix = text.substr(n.length);
  const Unit* unit = find_unit(suffix, kSizeUnits.data(), kSizeUnits.data() + kSizeUnits.size());
  if (unit == nullptr) return Status::error(prefix + std::string(kSizeHint));
  // "1.5MiB" is natural; "1.5" or "1.5B" asks for half a byte.
  if (n.has_fraction && unit->factor == 1) {
    return Status::error(prefix + ": a plain number of bytes must be whole");
  }
  uint64_t bytes = 0;
  if (!scale(n, unit->factor, &bytes)) return Status::error(prefix + ": too large");
  return bytes;
}

}  // namespace fg
