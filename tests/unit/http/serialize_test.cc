// Serializers: exact bytes of upstream request heads, client response heads, chunk
// framing and gateway-made JSON errors.
#include <catch2/catch.hpp>

#include <string>

#include "http/serialize.h"

using namespace fg::http;

namespace {

RequestHead request(std::string method, std::string target, std::vector<Header> headers) {
  RequestHead h;
  h.method = std::move(method);
  h.target = std::move(target);
  h.headers = std::move(headers);
  return h;
}

const ForwardInfo kInfo{"10.0.0.7", "http", "req-1"};

}  // namespace

TEST_CASE("hop-by-hop headers", "[http]") {
  for (const char* name : {"Connection", "keep-alive", "TE", "Trailer", "Transfer-Encoding", "UPGRADE",
                           "Proxy-Connection"}) {
    CHECK(is_hop_by_hop(name, ""));
  }
  CHECK_FALSE(is_hop_by_hop("Host", ""));
  CHECK_FALSE(is_hop_by_hop("X-Trace", ""));
  CHECK(is_hop_by_hop("x-trace", "close, X-Trace"));
  CHECK(is_hop_by_hop("X-Other", " x-trace ,X-OTHER"));
  CHECK_FALSE(is_hop_by_hop("X-Tr", "X-Trace"));

  std::vector<Header> hs{{"Connection", "close"}, {"Host", "a"}, {"connection", "X-A"}};
  CHECK(connection_tokens(hs) == "close,X-A");
  CHECK(connection_tokens({}).empty());
}

TEST_CASE("upstream request head", "[http]") {
  SECTION("GET with hop-by-hop and gateway-owned headers removed") {
    RequestHead h = request("GET", "/items?x=1",
                            {{"Host", "shop.example"},
                             {"Connection", "keep-alive, X-Secret"},
                             {"X-Secret", "s"},
                             {"Keep-Alive", "timeout=5"},
                             {"TE", "trailers"},
                             {"Accept", "*/*"},
                             {"X-Request-Id", "client-chosen"},
                             {"X-Forwarded-Proto", "https"},
                             {"Expect", "100-continue"}});
    std::string out;
    append_upstream_request_head(out, h, kInfo);
    CHECK(out ==
          "GET /items?x=1 HTTP/1.1\r\n"
          "Host: shop.example\r\n"
          "Accept: */*\r\n"
          "X-Forwarded-For: 10.0.0.7\r\n"
          "X-Forwarded-Proto: http\r\n"
          "X-Request-Id: req-1\r\n"
          "\r\n");
  }
  SECTION("X-Forwarded-For is extended") {
    RequestHead h = request("GET", "/", {{"Host", "a"}, {"X-Forwarded-For", "1.1.1.1, 2.2.2.2"}});
    std::string out = "prefix|";
    append_upstream_request_head(out, h, kInfo);
    CHECK(out ==
          "prefix|GET / HTTP/1.1\r\n"
          "Host: a\r\n"
          "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.7\r\n"
          "X-Forwarded-Proto: http\r\n"
          "X-Request-Id: req-1\r\n"
          "\r\n");
  }
  SECTION("Content-Length body is re-framed") {
    RequestHead h = request("POST", "/orders", {{"Host", "a"}, {"content-length", "12"}});
    h.body = BodyKind::kContentLength;
    h.content_length = 12;
    std::string out;
    append_upstream_request_head(out, h, kInfo);
    CHECK(out ==
          "POST /orders HTTP/1.1\r\n"
          "Host: a\r\n"
          "X-Forwarded-For: 10.0.0.7\r\n"
          "X-Forwarded-Proto: http\r\n"
          "X-Request-Id: req-1\r\n"
          "Content-Length: 12\r\n"
          "\r\n");
  }
  SECTION("Content-Length: 0 is kept") {
    RequestHead h = request("DELETE", "/x", {{"Host", "a"}});
    h.body = BodyKind::kContentLength;
    h.content_length = 0;
    std::string out;
    append_upstream_request_head(out, h, kInfo);
    CHECK(out.find("Content-Length: 0\r\n\r\n") != std::string::npos);
  }
  SECTION("chunked body") {
    RequestHead h = request("PUT", "/x", {{"Host", "a"}, {"Transfer-Encoding", "chunked"}});
    h.body = BodyKind::kChunked;
    std::string out;
    append_upstream_request_head(out, h, kInfo);
    CHECK(out ==
          "PUT /x HTTP/1.1\r\n"
          "Host: a\r\n"
          "X-Forwarded-For: 10.0.0.7\r\n"
          "X-Forwarded-Proto: http\r\n"
          "X-Request-Id: req-1\r\n"
          "Transfer-Encoding: chunked\r\n"
          "\r\n");
  }
  SECTION("body-less POST/PUT/PATCH get Content-Length: 0, GET gets nothing") {
    for (const char* m : {"POST", "PUT", "PATCH"}) {
      std::string out;
      append_upstream_request_head(out, request(m, "/", {{"Host", "a"}}), kInfo);
      INFO(m);
      CHECK(out.size() > 24);
      CHECK(out.substr(out.size() - 23) == "\r\nContent-Length: 0\r\n\r\n");
    }
    std::string out;
    append_upstream_request_head(out, request("GET", "/", {{"Host", "a"}}), kInfo);
    CHECK(out.find("Content-Length") == std::string::npos);
  }
  SECTION("HTTP/1.0 requests go upstream as HTTP/1.1") {
    RequestHead h = request("GET", "/", {});
    h.version_minor = 0;
    std::string out;
    append_upstream_request_head(out, h, kInfo);
    CHECK(out.rfind("GET / HTTP/1.1\r\n", 0) == 0);
  }
}

