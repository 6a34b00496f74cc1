// Upstream response parsing on llhttp: fills a ResponseHead, streams the decoded body,
// hides 1xx interim responses and completes close-delimited bodies on EOF.
#include "http/response_parser.h"

#include <llhttp.h>

#include <string>
#include <utility>

namespace fg::http {

namespace {

constexpr size_t kReservedHeaders = 16;
// The upstream is trusted more than clients, but its head is still buffered: cap it so
// that a broken upstream cannot grow a worker's memory without bound.
constexpr uint64_t kMaxResponseHeadBytes = 64 * 1024;

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

struct ResponseParser::Impl {
  explicit Impl(ResponseParser::Handler* handler) : handler_(handler) {
    llhttp_init(&parser_, HTTP_RESPONSE, &settings());
    parser_.data = this;
    begin(false);
  }

  static const llhttp_settings_t& settings() {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t st;
      llhttp_settings_init(&st);
      st.on_status = [](llhttp_t* p, const char* at, size_t n) { return self(p)->on_status(at, n); };
      st.on_header_field = [](llhttp_t* p, const char* at, size_t n) { return self(p)->on_header_field(at, n); };
      st.on_header_value = [](llhttp_t* p, const char* at, size_t n) { return self(p)->on_header_value(at, n); };
      st.on_header_value_complete = [](llhttp_t* p) { return self(p)->on_header_value_complete(); };
      st.on_headers_complete = [](llhttp_t* p) { return self(p)->on_headers_complete(); };
      st.on_body = [](llhttp_t* p, const char* at, size_t n) { return self(p)->on_body(at, n); };
      st.on_message_complete = [](llhttp_t* p) { return self(p)->on_message_complete(); };
      return st;
    }();
    return s;
  }

  static Impl* self(llhttp_t* p) { return static_cast<Impl*>(p->data); }

  void begin(bool request_was_head) {
    request_was_head_ = request_was_head;
    state_ = State::kNeedMore;
    started_ = false;
    error_.clear();
    callback_failed_ = false;
    start_message();
  }

  // Clears the per-message state; also used between an interim 1xx and the final response.
  void start_message() {
    llhttp_reset(&parser_);
    // The head is only lent to the caller, so its headers are kept from one response to
    // the next and written over in place (headers_used_ counts this message's): an
    // upstream that sends the same headers every time costs no allocation for them.
    head_.status = 0;
    head_.reason.clear();
    head_.version_major = 1;
    head_.version_minor = 1;
    head_.body = BodyKind::kNone;
    head_.content_length = 0;
    head_.keep_alive = true;
    headers_used_ = 0;
    head_.headers.reserve(kReservedHeaders);
    field_.clear();
    value_.clear();
    head_bytes_ = 0;
    head_delivered_ = false;
    interim_ = false;
  }

  int refuse(std::string_view message) {
    error_.assign(message);
    callback_failed_ = true;
    return -1;
  }

  int count_head(size_t n) {
    head_bytes_ += n;
    return head_bytes_ > kMaxResponseHeadBytes ? refuse("upstream response head too large") : 0;
  }

  int on_status(const char* at, size_t n) {
    head_.reason.append(at, n);
    return count_head(n);
  }

  int on_header_field(const char* at, size_t n) {
    if (head_delivered_) return count_head(n);  // trailers: dropped
    field_.append(at, n);
    return count_head(n);
  }

  int on_header_value(const char* at, size_t n) {
    if (head_delivered_) return count_head(n);
    value_.append(at, n);
    return count_head(n);
  }

  int on_header_value_complete() {
    if (head_delivered_) return 0;
    std::string_view value = trim_ows(value_);
    if (headers_used_ < head_.headers.size()) {
      Header& h = head_.headers[headers_used_];
      h.name.assign(field_);
      h.value.assign(value);
    } else {
      head_.headers.push_back(Header{field_, std::string(value)});
    }
    ++headers_used_;
    field_.clear();
    value_.clear();
    return 0;
  }

