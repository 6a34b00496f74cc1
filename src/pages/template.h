// A page template: text with `{{name}}` placeholders, parsed once when the config is
// loaded and rendered per answer by appending literal runs and escaped values, with no
// parsing at render time. A parsed Template is immutable: share it between workers.
//
// Placeholders (every value is HTML-escaped: & < > " ' become entities):
//   {{position}} {{wait_seconds}} {{wait_text}} {{retry_after}} {{retry_text}}
//   {{ticket_url}} {{poll_url}} {{ticket_id}} {{shop_name}} {{lang}} {{nonce}}
//   {{request_id}} {{status}} {{message}} {{detail}}   the values of PageValues below
//   {{t:NAME}}   a language string of strings.h in the page's language
//   {{open}}     a literal "{{"
//   {{style}}    the built-in stylesheet (conf/pages/style.css) as a <style> element
//                carrying the nonce
// Spaces inside the braces are allowed ("{{ position }}"). An unknown name, a `{{`
// without `}}` on the same line, and any placeholder inside a <script> or <style>
// element are parse errors: HTML escaping does not make a value safe in a script, so
// a script reads values from data- attributes instead. So is a <script> or <style>
// start tag without {{nonce}}, which the pages' Content-Security-Policy would block.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "floodgate/status.h"
#include "pages/language.h"

namespace fg::pages {

#define FG_PAGES_FIELDS(X) \
  X(position)              \
  X(wait_seconds)          \
  X(wait_text)             \
  X(retry_after)           \
  X(retry_text)            \
  X(ticket_url)            \
  X(poll_url)              \
  X(ticket_id)             \
  X(shop_name)             \
  X(lang)                  \
  X(nonce)                 \
  X(request_id)            \
  X(status)                \
  X(message)               \
  X(detail)                \
  X(open)                  \
  X(style)

enum class Field : uint8_t {
#define FG_PAGES_FIELD_ENUM(name) k_##name,
  FG_PAGES_FIELDS(FG_PAGES_FIELD_ENUM)
#undef FG_PAGES_FIELD_ENUM
  kCount
};

// What one answer fills in. Views must outlive render(); a missing number or an empty
// view renders as nothing.
struct PageValues {
  Language lang = Language::kEn;           // {{lang}}, {{t:...}}, {{wait_text}}, {{retry_text}}
  std::optional<uint64_t> position;        // {{position}}: tickets ahead (the JSON position)
  std::optional<uint64_t> wait_seconds;    // {{wait_seconds}}, {{wait_text}}
  std::optional<uint64_t> retry_after;     // {{retry_after}}, {{retry_text}}: the Retry-After seconds
  int status = 0;                          // {{status}}: the HTTP status of this answer; 0 = none
  std::string_view ticket_url;             // {{ticket_url}}: the Location of the ticket
  std::string_view poll_url;               // {{poll_url}}: the ticket JSON (the same URL today)
  std::string_view ticket_id;              // {{ticket_id}}
  std::string_view shop_name;              // {{shop_name}}: [pages] shop_name
  std::string_view nonce;                  // {{nonce}}: the CSP nonce of this answer
  std::string_view request_id;             // {{request_id}}
  std::string_view message;                // {{message}}: the headline, e.g. refusal_message()
  std::string_view detail;                 // {{detail}}: what to do next, e.g. text(Text::k_failed_hint)
};

class Template {
 public:
  Template() = default;

  // Appends the page for `v` to *out.
  void render(const PageValues& v, std::string* out) const;
  std::string render(const PageValues& v) const;

  // Whether the template contains `f` anywhere (for tests and --check warnings).
  bool uses(Field f) const;

 private:
  friend Result<Template> parse(std::string_view text, std::string_view file);

  // A literal run of text_ (kind kLiteral) or a placeholder.
  struct Segment {
    enum Kind : uint8_t { kLiteral, kField, kText } kind;
    uint8_t id;           // Field or Text
    uint32_t offset = 0;  // kLiteral: the run in literals_
    uint32_t length = 0;
  };
  std::string literals_;
  std::vector<Segment> segments_;
};

// Parses a template. `file` names it in errors: "FILE:LINE:COL: message", with
// 1-based lines and columns counted in characters (UTF-8 code points).
Result<Template> parse(std::string_view text, std::string_view file);

// The name of a field as written in a template.
std::string_view field_name(Field f);

// Appends `s` with & < > " ' replaced by entities.
void append_escaped(std::string_view s, std::string* out);

}  // namespace fg::pages
