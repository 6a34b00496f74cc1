// The string tables behind strings.h.
#include "pages/strings.h"

#include <array>
#include <charconv>

namespace fg::pages {
namespace {

struct Entry {
  std::string_view name;
  std::string_view en;
  std::string_view zh;
};

constexpr std::array<Entry, static_cast<size_t>(Text::kCount)> kTexts = {{
#define FG_PAGES_TEXT_ENTRY(name, en, zh) {#name, en, zh},
    FG_PAGES_TEXTS(FG_PAGES_TEXT_ENTRY)
#undef FG_PAGES_TEXT_ENTRY
}};

}  // namespace

std::string_view text(Text t, Language lang) {
  const Entry& e = kTexts[static_cast<size_t>(t)];
  return lang == Language::kZh ? e.zh : e.en;
}

std::optional<Text> find_text(std::string_view name) {
  for (size_t i = 0; i < kTexts.size(); ++i) {
    if (kTexts[i].name == name) return static_cast<Text>(i);
  }
  return std::nullopt;
}

std::string text_names() {
  std::string out;
  for (const Entry& e : kTexts) {
    if (!out.empty()) out += ", ";
    out += e.name;
  }
  return out;
}

void format_count(Text t, Language lang, uint64_t n, std::string* out) {
  const std::string_view s = text(t, lang);
  const size_t at = s.find("{n}");
  if (at == std::string_view::npos) {
    out->append(s);
    return;
  }
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, n).ptr;
  out->append(s.substr(0, at));
  out->append(digits, end);
  out->append(s.substr(at + 3));
}

void format_wait(uint64_t seconds, Language lang, std::string* out) {
  if (seconds < 60) {
    out->append(text(Text::k_wait_under_minute, lang));
    return;
  }
  format_count(Text::k_wait_minutes, lang, (seconds + 59) / 60, out);
}

std::string_view refusal_message(int status, std::string_view error_code, Language lang) {
  if (error_code == "too_many_tickets") return text(Text::k_error_tickets, lang);
  if (error_code == "queue_full") return text(Text::k_error_queue_full, lang);
  if (status == 429) return text(Text::k_error_rate, lang);
  return text(Text::k_error_unavailable, lang);
}

}  // namespace fg::pages
