// Well-formedness of a config file's bytes (see source_text.h).
#include "config/source_text.h"

namespace fg::config {
namespace {

std::string hex_byte(unsigned char c) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  return std::string("0x") + kHex[c >> 4] + kHex[c & 0xf];
}

}  // namespace

// What toml++ 3.3 cannot take although the bytes are valid UTF-8: it asserts (and,
// without assertions, reads on with a broken invariant) when a table header's first
// key does not start with a key character or a quote ("[\n", "[ #", "[."), and it
// reaches undefined behaviour when it tests some non-ASCII characters for whitespace
// (outside strings, and after a line-ending backslash). The scan follows strings,
// comments and the brackets of values the way the parser does.
// It runs on text already known to be valid UTF-8; where it is unsure it says nothing
// and leaves the verdict to the parser.
std::optional<TextProblem> find_structure_problem(std::string_view text) {
  const size_t n = text.size();
  uint32_t line = 1;
  uint32_t column = 1;
  size_t i = 0;
  std::string open;         // the [ and { of values not yet closed, innermost last
  bool after_equals = false;  // in the value of the current key (else in a key or header)
  bool line_start = true;   // only blanks so far on this line, outside any value
  auto advance = [&](size_t to) {
    for (; i < to && i < n; ++i) {
      const auto c = static_cast<unsigned char>(text[i]);
      if (c == '\n') {
        ++line;
        column = 1;
      } else if ((c & 0xC0) != 0x80) {
        ++column;  // count characters, not continuation bytes
      }
    }
  };
  if (text.substr(0, 3) == "\xEF\xBB\xBF") i = 3;  // a byte order mark, which the parser skips
  auto is_key_start = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '"' || c == '\'';
  };
  while (i < n) {
    const char c = text[i];
    const bool in_value = after_equals || (!open.empty() && open.back() == '[');
    // In a value, a quote glued to a bare token ("1\"x\"", "-'x'") does not start a
    // string for the parser: it is read as part of the token, so what follows is
    // judged as text outside a string.
    const bool glued = in_value && i > 0 && std::string_view(" \t\r\n=[{,").find(text[i - 1]) == std::string_view::npos;
    if ((c == '"' || c == '\'') && !glued) {
      const std::string_view triple = c == '"' ? "\"\"\"" : "'''";
      const bool multi = text.substr(i, 3) == triple;
      size_t j = i + (multi ? 3 : 1);
      while (j < n) {
        if (c == '"' && multi && text[j] == '\\' && j + 1 < n &&
            (text[j + 1] == ' ' || text[j + 1] == '\t' || text[j + 1] == '\r' || text[j + 1] == '\n')) {
          // A line-ending backslash: the parser trims the blanks after it and
          // classifies the first other character with a whitespace table that
          // has no answer for U+00A1-U+0499 and U+FB36-U+FEFE (undefined
          // behaviour), so a non-ASCII character may not come first there.
          size_t k = j + 1;
          while (k < n && (text[k] == ' ' || text[k] == '\t' || text[k] == '\r' || text[k] == '\n')) ++k;
          if (k < n && static_cast<unsigned char>(text[k]) >= 0x80) {
            advance(k);
            return TextProblem{line, column,
                               "non-ASCII character right after a line-ending backslash; write it as a \\u escape such as \\u00e9 "
                               "or move it after an ASCII character"};
          }
          j = k;
        } else if (c == '"' && text[j] == '\\') {
          if (multi && j + 1 < n && static_cast<unsigned char>(text[j + 1]) >= 0x80) {
            // Not an escape either way, but the parser first asks the same table
            // whether it is a line-ending backslash.
            advance(j + 1);
            return TextProblem{line, column, "a backslash followed by a non-ASCII character is not an escape"};
          }
          j += 2;
        } else if (multi ? text.substr(j, 3) == triple : text[j] == c) {
          j += multi ? 3 : 1;
          break;
        } else if (!multi && text[j] == '\n') {
          break;  // unterminated: the parser reports it
        } else {
          ++j;
        }
      }
      advance(j);
      line_start = false;
      continue;
    }
    if (c == '#') {
      const size_t eol = text.find('\n', i);
      advance(eol == std::string_view::npos ? n : eol);
      continue;
    }
    if (c == '\n') {
      if (open.empty()) {
        line_start = true;
        after_equals = false;
      }
      advance(i + 1);
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r') {
      advance(i + 1);
      continue;
    }
    if (line_start && c == '[') {
      size_t j = i + 1;
      if (j < n && text[j] == '[') ++j;
      while (j < n && (text[j] == ' ' || text[j] == '\t')) ++j;
      if (j < n && text[j] != ']' && !is_key_start(text[j])) {
        advance(j);
        return TextProblem{line, column, "expected a table name after '[' (a bare or quoted key)"};
      }
      line_start = false;
      advance(j);
      continue;
    }
    if (in_value && std::string_view("[]{},=").find(c) == std::string_view::npos) {
      // A bare value (number, boolean, date-time): the parser reads it up to the
      // next terminator, brackets and quotes included, testing each character.
      size_t j = i;
      while (j < n && std::string_view(" \t\r\n,]}#").find(text[j]) == std::string_view::npos) {
        if (static_cast<unsigned char>(text[j]) >= 0x80) {
          advance(j);
          return TextProblem{line, column, "non-ASCII character outside a string or comment"};
        }
        ++j;
      }
      // "YYYY-MM-DDT" is taken for a date-time, and the parser then assumes a digit
      // follows (undefined behaviour, or an assertion, otherwise).
      const std::string_view token = text.substr(i, j - i);
      auto digit = [&](size_t k) { return k < token.size() && token[k] >= '0' && token[k] <= '9'; };
      if (token.size() >= 11 && token[4] == '-' && token[7] == '-' && (token[10] == 'T' || token[10] == 't') &&
          !digit(11)) {
        advance(i + 11);
        return TextProblem{line, column, "expected a time (HH:MM:SS) after the 'T' of a date-time"};
      }
      // "YYYY-MM-DD H": the parser reads on past the space for a time and asserts
      // that the character after that digit is not the end of the value.
      const bool date = token.size() == 10 && token[4] == '-' && token[7] == '-' &&
                        digit(0) && digit(1) && digit(2) && digit(3) && digit(5) && digit(6) && digit(8) && digit(9);
      if (date && j + 2 < n && text[j] == ' ' && text[j + 1] >= '0' && text[j + 1] <= '9' &&
          std::string_view(" \t\r\n,]}#").find(text[j + 2]) != std::string_view::npos) {
        advance(j + 1);
        return TextProblem{line, column, "expected a time (HH:MM:SS) after the date and space"};
      }
      line_start = false;
      advance(j);
      continue;
    }
    if (static_cast<unsigned char>(c) >= 0x80) {
      // TOML allows other characters only in strings and comments; toml++ would
      // first test them against the same faulty whitespace table.
      return TextProblem{line, column, "non-ASCII character outside a string or comment"};
    }
    if (c == '=') {
      after_equals = true;
    } else if (c == '{' || (c == '[' && in_value)) {
      open += c;
      after_equals = false;  // an inline table starts with a key; an array is a value anyway
    } else if (c == '}' && !open.empty() && open.back() == '[') {
      // The parser asserts that an array element never starts with '}'.
      return TextProblem{line, column, "'}' inside an array (expected a value or ']')"};
    } else if ((c == ']' && !open.empty() && open.back() == '[') || (c == '}' && !open.empty())) {
      open.pop_back();
      after_equals = true;  // the closed array or table was a value
    } else if (c == ',' && !open.empty() && open.back() == '{') {
      after_equals = false;  // the next key of the inline table
    }
    line_start = false;
    advance(i + 1);
  }
  return std::nullopt;
}

