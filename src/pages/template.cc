// Template parsing and rendering. Parsing happens at config load (off the loops) and
// may allocate freely; render() only appends to the caller's string.
#include "pages/template.h"

#include <array>
#include <charconv>

#include "builtin_pages.h"  // generated from conf/pages/ by embed_pages.py
#include "pages/blanks.h"
#include "pages/strings.h"

namespace fg::pages {
namespace {

constexpr std::array<std::string_view, static_cast<size_t>(Field::kCount)> kFieldNames = {
#define FG_PAGES_FIELD_NAME(name) #name,
    FG_PAGES_FIELDS(FG_PAGES_FIELD_NAME)
#undef FG_PAGES_FIELD_NAME
};

// A template larger than this is a wrong path, not a page.
constexpr size_t kMaxTemplateBytes = 1 << 20;

std::string field_names() {
  std::string out;
  for (std::string_view n : kFieldNames) {
    out += n;
    out += ", ";
  }
  out += "t:NAME";
  return out;
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (lower(s[i]) != prefix[i]) return false;
  }
  return true;
}

// "FILE:LINE:COL: " for byte offset `at` of `text`.
std::string where(std::string_view text, size_t at, std::string_view file) {
  size_t line = 1;
  size_t col = 1;
  for (size_t i = 0; i < at && i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      ++line;
      col = 1;
    } else if ((c & 0xC0) != 0x80) {  // UTF-8 continuation bytes do not start a character
      ++col;
    }
  }
  return std::string(file) + ':' + std::to_string(line) + ':' + std::to_string(col) + ": ";
}

// Tracks whether a position is inside the content of a <script> or <style> element, where
// an HTML-escaped value is still live code, and whether each such start tag carries
// the nonce, without which the pages' Content-Security-Policy blocks the element. A
// lexical approximation: it ignores comments and a '>' inside a quoted attribute, which
// a page template has no reason to contain.
class RawTextTracker {
 public:
  // Advances over text[from, to). Returns the offset of a <script> or <style> start tag
  // that ended without a {{nonce}} placeholder, or npos.
  size_t advance(std::string_view text, size_t from, size_t to) {
    for (size_t i = from; i < to; ++i) {
      const std::string_view rest = text.substr(i);
      switch (state_) {
        case kText:
          if (open_tag(rest, "<script")) {
            state_ = kTag, element_ = "script";
          } else if (open_tag(rest, "<style")) {
            state_ = kTag, element_ = "style";
          }
          if (state_ == kTag) tag_start_ = i, nonce_ = false;
          break;
        case kTag:
          if (text[i] == '>') {
            state_ = kBody;
            if (!nonce_) return tag_start_;
          }
          break;
        case kBody:
          if (rest.size() > 2 && rest[0] == '<' && rest[1] == '/' &&
              starts_with_ci(rest.substr(2), element_)) {
            state_ = kText;
          }
          break;
      }
    }
    return std::string_view::npos;
  }
  // Called for each placeholder at the current position.
  void placeholder(bool is_nonce) {
    if (state_ == kTag && is_nonce) nonce_ = true;
  }
  bool in_body() const { return state_ == kBody; }
  std::string_view element() const { return element_; }

 private:
  static bool open_tag(std::string_view rest, std::string_view tag) {
    if (!starts_with_ci(rest, tag) || rest.size() == tag.size()) return false;
    const char next = rest[tag.size()];
    return next == '>' || next == ' ' || next == '\t' || next == '\n' || next == '\r' || next == '/';
  }
  enum { kText, kTag, kBody } state_ = kText;
  std::string_view element_;
  size_t tag_start_ = 0;
  bool nonce_ = false;
};

void append_number(uint64_t n, std::string* out) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, n).ptr;
  out->append(digits, end);
}

}  // namespace

std::string_view field_name(Field f) { return kFieldNames[static_cast<size_t>(f)]; }

void append_escaped(std::string_view s, std::string* out) {
  size_t run = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    std::string_view entity;
    switch (s[i]) {
      case '&': entity = "&amp;"; break;
      case '<': entity = "&lt;"; break;
      case '>': entity = "&gt;"; break;
      case '"': entity = "&quot;"; break;
      case '\'': entity = "&#39;"; break;
      default: continue;
    }
    out->append(s.substr(run, i - run));
    out->append(entity);
    run = i + 1;
  }
  out->append(s.substr(run));
}

