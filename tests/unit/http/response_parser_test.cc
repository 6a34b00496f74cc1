// ResponseParser: body framing (Content-Length, chunked, close-delimited), bodiless
// responses, skipped 1xx, keep-alive and reuse for the next response. Inputs are also fed
// one byte at a time and must give the same result.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "http/response_parser.h"

using fg::http::BodyKind;
using fg::http::ResponseHead;
using fg::http::ResponseParser;
using State = ResponseParser::State;

namespace {

struct Recorder : ResponseParser::Handler {
  std::vector<ResponseHead> heads;
  std::string body;
  int completes = 0;

  void on_response_head(ResponseHead& head) override { heads.push_back(head); }
  void on_response_body(const char* data, size_t len) override { body.append(data, len); }
  void on_response_complete() override { ++completes; }
};

struct Run {
  State state = State::kNeedMore;
  size_t consumed = 0;
  std::string error;
  bool finished = false;  // result of finish() when called
  Recorder rec;
};

// Feeds `input` in `step`-byte pieces (0 = at once); optionally signals EOF afterwards.
Run feed(std::string_view input, size_t step, bool request_was_head, bool eof) {
  Run run;
  ResponseParser parser(&run.rec);
  parser.begin(request_was_head);
  size_t off = 0;
  while (off < input.size()) {
    size_t n = step == 0 ? input.size() - off : std::min(step, input.size() - off);
    auto o = parser.execute(input.data() + off, n);
    if (o.state != State::kNeedMore) {
      run.state = o.state;
      run.consumed = off + o.consumed;
      run.error = parser.error();
      return run;
    }
    off += n;
  }
  run.consumed = off;
  if (eof) {
    run.finished = parser.finish();
    run.state = run.finished ? State::kMessageDone : State::kError;
    run.error = parser.error();
  }
  return run;
}

Run parse(std::string_view input, bool request_was_head = false, bool eof = false) {
  Run whole = feed(input, 0, request_was_head, eof);
  Run bytewise = feed(input, 1, request_was_head, eof);
  INFO("input: " << input);
  REQUIRE(bytewise.state == whole.state);
  REQUIRE(bytewise.consumed == whole.consumed);
  REQUIRE(bytewise.rec.body == whole.rec.body);
  REQUIRE(bytewise.rec.completes == whole.rec.completes);
  REQUIRE(bytewise.rec.heads.size() == whole.rec.heads.size());
  for (size_t i = 0; i < whole.rec.heads.size(); ++i) {
    const ResponseHead& a = whole.rec.heads[i];
    const ResponseHead& b = bytewise.rec.heads[i];
    REQUIRE(a.status == b.status);
    REQUIRE(a.reason == b.reason);
    REQUIRE(a.body == b.body);
    REQUIRE(a.content_length == b.content_length);
    REQUIRE(a.keep_alive == b.keep_alive);
    REQUIRE(a.headers.size() == b.headers.size());
  }
  return whole;
}

}  // namespace

TEST_CASE("a Content-Length response", "[http]") {
  std::string in = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Pad:  v  \r\n\r\nhello";
  Run r = parse(in + "HTTP/1.1 200 OK\r\n");
  REQUIRE(r.state == State::kMessageDone);
  CHECK(r.consumed == in.size());
  REQUIRE(r.rec.heads.size() == 1);
  const ResponseHead& h = r.rec.heads[0];
  CHECK(h.status == 200);
  CHECK(h.reason == "OK");
  CHECK(h.version_major == 1);
  CHECK(h.version_minor == 1);
  CHECK(h.body == BodyKind::kContentLength);
  CHECK(h.content_length == 5);
  CHECK(h.keep_alive);
  REQUIRE(h.headers.size() == 3);
  CHECK(h.headers[0].name == "Content-Type");
  CHECK(h.headers[2].value == "v");
  CHECK(r.rec.body == "hello");
  CHECK(r.rec.completes == 1);
}

TEST_CASE("a chunked response is decoded", "[http]") {
  std::string in = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nT: 1\r\n\r\n";
  Run r = parse(in);
  REQUIRE(r.state == State::kMessageDone);
  CHECK(r.consumed == in.size());
  CHECK(r.rec.heads[0].body == BodyKind::kChunked);
  CHECK(r.rec.body == "Wikipedia");
  CHECK(r.rec.completes == 1);
  CHECK(r.rec.heads[0].headers.size() == 1);
}