TEST_CASE("client framing choice", "[http]") {
  RequestHead get11 = request("GET", "/", {});
  RequestHead get10 = get11;
  get10.version_minor = 0;
  RequestHead head11 = request("HEAD", "/", {});
  ResponseHead resp;
  resp.status = 200;

  resp.body = BodyKind::kContentLength;
  CHECK(choose_client_framing(resp, get11) == ClientFraming::kContentLength);
  CHECK(choose_client_framing(resp, get10) == ClientFraming::kContentLength);
  CHECK(choose_client_framing(resp, head11) == ClientFraming::kNone);
  resp.body = BodyKind::kChunked;
  CHECK(choose_client_framing(resp, get11) == ClientFraming::kChunked);
  CHECK(choose_client_framing(resp, get10) == ClientFraming::kClose);
  resp.body = BodyKind::kUntilClose;
  CHECK(choose_client_framing(resp, get11) == ClientFraming::kChunked);
  CHECK(choose_client_framing(resp, get10) == ClientFraming::kClose);
  resp.body = BodyKind::kNone;
  for (int status : {204, 304, 103}) {
    resp.status = status;
    CHECK(choose_client_framing(resp, get11) == ClientFraming::kNone);
  }
}

TEST_CASE("client response head", "[http]") {
  RequestHead get11 = request("GET", "/", {});
  RequestHead get10 = get11;
  get10.version_minor = 0;
  ResponseHead resp;
  resp.status = 200;
  resp.reason = "OK";
  resp.body = BodyKind::kContentLength;
  resp.content_length = 5;
  resp.headers = {{"Content-Type", "text/plain"},
                  {"Content-Length", "5"},
                  {"Connection", "X-Up"},
                  {"X-Up", "1"},
                  {"Transfer-Encoding", "chunked"},
                  {"ETag", "\"v1\""}};

  SECTION("HTTP/1.1 keep-alive with Content-Length") {
    std::string out;
    append_client_response_head(out, resp, get11, ClientFraming::kContentLength, true, "X-Request-Id: r1\r\n");
    CHECK(out ==
          "HTTP/1.1 200 OK\r\n"
          "Content-Type: text/plain\r\n"
          "ETag: \"v1\"\r\n"
          "Content-Length: 5\r\n"
          "X-Request-Id: r1\r\n"
          "\r\n");
  }
  SECTION("HTTP/1.1 chunked and closing") {
    std::string out;
    append_client_response_head(out, resp, get11, ClientFraming::kChunked, false, {});
    CHECK(out ==
          "HTTP/1.1 200 OK\r\n"
          "Content-Type: text/plain\r\n"
          "ETag: \"v1\"\r\n"
          "Transfer-Encoding: chunked\r\n"
          "Connection: close\r\n"
          "\r\n");
  }
  SECTION("HTTP/1.0 keep-alive client") {
    std::string out;
    append_client_response_head(out, resp, get10, ClientFraming::kContentLength, true, {});
    CHECK(out ==
          "HTTP/1.0 200 OK\r\n"
          "Content-Type: text/plain\r\n"
          "ETag: \"v1\"\r\n"
          "Content-Length: 5\r\n"
          "Connection: keep-alive\r\n"
          "\r\n");
  }
  SECTION("HTTP/1.0 close-delimited") {
    std::string out;
    append_client_response_head(out, resp, get10, ClientFraming::kClose, false, {});
    CHECK(out ==
          "HTTP/1.0 200 OK\r\n"
          "Content-Type: text/plain\r\n"
          "ETag: \"v1\"\r\n"
          "Connection: close\r\n"
          "\r\n");
  }
  SECTION("HEAD response keeps the upstream Content-Length") {
    std::string out;
    append_client_response_head(out, resp, request("HEAD", "/", {}), ClientFraming::kNone, true, {});
    CHECK(out ==
          "HTTP/1.1 200 OK\r\n"
          "Content-Type: text/plain\r\n"
          "Content-Length: 5\r\n"
          "ETag: \"v1\"\r\n"
          "\r\n");
  }
  SECTION("304 keeps the upstream Content-Length, 204 drops it") {
    resp.status = 304;
    resp.reason.clear();
    std::string out;
    append_client_response_head(out, resp, get11, ClientFraming::kNone, true, {});
    CHECK(out.rfind("HTTP/1.1 304 Not Modified\r\n", 0) == 0);
    CHECK(out.find("Content-Length: 5\r\n") != std::string::npos);
    resp.status = 204;
    out.clear();
    append_client_response_head(out, resp, get11, ClientFraming::kNone, true, {});
    CHECK(out.rfind("HTTP/1.1 204 No Content\r\n", 0) == 0);
    CHECK(out.find("Content-Length") == std::string::npos);
  }
  SECTION("upstream reason phrase is kept") {
    resp.reason = "Fine Thanks";
    std::string out;
    append_client_response_head(out, resp, get11, ClientFraming::kContentLength, true, {});
    CHECK(out.rfind("HTTP/1.1 200 Fine Thanks\r\n", 0) == 0);
  }
}