Result<Template> parse(std::string_view text, std::string_view file) {
  if (text.size() > kMaxTemplateBytes) {
    return Status::error(std::string(file) + ": the template is larger than 1 MiB");
  }
  Template t;
  t.literals_.reserve(text.size());
  RawTextTracker raw;
  size_t pos = 0;
  // Appends text[from, to) as a literal run; false (with *error set) for a script or style
  // start tag in it that lacks the nonce.
  std::string error;
  auto add_literal = [&](size_t from, size_t to) {
    if (to == from) return true;
    const size_t bare = raw.advance(text, from, to);
    if (bare != std::string_view::npos) {
      error = where(text, bare, file) + "<" + std::string(raw.element()) +
              "> without nonce=\"{{nonce}}\": the Content-Security-Policy of the pages would block it";
      return false;
    }
    Template::Segment s{Template::Segment::kLiteral, 0};
    s.offset = static_cast<uint32_t>(t.literals_.size());
    s.length = static_cast<uint32_t>(to - from);
    t.literals_.append(text.substr(from, to - from));
    // Adjacent literal runs (around {{open}}) stay separate; merging is not worth it.
    t.segments_.push_back(s);
    return true;
  };
  while (pos < text.size()) {
    const size_t open = text.find("{{", pos);
    if (open == std::string_view::npos) {
      if (!add_literal(pos, text.size())) return Status::error(std::move(error));
      break;
    }
    if (!add_literal(pos, open)) return Status::error(std::move(error));
    // A placeholder ends on its own line, before any other "{{".
    const size_t close = text.find("}}", open + 2);
    const size_t newline = text.find('\n', open + 2);
    const size_t reopen = text.find("{{", open + 2);
    if (close == std::string_view::npos || (newline != std::string_view::npos && newline < close) ||
        (reopen != std::string_view::npos && reopen < close)) {
      return Status::error(where(text, open, file) + "unclosed placeholder: '{{' without '}}' on the same line");
    }
    const std::string_view raw_name = text.substr(open + 2, close - open - 2);
    const std::string_view name = trim_blanks(raw_name);
    Template::Segment seg{Template::Segment::kField, 0};
    if (name.substr(0, 2) == "t:") {
      const auto id = find_text(trim_blanks(name.substr(2)));
      if (!id) {
        return Status::error(where(text, open, file) + "unknown language string {{" + std::string(raw_name) +
                             "}}; known: " + text_names());
      }
      seg.kind = Template::Segment::kText;
      seg.id = static_cast<uint8_t>(*id);
    } else {
      size_t i = 0;
      while (i < kFieldNames.size() && kFieldNames[i] != name) ++i;
      if (i == kFieldNames.size()) {
        return Status::error(where(text, open, file) + "unknown placeholder {{" + std::string(raw_name) +
                             "}}; known: " + field_names());
      }
      seg.id = static_cast<uint8_t>(i);
    }
    if (raw.in_body()) {
      return Status::error(where(text, open, file) + "{{" + std::string(raw_name) + "}} inside a <" +
                           std::string(raw.element()) +
                           "> element: HTML escaping does not make a value safe there; put it in a "
                           "data- attribute and read it from the script");
    }
    raw.placeholder(seg.kind == Template::Segment::kField && seg.id == static_cast<uint8_t>(Field::k_nonce));
    t.segments_.push_back(seg);
    pos = close + 2;
  }
  return t;
}

void Template::render(const PageValues& v, std::string* out) const {
  for (const Segment& s : segments_) {
    switch (s.kind) {
      case Segment::kLiteral:
        out->append(literals_, s.offset, s.length);
        break;
      case Segment::kText:
        append_escaped(text(static_cast<Text>(s.id), v.lang), out);
        break;
      case Segment::kField:
        // Numbers and our own sentences need no escaping; every caller-supplied string does.
        switch (static_cast<Field>(s.id)) {
          case Field::k_position:
            if (v.position) append_number(*v.position, out);
            break;
          case Field::k_wait_seconds:
            if (v.wait_seconds) append_number(*v.wait_seconds, out);
            break;
          case Field::k_wait_text:
            if (v.wait_seconds) format_wait(*v.wait_seconds, v.lang, out);
            break;
          case Field::k_retry_after:
            if (v.retry_after) append_number(*v.retry_after, out);
            break;
          case Field::k_retry_text:
            if (v.retry_after) format_count(Text::k_retry_in, v.lang, *v.retry_after, out);
            break;
          case Field::k_status:
            if (v.status > 0) append_number(static_cast<uint64_t>(v.status), out);
            break;
          case Field::k_lang: out->append(language_tag(v.lang)); break;
          case Field::k_open: out->append("{{"); break;
          case Field::k_style:
            if (v.nonce.empty()) {
              out->append("<style>\n");
            } else {
              out->append("<style nonce=\"");
              append_escaped(v.nonce, out);
              out->append("\">\n");
            }
            out->append(kBuiltinStyle);
            out->append("</style>");
            break;
          case Field::k_ticket_url: append_escaped(v.ticket_url, out); break;
          case Field::k_poll_url: append_escaped(v.poll_url, out); break;
          case Field::k_ticket_id: append_escaped(v.ticket_id, out); break;
          case Field::k_shop_name: append_escaped(v.shop_name, out); break;
          case Field::k_nonce: append_escaped(v.nonce, out); break;
          case Field::k_request_id: append_escaped(v.request_id, out); break;
          case Field::k_message: append_escaped(v.message, out); break;
          case Field::k_detail: append_escaped(v.detail, out); break;
          case Field::kCount: break;
        }
        break;
    }
  }
}

std::string Template::render(const PageValues& v) const {
  std::string out;
  out.reserve(literals_.size() + 256);
  render(v, &out);
  return out;
}

bool Template::uses(Field f) const {
  for (const Segment& s : segments_) {
    if (s.kind == Segment::kField && s.id == static_cast<uint8_t>(f)) return true;
  }
  return false;
}

}  // namespace fg::pages
