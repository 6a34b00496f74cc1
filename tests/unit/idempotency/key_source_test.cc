// Idempotency key sources: parsing the configured list, extracting keys from headers,
// JSON and form bodies, the query and the whole body, and the fingerprint hash.
#include <catch2/catch.hpp>

#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include "idempotency/key_source.h"

using fg::http::Header;
using fg::http::RequestHead;
using fg::idempotency::digest_hex;
using fg::idempotency::Extract;
using fg::idempotency::extract_key;
using fg::idempotency::fingerprint;
using fg::idempotency::KeySource;
using fg::idempotency::needs_body;
using fg::idempotency::parse_source;

namespace {

KeySource source(std::string_view text) {
  auto r = parse_source(text);
  INFO(std::string(text) << " -> " << r.message());
  REQUIRE(r.is_ok());
  return *r;
}

std::vector<KeySource> sources(std::initializer_list<std::string_view> texts) {
  std::vector<KeySource> out;
  for (std::string_view t : texts) out.push_back(source(t));
  return out;
}

std::string source_error(std::string_view text) {
  auto r = parse_source(text);
  INFO(std::string(text));
  REQUIRE_FALSE(r.is_ok());
  REQUIRE_FALSE(r.message().empty());
  return r.message();
}

RequestHead head(std::string target = "/pay", std::vector<Header> headers = {}) {
  RequestHead h;
  h.method = "POST";
  h.target = std::move(target);
  h.headers = std::move(headers);
  return h;
}

struct Outcome {
  Extract result;
  std::string key;
};

Outcome extract(std::initializer_list<std::string_view> texts, const RequestHead& h, std::string_view body = {}) {
  Outcome o{Extract::kAbsent, "sentinel"};
  o.result = extract_key(sources(texts), h, body, &o.key);
  return o;
}

// The key a request yields, or a marker for absent / invalid, so failures print readably.
std::string key_of(std::initializer_list<std::string_view> texts, const RequestHead& h, std::string_view body = {}) {
  Outcome o = extract(texts, h, body);
  switch (o.result) {
    case Extract::kFound:
      return o.key;
    case Extract::kAbsent:
      REQUIRE(o.key.empty());
      return "<absent>";
    case Extract::kInvalid:
      REQUIRE(o.key.empty());
      return "<invalid>";
  }
  return "<unreachable>";
}

std::string header_key(std::string value) {
  return key_of({"header:Idempotency-Key"}, head("/pay", {{"Idempotency-Key", std::move(value)}}));
}

std::string json_key(std::string_view path, std::string_view body) {
  std::string src = "json:" + std::string(path);
  return key_of({src}, head(), body);
}

std::string form_key(std::string_view field, std::string_view body) {
  std::string src = "form:" + std::string(field);
  return key_of({src}, head(), body);
}

std::string query_key(std::string_view field, std::string target) {
  std::string src = "query:" + std::string(field);
  return key_of({src}, head(std::move(target)));
}

bool is_lower_hex32(const std::string& s) {
  if (s.size() != 32) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("parse_source accepts every source kind", "[idempotency]") {
  KeySource h = source("header:Idempotency-Key");
  CHECK(h.kind == KeySource::Kind::kHeader);
  CHECK(h.name == "Idempotency-Key");

  KeySource j = source("json:out_trade_no");
  CHECK(j.kind == KeySource::Kind::kJson);
  CHECK(j.name == "out_trade_no");

  KeySource nested = source("json:order.id");
  CHECK(nested.kind == KeySource::Kind::kJson);
  CHECK(nested.name == "order.id");
  CHECK(source("json:a-b.C_9.x").name == "a-b.C_9.x");

  KeySource f = source("form:out_trade_no");
  CHECK(f.kind == KeySource::Kind::kForm);
  CHECK(f.name == "out_trade_no");

  KeySource q = source("query:k");
  CHECK(q.kind == KeySource::Kind::kQuery);
  CHECK(q.name == "k");

  KeySource b = source("body");
  CHECK(b.kind == KeySource::Kind::kBody);
  CHECK(b.name.empty());

  CHECK(source("header:X-Request-Id!#$%&'*+.^_`|~").kind == KeySource::Kind::kHeader);
  CHECK(source("form:a.b[c]").name == "a.b[c]");
  CHECK(source("query:%E4%B8%AD").name == "%E4%B8%AD");
}

TEST_CASE("parse_source rejects malformed sources with a helpful message", "[idempotency]") {
  std::string unknown = source_error("cookie:k");
  CHECK(unknown ==
        "unknown idempotency key source \"cookie:k\"; use header:NAME, json:FIELD, form:FIELD, query:FIELD or body");
  CHECK(source_error("").find("unknown idempotency key source \"\"") != std::string::npos);
  CHECK(source_error("Idempotency-Key").find("unknown") != std::string::npos);
  CHECK(source_error("Header:Idempotency-Key").find("unknown") != std::string::npos);
  CHECK(source_error("BODY").find("unknown") != std::string::npos);
  CHECK(source_error(" body").find("unknown") != std::string::npos);

  CHECK(source_error("body:x").find("takes no argument") != std::string::npos);
  CHECK(source_error("body:").find("takes no argument") != std::string::npos);

  CHECK(source_error("header:").find("missing header name") != std::string::npos);
  CHECK(source_error("header:Idempotency Key").find("not a valid header name") != std::string::npos);
  CHECK(source_error("header:Key:x").find("not a valid header name") != std::string::npos);
  CHECK(source_error("header:K\"ey").find("not a valid header name") != std::string::npos);

  CHECK(source_error("json:").find("missing field") != std::string::npos);
  for (std::string_view bad : {"json:.a", "json:a.", "json:a..b", "json:a b", "json:a[0]", "json:a/b", "json:é"}) {
    CHECK(source_error(bad).find("JSON path") != std::string::npos);
  }

  CHECK(source_error("form:").find("missing field name after \"form:\"") != std::string::npos);
  CHECK(source_error("query:").find("missing field name after \"query:\"") != std::string::npos);
  for (std::string_view bad : {"form:a b", "form:a&b", "form:a=b", "query:a=", "query:&", "query:a\tb"}) {
    CHECK(source_error(bad).find("field name") != std::string::npos);
  }

  // Control bytes in the configured text are escaped in the message.
  std::string with_control = source_error(std::string_view("header:a\x01z", 9));
  CHECK(with_control.find("\\x01") != std::string::npos);
  CHECK(with_control.find('\x01') == std::string::npos);
}

TEST_CASE("needs_body is true only for json, form and body sources", "[idempotency]") {
  CHECK_FALSE(needs_body({}));
  CHECK_FALSE(needs_body(sources({"header:Idempotency-Key", "query:k"})));
  CHECK(needs_body(sources({"header:Idempotency-Key", "json:id"})));
  CHECK(needs_body(sources({"form:id"})));
  CHECK(needs_body(sources({"query:k", "body"})));
}

TEST_CASE("header keys: bare values, case-insensitive names, OWS", "[idempotency]") {
  CHECK(header_key("abc-123") == "abc-123");
  CHECK(key_of({"header:idempotency-key"}, head("/", {{"IDEMPOTENCY-KEY", "k1"}})) == "k1");
  CHECK(key_of({"header:Idempotency-Key"}, head("/", {{"idempotency-key", "k2"}})) == "k2");
  CHECK(header_key("  spaced\t ") == "spaced");
  CHECK(header_key("inner space kept") == "inner space kept");
  // A bare value that merely contains quotes is not an sf-string.
  CHECK(header_key("a\"b\"") == "a\"b\"");
  // The first of repeated headers is used, as everywhere else in the gateway.
  CHECK(key_of({"header:K"}, head("/", {{"K", "first"}, {"K", "second"}})) == "first");
  CHECK(key_of({"header:Idempotency-Key"}, head("/", {{"Other", "x"}})) == "<absent>");
  CHECK(header_key("") == "<invalid>");
  CHECK(header_key("   ") == "<invalid>");
}

TEST_CASE("header keys: RFC 8941 sf-strings", "[idempotency]") {
  CHECK(header_key("\"abc\"") == "abc");
  CHECK(header_key("  \"abc def\"  ") == "abc def");
  CHECK(header_key(R"("say \"hi\"")") == "say \"hi\"");
  CHECK(header_key(R"("back\\slash")") == "back\\slash");
  CHECK(header_key(R"("\\")") == "\\");

  // Malformed sf-strings are invalid keys, never taken literally.
  CHECK(header_key("\"") == "<invalid>");
  CHECK(header_key("\"unterminated") == "<invalid>");
  CHECK(header_key(R"("bad \n escape")") == "<invalid>");
  CHECK(header_key(R"("trailing backslash\")") == "<invalid>");
  CHECK(header_key("\"abc\"def") == "<invalid>");
  CHECK(header_key("\"a\" \"b\"") == "<invalid>");
  CHECK(header_key("\"tab\there\"") == "<invalid>");
  CHECK(header_key("\"caf\xc3\xa9\"") == "<invalid>");  // sf-strings are ASCII only
  CHECK(header_key("\"del\x7f\"") == "<invalid>");
  // An empty sf-string is present but empty.
  CHECK(header_key("\"\"") == "<invalid>");
}

TEST_CASE("json keys: top-level and dotted paths", "[idempotency]") {
  CHECK(json_key("out_trade_no", R"({"out_trade_no":"T-1001","amount":5})") == "T-1001");
  CHECK(json_key("order.id", R"({"order":{"id":"o-7","items":[1,2]}})") == "o-7");
  CHECK(json_key("a.b.c", R"({"a":{"b":{"c":"deep"}}})") == "deep");
  CHECK(json_key("id", " \n\t{ \"id\" : \"ws\" } \n") == "ws");
  CHECK(json_key("with-dash", R"({"with-dash":"d"})") == "d");
  // Duplicate members: the first wins.
  CHECK(json_key("id", R"({"id":"one","id":"two"})") == "one");
  // The path walks objects only.
  CHECK(json_key("order.id", R"({"order":[{"id":"x"}]})") == "<absent>");
  CHECK(json_key("order.id", R"({"order":"id"})") == "<absent>");
  CHECK(json_key("order.id", R"({"order":{"ID":"x"}})") == "<absent>");
  CHECK(json_key("order", R"({"order.id":"x"})") == "<absent>");
}

TEST_CASE("json keys: numbers by their text, other types absent", "[idempotency]") {
  CHECK(json_key("id", R"({"id":42})") == "42");
  CHECK(json_key("id", R"({"id":0})") == "0");
  CHECK(json_key("id", R"({"id":-17})") == "-17");
  CHECK(json_key("id", R"({"id":-9223372036854775808})") == "-9223372036854775808");
  CHECK(json_key("id", R"({"id":9223372036854775807})") == "9223372036854775807");
  CHECK(json_key("id", R"({"id":12345678901234567890})") == "12345678901234567890");
  CHECK(json_key("id", R"({"id":18446744073709551615})") == "18446744073709551615");
  // Doubles: the shortest text that round-trips.
  CHECK(json_key("id", R"({"id":1.5})") == "1.5");
  CHECK(json_key("id", R"({"id":1.50})") == "1.5");
  CHECK(json_key("id", R"({"id":0.1})") == "0.1");
  CHECK(json_key("id", R"({"id":-2.25})") == "-2.25");
  CHECK(json_key("id", R"({"id":1e2})") == "100");
  CHECK(json_key("id", R"({"id":1.0})") == "1");
  CHECK(json_key("id", R"({"id":1e300})") == "1e+300");

  CHECK(json_key("id", R"({"id":true})") == "<absent>");
  CHECK(json_key("id", R"({"id":false})") == "<absent>");
  CHECK(json_key("id", R"({"id":null})") == "<absent>");
  CHECK(json_key("id", R"({"id":[1]})") == "<absent>");
  CHECK(json_key("id", R"({"id":{}})") == "<absent>");
  // An integer beyond uint64 makes the whole document unparseable for simdjson.
  CHECK(json_key("id", R"({"id":"k","n":123456789012345678901234567890})") == "<absent>");
}

TEST_CASE("json keys: string escapes and unicode", "[idempotency]") {
  CHECK(json_key("id", R"({"id":"a\"b\\c\/d"})") == "a\"b\\c/d");
  CHECK(json_key("id", R"({"id":"caf\u00e9"})") == "caf\xc3\xa9");
  CHECK(json_key("id", "{\"id\":\"\xe4\xb8\xad\xe6\x96\x87\"}") == "\xe4\xb8\xad\xe6\x96\x87");
  CHECK(json_key("id", R"({"id":"\ud83d\ude00"})") == "\xf0\x9f\x98\x80");
  // Member names are compared after unescaping.
  CHECK(json_key("id", R"({"\u0069d":"escaped-name"})") == "escaped-name");
  // Escapes that decode to control bytes make the key invalid.
  CHECK(json_key("id", R"({"id":"line\nbreak"})") == "<invalid>");
  CHECK(json_key("id", R"({"id":"nul\u0000"})") == "<invalid>");
  CHECK(json_key("id", R"({"id":"del\u007f"})") == "<invalid>");
  CHECK(json_key("id", R"({"id":""})") == "<invalid>");
}

TEST_CASE("json keys: broken or non-object bodies yield nothing", "[idempotency]") {
  for (std::string_view body : {"", "{bad", "{", "}", "[1,2]", "null", "\"id\"", "42", "true",
                                R"({"id":"x")", R"({"id":"x"}})", R"({"id":"x"} {"id":"y"})",
                                R"({"id":"x",})", R"({'id':'x'})", "id=x", "\xff\xfe{}"}) {
    INFO("body: " << body);
    CHECK(json_key("id", body) == "<absent>");
  }
  // Invalid UTF-8 inside a string fails the whole document.
  CHECK(json_key("id", "{\"id\":\"a\xc3\x28\"}") == "<absent>");
  // A NUL byte inside the body is not JSON.
  CHECK(json_key("id", std::string_view("{\"id\":\"a\"}\0", 11)) == "<absent>");

  SECTION("1000 levels of nesting parse; the value is an object, so absent") {
    std::string body;
    for (int i = 0; i < 1000; ++i) body += "{\"a\":";
    body += "\"leaf\"";
    for (int i = 0; i < 1000; ++i) body += "}";
    CHECK(json_key("a", body) == "<absent>");
    CHECK(json_key("a.a.a", body) == "<absent>");
    std::string path = "a";
    for (int i = 1; i < 1000; ++i) path += ".a";
    CHECK(json_key(path, body) == "leaf");
  }

  SECTION("nesting beyond the parser's depth limit is absent, not a crash") {
    std::string body;
    for (int i = 0; i < 5000; ++i) body += "{\"a\":";
    body += "1";
    for (int i = 0; i < 5000; ++i) body += "}";
    CHECK(json_key("a", body) == "<absent>");

    std::string arrays = "{\"id\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
    CHECK(json_key("id", arrays) == "<absent>");
    CHECK(json_key("id", std::string(100000, '[')) == "<absent>");
  }

  SECTION("a 1 MB body") {
    std::string body = R"({"pad":")" + std::string(1 << 20, 'x') + R"(","id":"big-1"})";
    CHECK(json_key("id", body) == "big-1");
    // The same size, truncated: absent. Then a small body again on the reused parser.
    CHECK(json_key("id", std::string_view(body).substr(0, body.size() - 2)) == "<absent>");
    CHECK(json_key("id", R"({"id":"small"})") == "small");
    CHECK(json_key("id", std::string(1 << 20, '{')) == "<absent>");
  }
}

TEST_CASE("form keys: urlencoded bodies", "[idempotency]") {
  CHECK(form_key("out_trade_no", "out_trade_no=T-1&total=5") == "T-1");
  CHECK(form_key("total", "out_trade_no=T-1&total=5") == "5");
  CHECK(form_key("k", "k=a+b") == "a b");
  CHECK(form_key("k", "k=a%20b") == "a b");
  CHECK(form_key("k", "k=%E4%B8%AD") == "\xe4\xb8\xad");
  CHECK(form_key("k", "k=%e4%b8%ad%2B") == "\xe4\xb8\xad+");
  CHECK(form_key("k", "k=a%3Db%26c") == "a=b&c");
  CHECK(form_key("k", "k=x=y") == "x=y");
  // Names are decoded too.
  CHECK(form_key("my_key", "my%5Fkey=1") == "1");
  CHECK(form_key("\xe4\xb8\xad", "%E4%B8%AD=zh") == "zh");
  // Repeated fields: the first occurrence wins.
  CHECK(form_key("k", "k=first&k=second") == "first");
  CHECK(form_key("k", "&&k=v&&") == "v");
  // Malformed escapes are kept literally.
  CHECK(form_key("k", "k=100%") == "100%");
  CHECK(form_key("k", "k=%zz") == "%zz");
  CHECK(form_key("k", "k=%4") == "%4");
  CHECK(form_key("k", "k=%%41") == "%A");
  // Present but empty is an invalid key, not a missing one.
  CHECK(form_key("k", "k=") == "<invalid>");
  CHECK(form_key("k", "k&j=1") == "<invalid>");
  CHECK(form_key("k", "k=&k=later") == "<invalid>");
  // Decoded control bytes are invalid.
  CHECK(form_key("k", "k=a%00b") == "<invalid>");
  CHECK(form_key("k", "k=a%0Ab") == "<invalid>");
  // Missing field or empty body.
  CHECK(form_key("k", "kk=1&K=2&k2=3") == "<absent>");
  CHECK(form_key("k", "") == "<absent>");
  CHECK(form_key("k", R"({"k":"json"})") == "<absent>");
}

TEST_CASE("query keys: the target's query string", "[idempotency]") {
  CHECK(query_key("k", "/pay?k=abc") == "abc");
  CHECK(query_key("k", "/pay?a=1&k=abc&b=2") == "abc");
  CHECK(query_key("k", "/pay?k=a+b%20c") == "a b c");
  CHECK(query_key("k", "/pay?k=%E4%B8%AD") == "\xe4\xb8\xad");
  CHECK(query_key("k", "/pay?k=1&k=2") == "1");
  CHECK(query_key("k", "/pay?k=%zz") == "%zz");
  CHECK(query_key("k", "/pay?x=1?k=2") == "<absent>");
  CHECK(query_key("k", "/pay?x=1&k=a?b") == "a?b");
  CHECK(query_key("k", "/pay?k=") == "<invalid>");
  CHECK(query_key("k", "/pay?k") == "<invalid>");
  CHECK(query_key("k", "/pay?k=%7F") == "<invalid>");
  CHECK(query_key("k", "/pay") == "<absent>");
  CHECK(query_key("k", "/pay?") == "<absent>");
  CHECK(query_key("k", "/pay?other=1") == "<absent>");
  // The path is never searched.
  CHECK(query_key("k", "/k=v") == "<absent>");
  // The query is read from the target, not the body.
  CHECK(key_of({"query:k"}, head("/pay"), "k=from-body") == "<absent>");
}

TEST_CASE("body keys: the digest of the whole body", "[idempotency]") {
  std::string body = R"({"order":1})";
  std::string key = key_of({"body"}, head(), body);
  CHECK(key == digest_hex(body));
  CHECK(is_lower_hex32(key));
  CHECK(key_of({"body"}, head(), "other") != key);
  CHECK(key_of({"body"}, head(), "") == "<absent>");
  CHECK(key_of({"body", "query:k"}, head("/?k=q"), "") == "q");
}

TEST_CASE("key limits: length and control bytes", "[idempotency]") {
  CHECK(header_key(std::string(255, 'a')) == std::string(255, 'a'));
  CHECK(header_key(std::string(256, 'a')) == "<invalid>");
  CHECK(header_key(std::string(10000, 'a')) == "<invalid>");
  CHECK(header_key("\"" + std::string(255, 'q') + "\"") == std::string(255, 'q'));
  CHECK(header_key("\"" + std::string(256, 'q') + "\"") == "<invalid>");
  CHECK(json_key("id", "{\"id\":\"" + std::string(255, 'j') + "\"}") == std::string(255, 'j'));
  CHECK(json_key("id", "{\"id\":\"" + std::string(256, 'j') + "\"}") == "<invalid>");
  // 255 decoded bytes from a longer encoded form are fine.
  std::string encoded;
  for (int i = 0; i < 85; ++i) encoded += "%E4%B8%AD";
  CHECK(form_key("k", "k=" + encoded).size() == 255);
  CHECK(form_key("k", "k=" + encoded + "x") == "<invalid>");

  for (int c : {0x00, 0x01, 0x09, 0x0A, 0x0D, 0x1F, 0x7F}) {
    std::string value = "ab";
    value.insert(1, 1, static_cast<char>(c));
    INFO("byte " << c);
    CHECK(header_key(value) == "<invalid>");
  }
  // Bytes >= 0x80 and spaces are allowed in bare values.
  CHECK(header_key("caf\xc3\xa9 au lait") == "caf\xc3\xa9 au lait");
}

TEST_CASE("sources are tried in order; an invalid present value stops the search", "[idempotency]") {
  RequestHead with_header = head("/pay?k=from-query", {{"Idempotency-Key", "from-header"}});
  std::string body = R"({"id":"from-json"})";

  CHECK(key_of({"header:Idempotency-Key", "json:id", "query:k"}, with_header, body) == "from-header");
  CHECK(key_of({"json:id", "header:Idempotency-Key", "query:k"}, with_header, body) == "from-json");
  CHECK(key_of({"query:k", "json:id"}, with_header, body) == "from-query");
  CHECK(key_of({"body", "json:id"}, with_header, body) == digest_hex(body));

  // Absent sources fall through.
  CHECK(key_of({"header:X-Other", "json:missing", "json:id"}, with_header, body) == "from-json");
  CHECK(key_of({"header:X-Other", "json:id"}, head(), "{bad") == "<absent>");
  CHECK(key_of({"json:id", "form:id", "query:k"}, head("/?k=q"), "id=form") == "form");
  CHECK(key_of({"json:id", "header:X-Other"}, head(), "{bad") == "<absent>");
  CHECK(key_of({}, with_header, body) == "<absent>");

  // A present but invalid value is final, even when a later source has a good one.
  RequestHead bad_header = head("/pay?k=ok", {{"Idempotency-Key", "\"broken"}});
  CHECK(key_of({"header:Idempotency-Key", "query:k"}, bad_header, body) == "<invalid>");
  CHECK(key_of({"json:id", "query:k"}, head("/pay?k=ok"), R"({"id":""})") == "<invalid>");
  CHECK(key_of({"json:id", "query:k"}, head("/pay?k=ok"), "{\"id\":\"" + std::string(300, 'x') + "\"}") ==
        "<invalid>");
  CHECK(key_of({"query:k", "json:id"}, head("/pay?k="), body) == "<invalid>");

  // Two json sources share one parse of the body.
  CHECK(key_of({"json:a.missing", "json:a.b"}, head(), R"({"a":{"b":7}})") == "7");
}

TEST_CASE("extract_key overwrites the output only with a found key", "[idempotency]") {
  std::string key = "stale";
  CHECK(extract_key(sources({"query:k"}), head("/?k=v"), {}, &key) == Extract::kFound);
  CHECK(key == "v");
  key = "stale";
  CHECK(extract_key(sources({"query:k"}), head("/"), {}, &key) == Extract::kAbsent);
  CHECK(key.empty());
  key = "stale";
  CHECK(extract_key(sources({"query:k"}), head("/?k="), {}, &key) == Extract::kInvalid);
  CHECK(key.empty());
}

TEST_CASE("fingerprint: 32 hex chars, stable, sensitive to every field", "[idempotency]") {
  std::string base = fingerprint("POST", "/pay", R"({"amount":5})");
  CHECK(is_lower_hex32(base));
  CHECK(fingerprint("POST", "/pay", R"({"amount":5})") == base);

  CHECK(fingerprint("PUT", "/pay", R"({"amount":5})") != base);
  CHECK(fingerprint("post", "/pay", R"({"amount":5})") != base);
  CHECK(fingerprint("POST", "/pay/", R"({"amount":5})") != base);
  CHECK(fingerprint("POST", "/pay", R"({"amount":6})") != base);
  CHECK(fingerprint("POST", "/pay", R"({"amount":5} )") != base);
  CHECK(fingerprint("POST", "/pay", "") != base);

  // Field boundaries matter.
  CHECK(fingerprint("ab", "c", "") != fingerprint("a", "bc", ""));
  CHECK(fingerprint("", "ab", "c") != fingerprint("", "a", "bc"));
  CHECK(fingerprint("a", "", "b") != fingerprint("a", "b", ""));
  CHECK(fingerprint("", "", "") != fingerprint("", "", std::string(1, '\0')));
  CHECK(fingerprint("", "", std::string(8, '\0')) != fingerprint("", "", std::string(7, '\0')));

  // Fingerprints are stored in Redis and compared across gateways and versions, so the
  // hash must never change silently.
  CHECK(fingerprint("POST", "/pay", R"({"amount":5})") == "89fb3d2d3840d15cd3cc1af934976a80");
  CHECK(fingerprint("", "", "") == "288e72471e08e314f9b180bf8886eab3");
}

TEST_CASE("digest_hex: 32 lowercase hex chars, a different family seed than fingerprint", "[idempotency]") {
  CHECK(is_lower_hex32(digest_hex("")));
  CHECK(is_lower_hex32(digest_hex(std::string(1 << 20, 'z'))));
  CHECK(digest_hex("hello") == digest_hex("hello"));
  CHECK(digest_hex("hello") != digest_hex("hellp"));
  CHECK(digest_hex("hello") != digest_hex("hello "));
  CHECK(digest_hex("") != digest_hex(std::string(1, '\0')));
  CHECK(digest_hex("") != fingerprint("", "", ""));

  // Many similar inputs of every length around the 8-byte word size: no collisions, and
  // each half of the digest alone distinguishes them too.
  std::set<std::string> full;
  std::set<std::string> first_half;
  std::set<std::string> second_half;
  int n = 0;
  for (size_t len = 0; len <= 40; ++len) {
    for (int v = 0; v < 64; ++v) {
      std::string s(len, 'a');
      if (len > 0) s[static_cast<size_t>(v) % len] = static_cast<char>('a' + v % 26 + 1);
      if (len == 0 && v > 0) break;
      std::string d = digest_hex(s + std::to_string(v));
      full.insert(d);
      first_half.insert(d.substr(0, 16));
      second_half.insert(d.substr(16));
      ++n;
    }
  }
  CHECK(full.size() == static_cast<size_t>(n));
  CHECK(first_half.size() == static_cast<size_t>(n));
  CHECK(second_half.size() == static_cast<size_t>(n));

  CHECK(digest_hex("hello") == "caeb461f21c22fa6bbd2bb7c86ba1d14");
}