TEST_CASE("a close-delimited response completes on finish()", "[http]") {
  std::string in = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome body";
  SECTION("without EOF it waits") {
    Run r = parse(in);
    CHECK(r.state == State::kNeedMore);
    REQUIRE(r.rec.heads.size() == 1);
    CHECK(r.rec.heads[0].body == BodyKind::kUntilClose);
    CHECK_FALSE(r.rec.heads[0].keep_alive);
    CHECK(r.rec.body == "some body");
    CHECK(r.rec.completes == 0);
  }
  SECTION("EOF completes it") {
    Run r = parse(in, false, true);
    CHECK(r.finished);
    CHECK(r.rec.body == "some body");
    CHECK(r.rec.completes == 1);
  }
}

TEST_CASE("finish() reports cut responses", "[http]") {
  SECTION("inside a Content-Length body") {
    Run r = parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", false, true);
    CHECK_FALSE(r.finished);
    CHECK(r.rec.completes == 0);
    CHECK_FALSE(r.error.empty());
  }
  SECTION("inside a chunked body") {
    Run r = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", false, true);
    CHECK_FALSE(r.finished);
    CHECK(r.rec.completes == 0);
  }
  SECTION("inside the head") {
    Run r = parse("HTTP/1.1 200 OK\r\nContent-Le", false, true);
    CHECK_FALSE(r.finished);
    CHECK(r.rec.heads.empty());
  }
  SECTION("before any byte") {
    Recorder rec;
    ResponseParser parser(&rec);
    parser.begin(false);
    CHECK_FALSE(parser.started());
    CHECK_FALSE(parser.finish());
    CHECK_FALSE(parser.error().empty());
  }
}

TEST_CASE("responses to HEAD have no body", "[http]") {
  std::string in = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";
  Run r = parse(in + "HTTP/1.1 204 No Content\r\n\r\n", true);
  REQUIRE(r.state == State::kMessageDone);
  CHECK(r.consumed == in.size());
  REQUIRE(r.rec.heads.size() == 1);
  CHECK(r.rec.heads[0].body == BodyKind::kNone);
  CHECK(r.rec.heads[0].keep_alive);
  // The upstream length is kept in the headers: it describes the resource.
  REQUIRE(fg::http::find_header(r.rec.heads[0].headers, "content-length") != nullptr);
  CHECK(r.rec.body.empty());
  CHECK(r.rec.completes == 1);

  SECTION("even without a Content-Length the connection stays reusable") {
    Run r2 = parse("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", true);
    REQUIRE(r2.state == State::kMessageDone);
    CHECK(r2.rec.heads[0].body == BodyKind::kNone);
    CHECK(r2.rec.heads[0].keep_alive);
  }
}

TEST_CASE("204 and 304 have no body", "[http]") {
  for (std::string_view status : {"204 No Content", "304 Not Modified"}) {
    std::string in = "HTTP/1.1 " + std::string(status) + "\r\nETag: \"x\"\r\n\r\n";
    Run r = parse(in + "HTTP/1.1 200 OK\r\n");
    INFO(status);
    REQUIRE(r.state == State::kMessageDone);
    CHECK(r.consumed == in.size());
    CHECK(r.rec.heads[0].body == BodyKind::kNone);
    CHECK(r.rec.heads[0].keep_alive);
    CHECK(r.rec.completes == 1);
  }
}

