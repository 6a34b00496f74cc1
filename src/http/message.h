// HTTP/1.x message heads as value types, shared by the request and response parsers
// and the serializers. Header names keep the case they arrived with; lookups ignore case.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fg::http {

struct Header {
  std::string name;
  std::string value;  // leading/trailing OWS removed
};

// Case-insensitive ASCII comparison for header names and tokens. Inline: it runs for
// every header of every message, mostly to find that the lengths differ.
// ASCII-only folding: names and tokens are ASCII by grammar, and locale-aware tolower()
// would be both slower and wrong for bytes >= 0x80.
inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const unsigned char x = static_cast<unsigned char>(a[i]);
    const unsigned char y = static_cast<unsigned char>(b[i]);
    if (x == y) continue;
    if ((x | 0x20) != (y | 0x20) || (x | 0x20) < 'a' || (x | 0x20) > 'z') return false;
  }
  return true;
}

// First header named `name` (case-insensitive), or nullptr.
const Header* find_header(const std::vector<Header>& headers, std::string_view name);

enum class BodyKind { kNone, kContentLength, kChunked, kUntilClose };

struct RequestHead {
  std::string method;   // as sent, e.g. "GET"
  std::string target;   // request-target as sent (path + optional query)
  int version_major = 1;
  int version_minor = 1;
  std::vector<Header> headers;
  BodyKind body = BodyKind::kNone;  // requests never use kUntilClose
  uint64_t content_length = 0;      // valid when body == kContentLength
  bool keep_alive = true;           // from version and Connection header
  bool expect_continue = false;     // "Expect: 100-continue" was present
  std::string host;                 // value of the single Host header ("" for HTTP/1.0 without one)

  std::string_view path() const;    // target without the query
  bool is_head() const { return method == "HEAD"; }
};

struct ResponseHead {
  int status = 0;
  std::string reason;
  int version_major = 1;
  int version_minor = 1;
  std::vector<Header> headers;
  BodyKind body = BodyKind::kNone;
  uint64_t content_length = 0;
  bool keep_alive = true;  // the upstream allows reusing the connection after this response
};

}  // namespace fg::http
