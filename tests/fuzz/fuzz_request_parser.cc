// RequestParser under arbitrary bytes: the same input fed at once, one byte at a time and
// split at pseudo-random points (derived from the input, so a crash reproduces) must give
// the same transcript: every head field, body bytes, completions, the final state and
// error. Pipelined requests are followed (reset_for_next) for a few messages. Every
// delivered head must be canonical (http/path.h) with a valid Host and no '_' names.
// The input is parsed twice: with the default limits and options, and with small
// limits, merge_slashes off and underscores allowed (whole and byte by byte).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "http/path.h"
#include "http/request_parser.h"

namespace {

using fg::http::RequestHead;
using fg::http::RequestParser;

constexpr int kMaxMessages = 8;

struct Transcript : RequestParser::Handler {
  explicit Transcript(const RequestParser::Limits& l) : limits(l) {}
  RequestParser::Limits limits;
  std::string log;
  bool in_body = false;

  void on_request_head(RequestHead& h) override {
    in_body = false;
    log += "H|" + h.method + "|" + h.target + "|" + std::to_string(h.version_major) + "." +
           std::to_string(h.version_minor) + "|" + std::to_string(static_cast<int>(h.body)) + "|" +
           std::to_string(h.content_length) + "|" + (h.keep_alive ? "k" : "-") + (h.expect_continue ? "e" : "-") +
           "|" + h.host;
    for (const fg::http::Header& x : h.headers) log += "|" + x.name + ":" + x.value;
    log += "\n";
    check_head(h);
  }
  void on_request_body(const char* data, size_t len) override {
    if (!in_body) log += "B|";
    in_body = true;
    log.append(data, len);
  }
  void on_request_complete() override {
    in_body = false;
    log += "\nC\n";
  }

  void check_head(const RequestHead& h) const {
    if (h.target != "*") {
      std::string again;
      FUZZ_CHECK(fg::http::canonicalize_target(h.target, limits.merge_slashes, &again).empty());
      FUZZ_CHECK(again == h.target);
    }
    FUZZ_CHECK(h.target.size() <= limits.max_uri_bytes);
    FUZZ_CHECK(h.host.empty() || fg::http::is_valid_host(h.host));
    if (!limits.underscores_in_headers) {
      for (const fg::http::Header& x : h.headers) FUZZ_CHECK(x.name.find('_') == std::string::npos);
    }
  }
};

// Feeds `input` in the pieces that `cuts` (ascending offsets) make, following pipelined
// messages, and returns the transcript with the verdict appended.
std::string run(std::string_view input, const std::vector<size_t>& cuts, const RequestParser::Limits& limits = {}) {
  Transcript t(limits);
  RequestParser parser(&t, limits);
  int messages = 0;
  size_t start = 0;
  bool stopped = false;
  for (size_t ci = 0; ci <= cuts.size() && !stopped; ++ci) {
    const size_t end = ci < cuts.size() ? cuts[ci] : input.size();
    size_t off = start;
    while (off < end) {
      RequestParser::Outcome o = parser.execute(input.data() + off, end - off);
      FUZZ_CHECK(o.consumed <= end - off);
      if (o.state == RequestParser::State::kNeedMore) {
        FUZZ_CHECK(o.consumed == end - off);
        off = end;
        break;
      }
      if (o.state == RequestParser::State::kError) {
        t.log += "E|" + std::to_string(parser.error().status) + "|" + parser.error().code + "\n";
        FUZZ_CHECK(parser.error().status >= 400 && parser.error().status < 600);
        FUZZ_CHECK(!parser.error().code.empty());
        stopped = true;
        break;
      }
      // A whole message ended at input offset off + consumed.
      off += o.consumed;
      t.log += "D|" + std::to_string(off) + "\n";
      if (++messages == kMaxMessages) {
        stopped = true;
        break;
      }
      parser.reset_for_next();
    }
    start = end;
  }
  if (!stopped) t.log += parser.finish() ? "F|clean\n" : "F|" + parser.error().code + "\n";
  return t.log;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::string whole = run(input, {});

  std::vector<size_t> bytewise;
  for (size_t i = 1; i < size; ++i) bytewise.push_back(i);
  FUZZ_CHECK(run(input, bytewise) == whole);

  // Split points from an FNV-1a hash of the input: random-looking but reproducible.
  uint64_t h = 0xcbf29ce484222325ULL;
  for (uint8_t b : input) h = (h ^ b) * 0x100000001b3ULL;
  for (int round = 0; round < 4 && size > 1; ++round) {
    std::vector<size_t> cuts;
    size_t at = 0;
    for (;;) {
      h ^= h >> 29;
      h *= 0xbf58476d1ce4e5b9ULL;
      at += 1 + static_cast<size_t>(h % (round == 0 ? 4 : 64));
      if (at >= size) break;
      cuts.push_back(at);
    }
    FUZZ_CHECK(run(input, cuts) == whole);
  }

  RequestParser::Limits other;
  other.max_header_bytes = 512;
  other.max_uri_bytes = 128;
  other.merge_slashes = false;
  other.underscores_in_headers = true;
  FUZZ_CHECK(run(input, bytewise, other) == run(input, {}, other));
  return 0;
}
