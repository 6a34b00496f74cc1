// Pulling an idempotency key out of a request (SPEC §5) and fingerprinting requests.
// Pure functions over the request head and body: no libuv, no Redis. The source
// specs themselves are parsed in key_spec.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "floodgate/status.h"
#include "http/message.h"
#include "idempotency/key_spec.h"

namespace fg::idempotency {

enum class Extract {
  kFound,    // key holds the value
  kAbsent,   // no source produced a value
  kInvalid,  // a source produced a value that is not a valid key (too long, control bytes)
};

// The first source that yields a value, in order. Header values may be bare or an
// RFC 8941 sf-string ("..." with \" and \\ escapes). JSON: a top-level field or a dotted
// path into nested objects; string values are used as-is, numbers by their text; an
// invalid or non-JSON body simply yields nothing for that source (never an error).
// Form: application/x-www-form-urlencoded, percent- and '+'-decoded. Query: same
// decoding on the target's query. Body: hex digest of the whole body.
// Valid keys: 1..255 bytes, no control bytes (0x00-0x1F, 0x7F).
Extract extract_key(const std::vector<KeySource>& sources, const http::RequestHead& head, std::string_view body,
                    std::string* key);

// Fingerprint of method, path (the target without its query) and body:
// 32 lowercase hex chars (128 bits, two independent 64-bit hashes).
std::string fingerprint(std::string_view method, std::string_view path, std::string_view body);

// Hex digest (32 chars) of arbitrary bytes, the same hash family as fingerprint().
std::string digest_hex(std::string_view data);

}  // namespace fg::idempotency
