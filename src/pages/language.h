// The two languages of Floodgate's pages. A value type of the config layer: templates
// and their language strings are parsed by the config loader; pages/negotiation.h picks
// one per request from Accept-Language.
#pragma once

#include <string_view>

namespace fg::pages {

enum class Language { kEn, kZh };

// The BCP 47 tag written into `<html lang>`: "en" or "zh-CN".
inline std::string_view language_tag(Language lang) { return lang == Language::kZh ? "zh-CN" : "en"; }

}  // namespace fg::pages