TEST_CASE("chunk framing", "[http]") {
  std::string out;
  append_chunk_header(out, 0x1a2b);
  CHECK(out == "1a2b\r\n");
  out.clear();
  append_chunk_header(out, 1);
  CHECK(out == "1\r\n");
  CHECK(kChunkTrailer == "\r\n");
  CHECK(kLastChunk == "0\r\n\r\n");
}

TEST_CASE("gateway error responses", "[http]") {
  SECTION("exact bytes") {
    std::string out = make_error_response(404, "no_route", "no route matches", "abc", true);
    const std::string body = R"({"error":"no_route","message":"no route matches","request_id":"abc"})";
    CHECK(out ==
          "HTTP/1.1 404 Not Found\r\n"
          "Content-Type: application/json\r\n"
          "Content-Length: " + std::to_string(body.size()) + "\r\n"
          "X-Request-Id: abc\r\n"
          "Connection: keep-alive\r\n"
          "\r\n" + body);
  }
  SECTION("HTTP/1.0, close and extra headers") {
    std::string out = make_error_response(429, "rate_limited", "slow down", "r", false, true, "Retry-After: 3\r\n");
    CHECK(out.rfind("HTTP/1.0 429 Too Many Requests\r\n", 0) == 0);
    CHECK(out.find("Connection: close\r\nRetry-After: 3\r\n\r\n{") != std::string::npos);
  }
  SECTION("the message is JSON-escaped") {
    std::string out = make_error_response(400, "bad_request", "a \"quoted\" \\ path\n\x01", "id", false);
    CHECK(out.find(R"("message":"a \"quoted\" \\ path\n\u0001")") != std::string::npos);
  }
}

TEST_CASE("JSON escaping", "[http]") {
  std::string out;
  append_json_escaped(out, std::string("q\"b\\s/\b\f\n\r\t\x1f\0z", 14));
  CHECK(out == "q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u001f\\u0000z");
  out.clear();
  append_json_escaped(out, "caf\xc3\xa9");
  CHECK(out == "caf\xc3\xa9");
}

TEST_CASE("reason phrases", "[http]") {
  CHECK(reason_phrase(200) == "OK");
  CHECK(reason_phrase(413) == "Content Too Large");
  CHECK(reason_phrase(431) == "Request Header Fields Too Large");
  CHECK(reason_phrase(502) == "Bad Gateway");
  CHECK(reason_phrase(504) == "Gateway Timeout");
  CHECK(reason_phrase(505) == "HTTP Version Not Supported");
  CHECK(reason_phrase(799) == "Unknown");
  for (int s : {100, 200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409, 413, 414, 417, 422,
                429, 431, 500, 501, 502, 503, 504, 505}) {
    CHECK(reason_phrase(s) != "Unknown");
  }
}