std::optional<TextProblem> find_text_problem(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  uint32_t line = 1;
  uint32_t column = 1;
  auto problem = [&](std::string message) { return TextProblem{line, column, std::move(message)}; };
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c == 0) return problem("NUL byte (0x00): a config file is UTF-8 text");
    if (c < 0x80) {
      if (c == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
      ++i;
      continue;
    }
    // Lead byte: how many continuation bytes follow, and the range the first of them
    // must fall in (Unicode table 3-7), which excludes overlong forms, surrogates and
    // code points above U+10FFFF.
    size_t length = 0;
    unsigned char low = 0x80;
    unsigned char high = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      length = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 2;
      if (c == 0xE0) low = 0xA0;
      if (c == 0xED) high = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 3;
      if (c == 0xF0) low = 0x90;
      if (c == 0xF4) high = 0x8F;
    } else if (c >= 0x80 && c <= 0xBF) {
      return problem("invalid UTF-8: stray continuation byte " + hex_byte(c));
    } else {
      return problem("invalid UTF-8: byte " + hex_byte(c) + " never appears in UTF-8 text");
    }
    for (size_t k = 1; k <= length; ++k) {
      if (i + k >= n) {
        return problem("invalid UTF-8: sequence starting with " + hex_byte(c) + " cut off by the end of the file");
      }
      const unsigned char d = p[i + k];
      const unsigned char lo = k == 1 ? low : 0x80;
      const unsigned char hi = k == 1 ? high : 0xBF;
      if (d < lo || d > hi) {
        if (k == 1 && d >= 0x80 && d <= 0xBF) {
          const char* what = c == 0xED ? "a UTF-16 surrogate (U+D800-U+DFFF)"
                             : c == 0xF4 ? "a code point above U+10FFFF"
                                         : "an overlong encoding";
          return problem("invalid UTF-8: " + hex_byte(c) + " " + hex_byte(d) + " starts " + what);
        }
        return problem("invalid UTF-8: sequence starting with " + hex_byte(c) + " is cut off by byte " +
                       hex_byte(d));
      }
    }
    i += length + 1;
    ++column;
  }
  return find_structure_problem(text);
}

}  // namespace fg::config
