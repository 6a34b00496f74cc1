// Idempotency key sources under arbitrary bytes. The input is split at its first three
// newlines into: a source spec (parse_source), a header value, a query string and a body.
// Whatever the bytes, extraction must yield a key that satisfies the documented rules
// (1..255 bytes, no control bytes) or none, and fingerprints are 32 lowercase hex chars.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "idempotency/key_source.h"

namespace {

namespace idem = fg::idempotency;

std::string_view next_part(std::string_view* rest) {
  const size_t nl = rest->find('\n');
  std::string_view part = rest->substr(0, nl);
  rest->remove_prefix(nl == std::string_view::npos ? rest->size() : nl + 1);
  return part;
}

void check_hex32(const std::string& s) {
  FUZZ_CHECK(s.size() == 32);
  for (char c : s) FUZZ_CHECK((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
}

void check_extract(const std::vector<idem::KeySource>& sources, const fg::http::RequestHead& head,
                   std::string_view body) {
  std::string key;
  const idem::Extract e = idem::extract_key(sources, head, body, &key);
  if (e != idem::Extract::kFound) return;
  FUZZ_CHECK(!key.empty() && key.size() <= 255);
  for (char ch : key) {
    const unsigned char c = static_cast<unsigned char>(ch);
    FUZZ_CHECK(c >= 0x20 && c != 0x7F);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  const std::string_view spec = next_part(&rest);
  const std::string_view header = next_part(&rest);
  const std::string_view query = next_part(&rest);
  const std::string_view body = rest;

  fg::http::RequestHead head;
  head.method = "POST";
  head.target = "/pay?";
  head.target.append(query);
  head.headers.push_back({"Idempotency-Key", std::string(header)});
  head.headers.push_back({"X-Key", std::string(header)});

  // Every kind of source on the same request, and the fuzzed spec on its own.
  std::vector<idem::KeySource> all;
  for (std::string_view s : {"header:Idempotency-Key", "json:out_trade_no", "json:order.id", "form:out_trade_no",
                             "query:k", "body"}) {
    fg::Result<idem::KeySource> r = idem::parse_source(s);
    FUZZ_CHECK(r.is_ok());
    check_extract({r.value()}, head, body);
    all.push_back(r.value());
  }
  check_extract(all, head, body);
  if (fg::Result<idem::KeySource> r = idem::parse_source(spec); r.is_ok()) {
    check_extract({r.value()}, head, body);
  } else {
    FUZZ_CHECK(!r.status().message().empty());
  }
  check_hex32(idem::fingerprint(head.method, head.path(), body));
  check_hex32(idem::digest_hex(body));
  return 0;
}
