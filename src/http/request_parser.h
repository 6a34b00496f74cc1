// Incremental, strict HTTP/1.x request parser on top of llhttp. No libuv: it only sees
// bytes. Enforces the head limits and refuses every request-smuggling vector of SPEC §3
// before the caller sees the head, so nothing of a refused request is ever forwarded.
// The delivered head is already canonical: `target` is origin-form with the canonical
// path of http/path.h (the form routing matches and the upstream receives), Host is
// valid, and header names with '_' are gone unless allowed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "http/message.h"

namespace fg::http {

// Why a request was refused: the HTTP status to answer, a stable machine code for the
// JSON body ("bad_request", "header_too_large", "uri_too_long", "smuggling", ...) and a
// human message. After an error the connection must be closed.
struct ParseError {
  int status = 400;
  std::string code;
  std::string message;
};

class RequestParser {
 public:
  // Limits and request hygiene options (config: server.max_header_bytes,
  // server.max_uri_bytes, server.merge_slashes, server.underscores_in_headers).
  struct Limits {
    uint64_t max_header_bytes = 16 * 1024;  // whole head incl. request line: 431 beyond
    uint64_t max_uri_bytes = 8 * 1024;      // request-target: 414 beyond
    bool merge_slashes = true;              // "//" in the path counts as "/" (see http/path.h)
    bool underscores_in_headers = false;    // false: header names with '_' are dropped
  };

  // Callbacks run synchronously inside execute(). They must not destroy the parser.
  class Handler {
   public:
    virtual ~Handler() = default;
    // The head is complete and passed every check. `head` may be moved from.
    // head.target is canonical; an absolute-form target was turned into origin-form
    // and its authority became the Host header (RFC 9112 §3.2.2).
    virtual void on_request_head(RequestHead& head) = 0;
    // Decoded body bytes (chunk framing removed). The data is only valid during the call.
    virtual void on_request_body(const char* data, size_t len) = 0;
    // The request (including any chunked trailers) is complete.
    virtual void on_request_complete() = 0;
  };

  enum class State {
    kNeedMore,       // all bytes consumed, message not complete
    kMessageDone,    // a whole request ended; `consumed` tells where; call reset_for_next()
    kError,          // refused: see error(); the connection must be closed
  };

  struct Outcome {
    State state = State::kNeedMore;
    size_t consumed = 0;  // bytes of the input that belong to what was parsed
  };

  RequestParser(Handler* handler, Limits limits);
  ~RequestParser();
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Feeds bytes. Stops right after a complete request (kMessageDone) so that pipelined
  // requests are handled one at a time: the caller keeps data+consumed.. for later.
  Outcome execute(const char* data, size_t len);

  // Prepares for the next request on the same connection (after kMessageDone).
  void reset_for_next();

  // The peer closed its side. Returns true if that is a clean end between messages;
  // false if a message was cut (error() is then set).
  bool finish();

  // True while no byte of a request has been seen since construction/reset.
  bool idle() const;
  // True once the head was delivered and before the message completed.
  bool in_body() const;

  const ParseError& error() const;
  void set_limits(Limits limits);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fg::http
