// Path canonicalisation and Host validation under arbitrary bytes. For both settings of
// merge_slashes an accepted path must be canonical: it starts with '/', canonicalising it
// again changes nothing, it has no "." or ".." segment, no "//" when merging, no '\',
// ';' or encoded '/', '\', NUL, every '%' is followed by two uppercase hex digits and
// never encodes an unreserved character. A target keeps its query byte for byte.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "http/path.h"

namespace {

bool is_unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

int upper_hex(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

void check_canonical(std::string_view p, bool merge) {
  FUZZ_CHECK(!p.empty() && p.front() == '/');
  std::string again;
  FUZZ_CHECK(fg::http::canonicalize_path(p, merge, &again).empty());
  FUZZ_CHECK(again == p);
  if (merge) FUZZ_CHECK(p.find("//") == std::string_view::npos);
  FUZZ_CHECK(p.find('\\') == std::string_view::npos);
  FUZZ_CHECK(p.find(';') == std::string_view::npos);
  // Segment by segment: no dot segments (a trailing "/." or "/.." would be one too).
  size_t start = 1;
  for (;;) {
    const size_t slash = p.find('/', start);
    const std::string_view seg = p.substr(start, slash == std::string_view::npos ? std::string_view::npos
                                                                                  : slash - start);
    FUZZ_CHECK(seg != "." && seg != "..");
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  for (size_t i = 0; i < p.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(p[i]);
    FUZZ_CHECK(c > 0x20 && c < 0x7F);
    if (c != '%') continue;
    FUZZ_CHECK(i + 2 < p.size());
    const int hi = upper_hex(p[i + 1]);
    const int lo = upper_hex(p[i + 2]);
    FUZZ_CHECK(hi >= 0 && lo >= 0);
    const int v = hi * 16 + lo;
    FUZZ_CHECK(v != '/' && v != '\\' && v != 0 && !is_unreserved(static_cast<unsigned char>(v)));
    i += 2;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string out;
  for (bool merge : {true, false}) {
    const std::string_view why = fg::http::canonicalize_path(input, merge, &out);
    if (why.empty()) {
      check_canonical(out, merge);
      FUZZ_CHECK(out.size() <= input.size());
    }
    const std::string_view twhy = fg::http::canonicalize_target(input, merge, &out);
    if (twhy.empty()) {
      const size_t q = input.find('?');
      const size_t oq = out.find('?');
      FUZZ_CHECK((q == std::string_view::npos) == (oq == std::string::npos));
      if (q != std::string_view::npos) FUZZ_CHECK(std::string_view(out).substr(oq) == input.substr(q));
      check_canonical(std::string_view(out).substr(0, oq), merge);
    }
  }
  if (fg::http::is_valid_host(input)) {
    FUZZ_CHECK(!input.empty());
    for (char ch : input) {
      const unsigned char c = static_cast<unsigned char>(ch);
      FUZZ_CHECK(c > 0x20 && c < 0x7F && ch != ',' && ch != '@' && ch != '/' && ch != '\\' && ch != '%');
    }
  }
  return 0;
}
