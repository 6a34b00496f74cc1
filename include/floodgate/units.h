// Parsing of the human-friendly units used in the configuration file:
// durations ("250ms", "10s", "5m", "24h") and sizes ("16KiB", "1MiB", plain bytes).
#pragma once

#include <cstdint>
#include <string_view>

#include "floodgate/status.h"

namespace fg {

// Parses a duration string into milliseconds. Accepted units: ms, s, m, h, d
// (a bare number is rejected: the unit must be explicit). Fractions are allowed
// ("1.5s"). Negative values and overflow are errors.
Result<uint64_t> parse_duration_ms(std::string_view text);

// Parses a size string into bytes. Accepted units: B, KiB, MiB, GiB (also KB/MB/GB
// meaning powers of 1000 and k/K, m/M, g/G meaning powers of 1024). A bare number
// means bytes.
Result<uint64_t> parse_size_bytes(std::string_view text);

}  // namespace fg
