// Incremental HTTP/1.x response parser for upstream connections (llhttp). It exposes the
// head, the decoded body and the end of the message; 1xx interim responses other than
// 101 are skipped.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "http/message.h"

namespace fg::http {

class ResponseParser {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    virtual void on_response_head(ResponseHead& head) = 0;
    virtual void on_response_body(const char* data, size_t len) = 0;
    virtual void on_response_complete() = 0;
  };

  enum class State { kNeedMore, kMessageDone, kError };
  struct Outcome {
    State state = State::kNeedMore;
    size_t consumed = 0;
  };

  explicit ResponseParser(Handler* handler);
  ~ResponseParser();
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  // Arms the parser for the response to a request with this method (HEAD responses
  // have no body whatever their headers say).
  void begin(bool request_was_head);

  // Feeds bytes; stops after a complete response (kMessageDone).
  Outcome execute(const char* data, size_t len);

  // The upstream closed its side. Returns true when that completes the message
  // (a close-delimited body) and then calls on_response_complete(); false when the
  // response was cut.
  bool finish();

  // True once any byte of the current response was seen.
  bool started() const;
  const std::string& error() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fg::http
