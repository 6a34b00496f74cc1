// Idempotency key source specs (SPEC §5): "header:NAME", "json:a.b", "form:F",
// "query:F", "body" parsed into KeySource values. Used by the config loader, so this
// file stays free of simdjson and of the HTTP model.
#include "idempotency/key_spec.h"

namespace fg::idempotency {
namespace {

bool is_control(unsigned char c) { return c < 0x20 || c == 0x7F; }

bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool is_json_path_char(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == '-';
}

// Config text is echoed back in error messages; control bytes are shown escaped so a
// stray byte cannot garble a terminal or a log line.
std::string quoted(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (is_control(c)) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  return out;
}

Status source_error(std::string_view text, std::string_view what) {
  return Status::error("idempotency key source " + quoted(text) + ": " + std::string(what));
}

bool valid_json_path(std::string_view path) {
  if (path.empty()) return false;
  size_t segment = 0;
  for (unsigned char c : path) {
    if (c == '.') {
      if (segment == 0) return false;
      segment = 0;
    } else if (is_json_path_char(c)) {
      ++segment;
    } else {
      return false;
    }
  }
  return segment > 0;
}

bool valid_field_name(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name) {
    if (is_control(c) || c == ' ' || c == '&' || c == '=') return false;
  }
  return true;
}

}  // namespace

Result<KeySource> parse_source(std::string_view text) {
  KeySource src;
  if (text == "body") {
    src.kind = KeySource::Kind::kBody;
    return src;
  }
  size_t colon = text.find(':');
  std::string_view prefix = text.substr(0, colon);
  std::string_view arg = colon == std::string_view::npos ? std::string_view() : text.substr(colon + 1);
  if (colon == std::string_view::npos || !(prefix == "header" || prefix == "json" || prefix == "form" ||
                                           prefix == "query" || prefix == "body")) {
    return Status::error("unknown idempotency key source " + quoted(text) +
                         "; use header:NAME, json:FIELD, form:FIELD, query:FIELD or body");
  }
  if (prefix == "body") return source_error(text, "\"body\" takes no argument");
  if (prefix == "header") {
    if (arg.empty()) return source_error(text, "missing header name after \"header:\"");
    for (unsigned char c : arg) {
      if (!is_tchar(c)) return source_error(text, quoted(arg) + " is not a valid header name");
    }
    src.kind = KeySource::Kind::kHeader;
  } else if (prefix == "json") {
    if (arg.empty()) return source_error(text, "missing field after \"json:\"");
    if (!valid_json_path(arg)) {
      return source_error(text, "a JSON path is field names of letters, digits, '_' and '-' separated by '.'");
    }
    src.kind = KeySource::Kind::kJson;
  } else {
    if (arg.empty()) return source_error(text, "missing field name after \"" + std::string(prefix) + ":\"");
    if (!valid_field_name(arg)) {
      return source_error(text, "a field name may not contain spaces, control characters, '&' or '='");
    }
    src.kind = prefix == "form" ? KeySource::Kind::kForm : KeySource::Kind::kQuery;
  }
  src.name.assign(arg);
  return src;
}

bool needs_body(const std::vector<KeySource>& sources) {
  for (const KeySource& s : sources) {
    if (s.kind == KeySource::Kind::kJson || s.kind == KeySource::Kind::kForm || s.kind == KeySource::Kind::kBody) {
      return true;
    }
  }
  return false;
}

}  // namespace fg::idempotency
