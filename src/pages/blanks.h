// Blank trimming shared by the header parsers and the template parser of this module.
#pragma once

#include <string_view>

namespace fg::pages {

// `s` without the spaces and tabs around it (HTTP's OWS; the padding in "{{ name }}").
inline std::string_view trim_blanks(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace fg::pages
