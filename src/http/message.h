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

// Case-insensitive ASCII comparison for header names and tokens.
bool iequals(std::string_view a, std::string_view b);

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
