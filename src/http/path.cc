// Path canonicalisation (see path.h). One pass over the bytes: each segment is decoded
// into the output, then dropped again when it turns out to be a dot segment or an empty
// segment to merge. Popping a segment truncates the output at its last '/', so the
// output never needs a second buffer.
#include "http/path.h"

#include <cstdint>

namespace fg::http {

namespace {

constexpr char kHexUpper[] = "0123456789ABCDEF";

int hex_value(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

bool is_unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

// Well-formedness of the bytes that percent-encodings >= 0x80 spell (RFC 3629 table):
// some decoders turn an overlong `%C0%AF` into '/', so only shortest forms pass.
class Utf8Check {
 public:
  // Feeds one decoded byte >= 0x80; false when the sequence is not valid UTF-8.
  bool feed(unsigned char c) {
    if (need_ == 0) {
      lo_ = 0x80;
      hi_ = 0xBF;
      if (c >= 0xC2 && c <= 0xDF) {
        need_ = 1;
      } else if (c >= 0xE0 && c <= 0xEF) {
        need_ = 2;
        if (c == 0xE0) lo_ = 0xA0;  // overlong below U+0800
        if (c == 0xED) hi_ = 0x9F;  // UTF-16 surrogates
      } else if (c >= 0xF0 && c <= 0xF4) {
        need_ = 3;
        if (c == 0xF0) lo_ = 0x90;  // overlong below U+10000
        if (c == 0xF4) hi_ = 0x8F;  // above U+10FFFF
      } else {
        return false;  // a continuation byte without a lead, C0/C1 (overlong) or F5..FF
      }
      return true;
    }
    if (c < lo_ || c > hi_) return false;
    lo_ = 0x80;
    hi_ = 0xBF;
    --need_;
    return true;
  }
  // True when no multi-byte sequence is open.
  bool complete() const { return need_ == 0; }

 private:
  int need_ = 0;
  unsigned char lo_ = 0x80;
  unsigned char hi_ = 0xBF;
};

// Decodes one segment (the bytes between two '/') and appends it to `out`.
std::string_view append_segment(std::string_view seg, std::string* out) {
  Utf8Check utf8;
  for (size_t i = 0; i < seg.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(seg[i]);
    if (c == '%') {
      const int hi = i + 1 < seg.size() ? hex_value(seg[i + 1]) : -1;
      const int lo = i + 2 < seg.size() ? hex_value(seg[i + 2]) : -1;
      if (hi < 0 || lo < 0) return "invalid percent-encoding in path";
      i += 2;
      const unsigned char v = static_cast<unsigned char>(hi * 16 + lo);
      if (v >= 0x80) {
        if (!utf8.feed(v)) return "percent-encoded bytes in path are not valid UTF-8";
      } else if (!utf8.complete()) {
        return "percent-encoded bytes in path are not valid UTF-8";
      }
      if (v == '/') return "encoded '/' in path";
      if (v == '\\') return "encoded '\\' in path";
      if (v == 0) return "encoded NUL in path";
      if (is_unreserved(v)) {
        out->push_back(static_cast<char>(v));
      } else {
        out->push_back('%');
        out->push_back(kHexUpper[v >> 4]);
        out->push_back(kHexUpper[v & 0xF]);
      }
      continue;
    }
    if (!utf8.complete()) return "percent-encoded bytes in path are not valid UTF-8";
    if (c == '\\') return "'\\' in path";
    if (c == ';') return "path parameter (';') in path";
    if (c == '#') return "fragment in request-target";
    if (c >= 0x80) return "non-ASCII byte in request-target";
    if (c <= 0x20 || c == 0x7F) return "space or control byte in path";
    out->push_back(static_cast<char>(c));
  }
  if (!utf8.complete()) return "percent-encoded bytes in path are not valid UTF-8";
  return {};
}

// Bytes append_segment copies as they are (no '%', '\\', ';', '#', space, control or
// non-ASCII byte).
struct PlainPathBytes {
  bool ok[256];
  constexpr PlainPathBytes() : ok() {
    for (int c = 0x21; c < 0x7f; ++c) ok[c] = c != '%' && c != '\\' && c != ';' && c != '#';
  }
};
constexpr PlainPathBytes kPlainPath;

// True when `path` is already canonical in the common, cheap way: only plain bytes and no
// segment that is empty or starts with '.' (so no dot segment and no slash to merge). A
// path that is not is still canonicalised by the full pass, which agrees on those that are.
bool plainly_canonical(std::string_view path) {
  char prev = 0;
  for (const char ch : path) {
    if (!kPlainPath.ok[static_cast<unsigned char>(ch)]) return false;
    if (prev == '/' && (ch == '/' || ch == '.')) return false;
    prev = ch;
  }
  return true;
}

}  // namespace

std::string_view canonicalize_path(std::string_view path, bool merge_slashes, std::string* out) {
  out->clear();
  if (path.empty() || path.front() != '/') return "path does not start with '/'";
  if (plainly_canonical(path)) {
    out->assign(path);
    return {};
  }
  out->reserve(path.size());
  std::string_view rest = path.substr(1);
  for (;;) {
    const size_t slash = rest.find('/');
    const bool last = slash == std::string_view::npos;
    const size_t mark = out->size();
    out->push_back('/');
    std::string_view why = append_segment(rest.substr(0, slash), out);
    if (!why.empty()) return why;
    const std::string_view seg = std::string_view(*out).substr(mark + 1);
    if (seg == "..") {
      out->resize(mark);
      const size_t parent = out->rfind('/');
      if (parent == std::string::npos) return "'..' above the root in path";
      out->resize(parent);
    } else if (seg == "." || (seg.empty() && (merge_slashes || last))) {
      out->resize(mark);
    }
    if (last) {
      // A path ending in "/", "/." or "/.." names a directory: keep the final slash so
      // that "/a/b/.." is "/a/" as RFC 3986 §5.2.4 has it.
      if (seg.empty() || seg == "." || seg == "..") out->push_back('/');
      break;
    }
    rest.remove_prefix(slash + 1);
  }
  if (out->empty()) out->push_back('/');
  return {};
}

std::string_view check_target_bytes(std::string_view target) {
  for (char ch : target) {
    if (ch == '#') return "fragment in request-target";
    if (static_cast<unsigned char>(ch) >= 0x80) return "non-ASCII byte in request-target";
  }
  return {};
}

std::string_view canonicalize_target(std::string_view target, bool merge_slashes, std::string* out) {
  std::string_view why = check_target_bytes(target);
  if (!why.empty()) return why;
  const size_t q = target.find('?');
  why = canonicalize_path(target.substr(0, q), merge_slashes, out);
  if (!why.empty()) return why;
  if (q != std::string_view::npos) out->append(target.substr(q));
  return {};
}

bool is_valid_host(std::string_view host) {
  std::string_view port;
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    bool colon = false;
    for (char ch : host.substr(1, close - 1)) {
      if (ch == ':') {
        colon = true;
      } else if (ch != '.' && hex_value(ch) < 0) {
        return false;
      }
    }
    if (!colon) return false;
    std::string_view after = host.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return false;
      port = after.substr(1);
      if (port.empty()) return false;
    }
  } else {
    const size_t colon = host.find(':');
    std::string_view name = host.substr(0, colon);
    if (name.empty()) return false;
    for (char ch : name) {
      const unsigned char c = static_cast<unsigned char>(ch);
      // reg-name = unreserved / sub-delims, without ',' and without pct-encoded.
      if (!is_unreserved(c) && std::string_view("!$&'()*+;=").find(ch) == std::string_view::npos) return false;
    }
    if (colon != std::string_view::npos) {
      port = host.substr(colon + 1);
      if (port.empty()) return false;
    }
  }
  if (port.size() > 5) return false;
  uint32_t n = 0;
  for (char ch : port) {
    if (ch < '0' || ch > '9') return false;
    n = n * 10 + static_cast<uint32_t>(ch - '0');
  }
  return n <= 65535;
}

}  // namespace fg::http
