// Where an idempotency key comes from, as configured (SPEC §5): the parsed form of
// "header:Idempotency-Key", "json:order.id", ... Value code only (no simdjson, no
// HTTP model), so the config loader can check sources without the extraction code.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "floodgate/status.h"

namespace fg::idempotency {

struct KeySource {
  enum class Kind { kHeader, kJson, kForm, kQuery, kBody };
  Kind kind = Kind::kHeader;
  std::string name;  // header name, dotted JSON path, form field, query parameter; empty for kBody
};

// Parses "header:Idempotency-Key", "json:out_trade_no", "json:order.id", "form:out_trade_no",
// "query:k", "body". Error message says what is wrong (used by the config loader).
Result<KeySource> parse_source(std::string_view text);

// True when some source needs the request body (json/form/body).
bool needs_body(const std::vector<KeySource>& sources);

}  // namespace fg::idempotency