TEST_CASE("1xx interim responses are skipped", "[http]") {
  std::string in =
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
      "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
  Run r = parse(in);
  REQUIRE(r.state == State::kMessageDone);
  CHECK(r.consumed == in.size());
  REQUIRE(r.rec.heads.size() == 1);
  CHECK(r.rec.heads[0].status == 201);
  CHECK(r.rec.heads[0].reason == "Created");
  REQUIRE(r.rec.heads[0].headers.size() == 1);
  CHECK(r.rec.heads[0].headers[0].name == "Content-Length");
  CHECK(r.rec.body == "ok");
  CHECK(r.rec.completes == 1);

  SECTION("an interim response alone leaves the parser waiting") {
    Run r2 = parse("HTTP/1.1 100 Continue\r\n\r\n");
    CHECK(r2.state == State::kNeedMore);
    CHECK(r2.rec.heads.empty());
  }
  SECTION("101 is refused: the gateway does not tunnel") {
    Run r2 = parse("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
    CHECK(r2.state == State::kError);
    CHECK(r2.rec.heads.empty());
  }
}

TEST_CASE("upstream keep-alive", "[http]") {
  CHECK_FALSE(parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").rec.heads[0].keep_alive);
  CHECK_FALSE(parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").rec.heads[0].keep_alive);
  CHECK(parse("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").rec.heads[0].keep_alive);
  CHECK(parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").rec.heads[0].keep_alive);
}

TEST_CASE("the parser is reusable for the next response after begin()", "[http]") {
  Recorder rec;
  ResponseParser parser(&rec);
  std::string first = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na";
  std::string second = "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno";
  parser.begin(false);
  auto o = parser.execute(first.data(), first.size());
  REQUIRE(o.state == State::kMessageDone);
  CHECK(parser.started());
  parser.begin(false);
  CHECK_FALSE(parser.started());
  o = parser.execute(second.data(), second.size());
  REQUIRE(o.state == State::kMessageDone);
  CHECK(o.consumed == second.size());
  REQUIRE(rec.heads.size() == 2);
  CHECK(rec.heads[1].status == 404);
  CHECK(rec.body == "ano");
  CHECK(rec.completes == 2);
  // Headers are written over in place from one response to the next: nothing of the
  // first response's head may show in the second's, with fewer or with more headers.
  CHECK(rec.heads[1].reason == "Not Found");
  CHECK(rec.heads[1].keep_alive);
  REQUIRE(rec.heads[1].headers.size() == 1);
  CHECK(rec.heads[1].headers[0].name == "Content-Length");
  CHECK(rec.heads[1].headers[0].value == "2");
  std::string third = "HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B:  two  \r\nX-C: 3\r\nContent-Length: 0\r\n\r\n";
  parser.begin(false);
  o = parser.execute(third.data(), third.size());
  REQUIRE(o.state == State::kMessageDone);
  REQUIRE(rec.heads.size() == 3);
  REQUIRE(rec.heads[2].headers.size() == 4);
  CHECK(rec.heads[2].headers[0].name == "X-A");
  CHECK(rec.heads[2].headers[1].value == "two");
  CHECK(rec.heads[2].headers[3].name == "Content-Length");
  CHECK(rec.heads[2].reason == "OK");
}

TEST_CASE("invalid upstream responses are errors", "[http]") {
  SECTION("garbage") {
    Run r = parse("NOT HTTP AT ALL\r\n\r\n");
    CHECK(r.state == State::kError);
    CHECK_FALSE(r.error.empty());
  }
  SECTION("duplicate differing Content-Length") {
    Run r = parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
    CHECK(r.state == State::kError);
  }
  SECTION("a transfer coding other than chunked") {
    Run r = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
    CHECK(r.state == State::kError);
    CHECK(r.rec.heads.empty());
  }
  SECTION("a status code outside 100..599") {
    // llhttp takes any digits; the client would get a status line no client can read.
    for (std::string_view in : {"HTTP/1.0 20 OK\r\n\r\n0", "HTTP/1.1 000 X\r\nContent-Length: 0\r\n\r\n",
                                "HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n",
                                "HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n",
                                "HTTP/1.1 999 X\r\nContent-Length: 0\r\n\r\n"}) {
      Run r = parse(in, false, true);
      INFO(in);
      CHECK(r.state == State::kError);
      CHECK(r.error == "upstream status code outside 100..599");
      CHECK(r.rec.heads.empty());
    }
    CHECK(parse("HTTP/1.1 599 X\r\nContent-Length: 0\r\n\r\n").rec.heads.size() == 1);
  }
  SECTION("a huge head") {
    std::string in = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(100 * 1024, 'x') + "\r\n\r\n";
    Run r = feed(in, 0, false, false);
    CHECK(r.state == State::kError);
    CHECK(r.rec.heads.empty());
  }
}
