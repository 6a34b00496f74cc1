// The byte-level check of a config file, run before the TOML parser sees it: toml++
// 3.3 reaches undefined behaviour on malformed UTF-8, so such input never gets there.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fg::config {

struct TextProblem {
  uint32_t line = 1;    // 1-based
  uint32_t column = 1;  // 1-based, in characters (as the TOML parser counts)
  std::string message;
};

// The first byte sequence that is not well-formed UTF-8 (RFC 3629: no overlong forms,
// no surrogates, nothing above U+10FFFF, no truncated or stray bytes), or a NUL byte;
// nullopt when the text is clean.
std::optional<TextProblem> find_text_problem(std::string_view text);

}  // namespace fg::config
