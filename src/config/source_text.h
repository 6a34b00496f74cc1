// The byte-level check of a config file, run before the TOML parser sees it: toml++
// 3.3 reaches undefined behaviour or asserts on some input (malformed UTF-8 among
// it), so such input never gets there.
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
// no surrogates, nothing above U+10FFFF, no truncated or stray bytes), a NUL byte, or
// a construct that toml++ 3.3 mishandles (a table header without a name, non-ASCII
// characters outside strings and comments or right after a line-ending backslash);
// nullopt when the text is clean.
std::optional<TextProblem> find_text_problem(std::string_view text);

}  // namespace fg::config
