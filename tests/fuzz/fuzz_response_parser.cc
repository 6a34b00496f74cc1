// ResponseParser under arbitrary upstream bytes. The first input byte chooses whether the
// request was HEAD (its low bit); the rest is the upstream's stream. Fed at once and one
// byte at a time, the transcript (heads, body bytes, completions, errors, the verdict of
// finish()) must be the same, no input may crash or hang the parser, and a delivered
// head has a final status (200..599: interim ones are skipped, 101 refused).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "http/response_parser.h"

namespace {

using fg::http::ResponseHead;
using fg::http::ResponseParser;

constexpr int kMaxMessages = 8;

struct Transcript : ResponseParser::Handler {
  std::string log;
  bool in_body = false;

  void on_response_head(ResponseHead& h) override {
    in_body = false;
    log += "H|" + std::to_string(h.status) + "|" + h.reason + "|" + std::to_string(h.version_major) + "." +
           std::to_string(h.version_minor) + "|" + std::to_string(static_cast<int>(h.body)) + "|" +
           std::to_string(h.content_length) + "|" + (h.keep_alive ? "k" : "-");
    for (const fg::http::Header& x : h.headers) log += "|" + x.name + ":" + x.value;
    log += "\n";
    FUZZ_CHECK(h.status >= 200 && h.status <= 599);
  }
  void on_response_body(const char* data, size_t len) override {
    if (!in_body) log += "B|";
    in_body = true;
    log.append(data, len);
  }
  void on_response_complete() override {
    in_body = false;
    log += "\nC\n";
  }
};

std::string run(std::string_view input, bool head, size_t step) {
  Transcript t;
  ResponseParser parser(&t);
  parser.begin(head);
  int messages = 0;
  size_t off = 0;
  while (off < input.size()) {
    const size_t n = step == 0 ? input.size() - off : std::min(step, input.size() - off);
    ResponseParser::Outcome o = parser.execute(input.data() + off, n);
    FUZZ_CHECK(o.consumed <= n);
    if (o.state == ResponseParser::State::kError) {
      // Only the verdict is compared: the error text may name the byte llhttp stopped at.
      t.log += "E\n";
      FUZZ_CHECK(!parser.error().empty());
      return t.log;
    }
    if (o.state == ResponseParser::State::kNeedMore) {
      FUZZ_CHECK(o.consumed == n);
      off += n;
      continue;
    }
    off += o.consumed;
    t.log += "D|" + std::to_string(off) + "\n";
    if (++messages == kMaxMessages) return t.log;
    parser.begin(head);
  }
  t.log += parser.finish() ? "F|done\n" : "F|cut\n";
  return t.log;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool head = (data[0] & 1) != 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::string whole = run(input, head, 0);
  FUZZ_CHECK(run(input, head, 1) == whole);
  FUZZ_CHECK(run(input, head, 7) == whole);
  return 0;
}