  int on_headers_complete() {
    if (!head_delivered_) head_.headers.resize(headers_used_);  // drops the last message's extra ones
    const int status = llhttp_get_status_code(&parser_);
    // llhttp accepts any run of digits as a status ("20", "000", "999"); relaying one
    // outside RFC 9110's 100..599 would hand the client a status line it cannot read.
    if (status < 100 || status > 599) return refuse("upstream status code outside 100..599");
    if (status >= 100 && status < 200) {
      if (status == 101) return refuse("upstream switched protocols, which is not supported");
      // Interim response: forget it; on_message_complete restarts for the final one.
      interim_ = true;
      return 0;
    }
    head_.status = status;
    head_.version_major = llhttp_get_http_major(&parser_);
    head_.version_minor = llhttp_get_http_minor(&parser_);
    if (head_.version_major != 1) return refuse("upstream HTTP version is not 1.x");

    const uint16_t flags = parser_.flags;
    // Transfer codings other than a lone "chunked" would reach the client still encoded
    // once the framing is rewritten, with nothing telling it so.
    if ((flags & F_TRANSFER_ENCODING) != 0) {
      const Header* te = find_header(head_.headers, "transfer-encoding");
      if (te == nullptr || !iequals(te->value, "chunked")) {
        return refuse("upstream Transfer-Encoding other than chunked");
      }
    }

    // Connection-level reuse as llhttp_should_keep_alive() decides it, computed here
    // because for HEAD responses the "no body" flag is only set after this callback.
    bool reusable = head_.version_minor >= 1 ? (flags & F_CONNECTION_CLOSE) == 0
                                             : (flags & F_CONNECTION_KEEP_ALIVE) != 0;
    int rc = 0;
    if (request_was_head_ || status == 204 || status == 304) {
      head_.body = BodyKind::kNone;
      rc = 1;  // tells llhttp there is no body whatever the headers say
    } else if ((flags & F_CHUNKED) != 0) {
      head_.body = BodyKind::kChunked;
    } else if ((flags & F_CONTENT_LENGTH) != 0) {
      head_.body = BodyKind::kContentLength;
      head_.content_length = parser_.content_length;
    } else {
      head_.body = BodyKind::kUntilClose;
      reusable = false;
    }
    head_.keep_alive = reusable;
    head_delivered_ = true;
    handler_->on_response_head(head_);
    return rc;
  }

  int on_body(const char* at, size_t n) {
    handler_->on_response_body(at, n);
    return 0;
  }

  int on_message_complete() {
    if (!interim_) handler_->on_response_complete();
    // Pause in both cases: for the final response so that execute() stops after it, for
    // an interim one so that execute() can restart llhttp cleanly on the next message.
    return HPE_PAUSED;
  }

  Outcome execute(const char* data, size_t len) {
    if (state_ != State::kNeedMore) return {state_, 0};
    if (len == 0) return {State::kNeedMore, 0};
    started_ = true;
    size_t off = 0;
    for (;;) {
      llhttp_errno_t err = llhttp_execute(&parser_, data + off, len - off);
      if (err == HPE_OK) return {State::kNeedMore, len};
      const char* pos = llhttp_get_error_pos(&parser_);
      size_t at = pos != nullptr && pos >= data && pos <= data + len ? static_cast<size_t>(pos - data) : len;
      if (err == HPE_PAUSED) {
        if (interim_) {
          start_message();
          off = at;
          if (off == len) return {State::kNeedMore, len};
          continue;
        }
        state_ = State::kMessageDone;
        return {state_, at};
      }
      if (!callback_failed_) {
        const char* reason = llhttp_get_error_reason(&parser_);
        error_.assign("invalid upstream response: ");
        error_.append(reason != nullptr ? reason : llhttp_errno_name(err));
      }
      state_ = State::kError;
      return {state_, at};
    }
  }

  bool finish() {
    if (state_ == State::kMessageDone) return true;
    if (state_ == State::kError) return false;
    if (started_ && head_delivered_ && head_.body == BodyKind::kUntilClose) {
      // llhttp_finish() runs on_message_complete for a close-delimited body; our
      // callback pauses, which is success here.
      llhttp_errno_t err = llhttp_finish(&parser_);
      if (err == HPE_OK || err == HPE_PAUSED) {
        state_ = State::kMessageDone;
        return true;
      }
    }
    error_.assign(started_ ? "upstream closed the connection in the middle of the response"
                           : "upstream closed the connection without responding");
    state_ = State::kError;
    return false;
  }

  llhttp_t parser_;
  ResponseParser::Handler* handler_;
  State state_ = State::kNeedMore;
  std::string error_;
  ResponseHead head_;
  size_t headers_used_ = 0;  // headers of the current message in head_.headers
  std::string field_;
  std::string value_;
  uint64_t head_bytes_ = 0;
  bool request_was_head_ = false;
  bool started_ = false;
  bool head_delivered_ = false;
  bool interim_ = false;
  bool callback_failed_ = false;
};

ResponseParser::ResponseParser(Handler* handler) : impl_(std::make_unique<Impl>(handler)) {}

ResponseParser::~ResponseParser() = default;

void ResponseParser::begin(bool request_was_head) { impl_->begin(request_was_head); }

ResponseParser::Outcome ResponseParser::execute(const char* data, size_t len) { return impl_->execute(data, len); }

bool ResponseParser::finish() { return impl_->finish(); }

bool ResponseParser::started() const { return impl_->started_; }

const std::string& ResponseParser::error() const { return impl_->error_; }

}  // namespace fg::http
