// The one canonical spelling of a request path, so that route matching, the route's
// policies and the upstream all see the same resource however a client spells it; and
// the byte rules for request-targets and Host values. Pure functions over bytes.
#pragma once

#include <string>
#include <string_view>

namespace fg::http {

// Canonicalises an origin-form path (no query, starts with '/'):
//  - %XX of an unreserved character (ALPHA DIGIT - . _ ~) is decoded, so `%6f` is `o`
//    and `%2e` is `.`; every other %XX is kept encoded with uppercase hex digits;
//    decoding happens once only: `%252e` stays `%252e` (an encoded '%' then "2e");
//  - dot segments (`.`, `..`, also spelled `%2e`, `.%2E`, ...) are resolved;
//  - repeated slashes are merged into one when `merge_slashes` is set.
// Refused (the path has no unambiguous meaning, or origins read it differently):
// `%2F` (an encoded '/'), '\' raw or `%5C`, `%00`, a '%' not followed by two hex digits,
// percent-encoded bytes >= 0x80 that are not well-formed UTF-8 (overlong `%C0%AF`,
// surrogates, truncated sequences), a `..` that would climb above the root, ';' (path
// parameters, which some origins strip before routing), raw bytes >= 0x80, '#',
// whitespace and control bytes.
// Returns "" and sets `*out` on success; otherwise a short reason ("encoded '/' in
// path", ...) with static storage, and `*out` is unspecified. Any thread.
std::string_view canonicalize_path(std::string_view path, bool merge_slashes, std::string* out);

// "" when the request-target has neither a fragment ('#') nor a raw byte >= 0x80
// anywhere (path or query); otherwise why not. RFC 9112 §3.2 allows neither.
std::string_view check_target_bytes(std::string_view target);

// Canonicalises an origin-form request-target: check_target_bytes(), then the path as
// above; the query (from the first '?') is kept byte for byte. Same return convention.
std::string_view canonicalize_target(std::string_view target, bool merge_slashes, std::string* out);

// RFC 3986 host [ ":" port ] as a Host header value or an absolute-form authority, with
// the ambiguous parts refused: empty, a comma (a list to some readers), '%', userinfo
// ('@'), '/', whitespace, bytes >= 0x80, an empty or non-numeric port or one above
// 65535. IP literals: "[" hex digits, ':' and '.' "]" (no zone id, no IPvFuture).
bool is_valid_host(std::string_view host);

}  // namespace fg::http
