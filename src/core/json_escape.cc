#include "core/json_escape.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fg::json {
namespace {

constexpr char kHex[] = "0123456789abcdef";

constexpr bool needs_escape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\' || c == 0x7f; }

// Bytes copied as they are: 1 for every byte that needs no escape and is ASCII. One
// table load per byte keeps the common case (codes, ids, fixed messages) at a few
// instructions a byte.
struct PlainTable {
  bool ascii[256];
  constexpr PlainTable() : ascii() {
    for (int c = 0; c < 256; ++c) ascii[c] = c < 0x80 && !needs_escape(static_cast<unsigned char>(c));
  }
};
constexpr PlainTable kPlain;

// Length of the valid UTF-8 sequence starting at s[i] (2 to 4), or 0 when there is none:
// overlong forms, surrogates and code points above U+10FFFF are rejected.
size_t utf8_sequence(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
      (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return n;
}

// True when none of the 8 bytes in `w` needs escaping and all are ASCII: no byte below
// 0x20, no '"', '\\' or 0x7f, no high bit. The classic "has a byte less than n" and
// "has a zero byte" word tests (exact as to whether such a byte exists).
inline bool plain_word(uint64_t w) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  auto has_zero = [](uint64_t v) { return (v - kOnes) & ~v & kHigh; };
  uint64_t bad = ((w - kOnes * 0x20) & ~w & kHigh) | has_zero(w ^ (kOnes * '"')) |
                 has_zero(w ^ (kOnes * '\\')) | has_zero(w ^ (kOnes * 0x7f)) | (w & kHigh);
  return bad == 0;
}

void append_hex_escape(std::string& out, unsigned char c) {
  out.append("\\u00");
  out.push_back(kHex[c >> 4]);
  out.push_back(kHex[c & 0xf]);
}

}  // namespace

void append_escaped(std::string& out, std::string_view s, InvalidUtf8 invalid) {
  const bool check_utf8 = invalid == InvalidUtf8::kEscape;
  // Fast path: most strings (codes, ids, paths, fixed messages) need no escaping at all,
  // so they are copied in one append without reserving or walking them twice.
  const auto* bytes = reinterpret_cast<const unsigned char*>(s.data());
  size_t clean = 0;
  for (uint64_t w; clean + 8 <= s.size(); clean += 8) {
    std::memcpy(&w, bytes + clean, 8);
    if (!plain_word(w)) break;
  }
  while (clean < s.size() && kPlain.ascii[bytes[clean]]) clean++;
  if (!check_utf8) {
    while (clean < s.size() && (bytes[clean] >= 0x80 || kPlain.ascii[bytes[clean]])) clean++;
  }
  out.append(s.data(), clean);
  if (clean == s.size()) return;
  out.reserve(out.size() + (s.size() - clean) + 8);
  for (size_t i = clean; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      default:
        if (c < 0x20 || c == 0x7f) {
          append_hex_escape(out, c);
        } else if (c >= 0x80 && check_utf8) {
          if (const size_t n = utf8_sequence(s, i); n > 0) {
            out.append(s.data() + i, n);
            i += n;
            continue;
          }
          append_hex_escape(out, c);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
}

}  // namespace fg::json
