// Strict request parsing: llhttp does the grammar, a byte pre-scan of the head and a
// check of the collected headers refuse what llhttp tolerates but a proxy must not
// forward (request smuggling vectors, oversized heads, upgrades).
//
// llhttp 8 is lenient about chunk framing: it skips whatever byte follows the CR of a
// chunk-size line, the two bytes after chunk data and the byte after the CR that ends
// the trailers. Those bytes are checked here, and the trailer section goes through the
// same byte pre-scan as the head. The head itself is only delivered once llhttp has run
// its own post-header checks (an invalid Transfer-Encoding is refused there), so that a
// request llhttp refuses never reaches the handler.
#include "http/request_parser.h"

#include <llhttp.h>

#include <algorithm>
#include <string>
#include <utility>

#include "http/path.h"

namespace fg::http {

namespace {

constexpr size_t kReservedHeaders = 16;
constexpr std::string_view kCrlf = "\r\n";

// Bytes that change no state of the head pre-scan: inside a header line anything but
// CR, LF and control bytes (HTAB allowed); inside the request-target also not SP.
struct ByteSet {
  bool ok[256];
  constexpr explicit ByteSet(bool space) : ok() {
    for (int c = 0; c < 256; ++c) ok[c] = (c > 0x20 && c != 0x7f) || (space && (c == ' ' || c == '\t'));
  }
};
constexpr ByteSet kFieldByte(true);
constexpr ByteSet kTargetByte(false);
constexpr std::string_view kBadChunkData = "chunk data not followed by CRLF";
constexpr std::string_view kBadChunkLine = "chunk-size line not ended by CRLF";

bool is_ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

// Strict Content-Length: 1*DIGIT without sign, inner spaces or list syntax ("5, 5"), and
// no overflow. llhttp checks most of this already; repeating it keeps the rule in one
// readable place and independent of llhttp's leniency defaults.
bool parse_content_length(std::string_view v, uint64_t* out) {
  v = trim_ows(v);
  if (v.empty()) return false;
  uint64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return false;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (n > (UINT64_MAX - d) / 10) return false;
    n = n * 10 + d;
  }
  *out = n;
  return true;
}

// True when the comma-separated list `v` contains `token` (case-insensitive, OWS trimmed).
bool has_token(std::string_view v, std::string_view token) {
  while (!v.empty()) {
    size_t comma = v.find(',');
    std::string_view item = trim_ows(v.substr(0, comma));
    if (iequals(item, token)) return true;
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  return false;
}

// RFC 9110 token: llhttp 8 lets spaces and empty names through in header names, which
// other implementations would read differently, so names are checked here.
bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    const bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alnum && std::string_view("!#$%&'*+-.^_`|~").find(ch) == std::string_view::npos) return false;
  }
  return true;
}

}  // namespace

struct RequestParser::Impl {
  // Where the pre-scan is inside the head. The request line is split into its three
  // parts only to measure the request-target for the 414 limit.
  enum class Part : uint8_t { kMethod, kTarget, kVersion, kHeaders };

  Impl(RequestParser::Handler* handler, Limits limits) : handler_(handler), limits_(limits) {
    llhttp_init(&parser_, HTTP_REQUEST, &settings());
    parser_.data = this;
    reset();
  }

  static const llhttp_settings_t& settings() {
    static const llhttp_settings_t s = [] {
      llhttp_settings_t st;
      llhttp_settings_init(&st);
      st.on_method = [](llhttp_t* p, const char* at, size_t n) { return self(p)->on_method(at, n); };
      st.on_url = [](llhttp_t* p, const char* at, size_t n) { return self(p)->on_url(at, n); };
      st.on_header_field = [](llhttp_t* p, const char* at, size_t n) { return self(p)->on_header_field(at, n); };
      st.on_header_value = [](llhttp_t* p, const char* at, size_t n) { return self(p)->on_header_value(at, n); };
      st.on_header_value_complete = [](llhttp_t* p) { return self(p)->on_header_value_complete(); };
      st.on_headers_complete = [](llhttp_t* p) { return self(p)->on_headers_complete(); };
      st.on_chunk_header = [](llhttp_t* p) { return self(p)->on_chunk_header(); };
      st.on_body = [](llhttp_t* p, const char* at, size_t n) { return self(p)->on_body(at, n); };
      st.on_message_complete = [](llhttp_t* p) { return self(p)->on_message_complete(); };
      return st;
    }();
    return s;
  }

  static Impl* self(llhttp_t* p) { return static_cast<Impl*>(p->data); }

  void reset() {
    llhttp_reset(&parser_);
    state_ = State::kNeedMore;
    head_ = RequestHead{};
    head_.headers.reserve(kReservedHeaders);
    field_.clear();
    value_.clear();
    seen_any_ = false;
    headers_done_ = false;
    head_delivered_ = false;
    message_done_ = false;
    callback_failed_ = false;
    scan_done_ = false;
    in_trailers_ = false;
    after_cr_ = false;
    line_start_ = true;
    part_ = Part::kMethod;
    head_bytes_ = 0;
    target_bytes_ = 0;
    trailer_bytes_ = 0;
    pause_ = Pause::kNone;
    chunked_ = false;
    chunk_remaining_ = 0;
    crlf_pending_ = 0;
    buf_end_ = nullptr;
  }

  void fail(int status, std::string_view code, std::string_view message) {
    error_.status = status;
    error_.code.assign(code);
    error_.message.assign(message);
    state_ = State::kError;
  }

  // Pre-scan of the raw head (or trailer section) bytes, one state machine step per byte
  // so that the verdict does not depend on how the input is split. Returns how many bytes
  // of `p` are clean; on a violation it fills `*pending` and stops at the offending byte.
  // The error is only applied after llhttp has seen the clean prefix, so that whichever
  // problem comes first in the byte stream is the one reported.
  size_t scan_head(const char* p, size_t n, ParseError* pending, bool* violated) {
    // The state lives in locals while scanning: `p` is a char pointer, which may alias
    // any member, so member state would be stored and reloaded around every byte read.
    bool after_cr = after_cr_;
    bool line_start = line_start_;
    Part part = part_;
    uint64_t head_bytes = head_bytes_;
    uint64_t target_bytes = target_bytes_;
    auto done = [&](size_t consumed) {
      after_cr_ = after_cr;
      line_start_ = line_start;
      part_ = part;
      head_bytes_ = head_bytes;
      target_bytes_ = target_bytes;
      return consumed;
    };
    // Builds the message only when a request is refused.
    auto where = [this](std::string_view before, std::string_view after) {
      std::string m(before);
      m.append(in_trailers_ ? "chunked trailers" : "request head").append(after);
      return m;
    };
    auto refuse = [&](size_t i, int status, const char* code, std::string msg) {
      pending->status = status;
      pending->code = code;
      pending->message = std::move(msg);
      *violated = true;
      return done(i);
    };
    for (size_t i = 0; i < n; ++i) {
      // Inside a header line or the request-target, runs of ordinary bytes change no
      // state but the counters: they are skipped in one tight loop, bounded so that the
      // byte that crosses a limit still goes through the step below.
      if (!after_cr && !line_start && (part == Part::kHeaders || part == Part::kTarget)) {
        size_t lim = std::min(n, i + (limits_.max_header_bytes - head_bytes));
        const bool target = part == Part::kTarget;
        if (target) lim = std::min(lim, i + (limits_.max_uri_bytes - std::min(target_bytes, limits_.max_uri_bytes)));
        const bool* plain = target ? kTargetByte.ok : kFieldByte.ok;
        size_t j = i;
        while (j < lim && plain[static_cast<unsigned char>(p[j])]) ++j;
        head_bytes += j - i;
        if (target) target_bytes += j - i;
        i = j;
        if (i == n) return done(n);
      }
      const unsigned char c = static_cast<unsigned char>(p[i]);
      ++head_bytes;
      if (after_cr) {
        if (c != '\n') return refuse(i, 400, "smuggling", where("bare CR in ", ""));
        after_cr = false;
        if (line_start) {
          // An empty line before the request line is tolerated (RFC 9112 §2.2; llhttp
          // does the same). Anywhere else it ends the head.
          if (part != Part::kMethod) {
            scan_done_ = true;
            if (head_bytes > limits_.max_header_bytes) {
              return refuse(i, 431, "header_too_large", where("", " too large"));
            }
            return done(i + 1);
          }
        } else {
          part = Part::kHeaders;
          line_start = true;
        }
      } else if (c == '\r') {
        after_cr = true;
      } else if (c == '\n') {
        return refuse(i, 400, "smuggling", where("bare LF in ", ""));
      } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
        return refuse(i, 400, "smuggling", where("control character in ", ""));
      } else if (part == Part::kHeaders) {
        // A header line that starts with whitespace is obs-fold (or a malformed first
        // header); intermediaries disagree on how to unfold it, so it is refused.
        if (line_start && (c == ' ' || c == '\t')) {
          return refuse(i, 400, "smuggling", where("obs-fold in ", ""));
        }
        line_start = false;
      } else {
        line_start = false;
        if (c == ' ') {
          if (part == Part::kMethod) {
            part = Part::kTarget;
          } else if (part == Part::kTarget) {
            part = Part::kVersion;
          }
        } else if (part == Part::kTarget && ++target_bytes > limits_.max_uri_bytes) {
          return refuse(i, 414, "uri_too_long", "request-target too long");
        }
      }
      if (head_bytes > limits_.max_header_bytes) {
        return refuse(i, 431, "header_too_large", where("", " too large"));
      }
    }
    return done(n);
  }

  Outcome execute(const char* data, size_t len) {
    if (state_ != State::kNeedMore) return {state_, 0};
    if (len == 0) return {State::kNeedMore, 0};
    seen_any_ = true;
    const char* const end = data + len;

    // The previous input ended inside the CRLF that must follow a chunk's data: the first
    // bytes here complete it. They are only checked; llhttp still consumes them.
    for (const char* c = data; crlf_pending_ > 0 && c < end; ++c, --crlf_pending_) {
      if (*c != kCrlf[kCrlf.size() - crlf_pending_]) {
        fail(400, "bad_request", kBadChunkData);
        return {state_, static_cast<size_t>(c - data)};
      }
    }

    const char* p = data;
    for (;;) {
      ParseError pending;
      bool violated = false;
      const char* stop = end;
      if (!scan_done_) {
        // Once the head (or the trailer section) ends cleanly the rest of the input goes
        // to llhttp unscanned: body bytes, or a pipelined request llhttp stops in front of.
        size_t clean = scan_head(p, static_cast<size_t>(end - p), &pending, &violated);
        if (violated) stop = p + clean;
      }

      llhttp_errno_t err = HPE_OK;
      if (stop > p) {
        pause_ = Pause::kNone;
        buf_end_ = stop;
        err = llhttp_execute(&parser_, p, static_cast<size_t>(stop - p));
      }
      if (err == HPE_PAUSED && !message_done_) {
        const char* pos = llhttp_get_error_pos(&parser_);
        llhttp_resume(&parser_);
        err = HPE_OK;
        if (pause_ == Pause::kHeadersComplete) {
          err = finish_head(pos);
        } else if (pause_ == Pause::kChunkHeader) {
          // llhttp entered the end of the chunk-size line on a CR and skipped the byte
          // after it, which is the one before `pos` (consumed in this very call).
          if (pos[-1] != '\n') {
            fail(400, "bad_request", kBadChunkLine);
            return {state_, static_cast<size_t>(pos - 1 - data)};
          }
          if (chunk_remaining_ == 0) start_trailer_scan();
        }
        if (err == HPE_OK) {
          p = pos;
          continue;
        }
      }
      if (err == HPE_PAUSED) {
        // on_message_complete pauses: the position is just past the message.
        state_ = State::kMessageDone;
        return {state_, static_cast<size_t>(llhttp_get_error_pos(&parser_) - data)};
      }
      if (err != HPE_OK) {
        if (!callback_failed_) fail_from_llhttp(err);
        state_ = State::kError;
        const char* pos = llhttp_get_error_pos(&parser_);
        size_t consumed = pos != nullptr && pos >= data && pos <= stop ? static_cast<size_t>(pos - data)
                                                                       : static_cast<size_t>(stop - data);
        return {state_, consumed};
      }
      if (violated) {
        error_ = std::move(pending);
        state_ = State::kError;
        return {state_, static_cast<size_t>(stop - data)};
      }
      return {State::kNeedMore, len};
    }
  }

  // on_headers_complete accepted the head and paused llhttp in front of its own
  // post-header checks. A pass over no bytes runs them (they need no input); only when
  // they pass is the head delivered. A message without body completes in that same pass,
  // and on_message_complete delivers the head first.
  llhttp_errno_t finish_head(const char* pos) {
    buf_end_ = pos;
    llhttp_errno_t err = llhttp_execute(&parser_, pos, 0);
    if (err == HPE_OK) deliver_head();
    return err;
  }

  void deliver_head() {
    if (head_delivered_) return;
    head_delivered_ = true;
    handler_->on_request_head(head_);
  }

  // After the last chunk the trailer section is scanned like a head: CRLF line endings,
  // no control bytes, no obs-fold, bounded size.
  void start_trailer_scan() {
    scan_done_ = false;
    after_cr_ = false;
    line_start_ = true;
    part_ = Part::kHeaders;
    head_bytes_ = 0;
    in_trailers_ = true;
  }

  void fail_from_llhttp(llhttp_errno_t err) {
    const char* reason = llhttp_get_error_reason(&parser_);
    std::string_view msg = reason != nullptr ? reason : "malformed request";
    switch (err) {
      case HPE_INVALID_VERSION:
        fail(505, "http_version_not_supported", msg);
        break;
      case HPE_UNEXPECTED_CONTENT_LENGTH:
      case HPE_INVALID_CONTENT_LENGTH:
      case HPE_INVALID_TRANSFER_ENCODING:
        fail(400, "smuggling", msg);
        break;
      case HPE_PAUSED_UPGRADE:
        // Unreachable while upgrades and CONNECT are refused in on_headers_complete;
        // kept so that a future llhttp behaviour change cannot open a tunnel.
        fail(400, "upgrade_not_supported", "protocol upgrade is not supported");
        break;
      default:
        fail(400, "bad_request", msg);
        break;
    }
  }

  // A callback refusing the request records the error itself and returns -1, which makes
  // llhttp stop with an error code we then ignore.
  int refuse_in_callback(int status, std::string_view code, std::string_view message) {
    fail(status, code, message);
    callback_failed_ = true;
    return -1;
  }

  int on_method(const char* at, size_t n) {
    head_.method.append(at, n);
    return 0;
  }

  int on_url(const char* at, size_t n) {
    head_.target.append(at, n);
    return 0;
  }

  int on_header_field(const char* at, size_t n) {
    if (headers_done_) return count_trailer(n);
    field_.append(at, n);
    return 0;
  }

  int on_header_value(const char* at, size_t n) {
    if (headers_done_) return count_trailer(n);
    value_.append(at, n);
    return 0;
  }

  // Trailers are parsed but dropped (the body is re-framed upstream); they still count
  // against the head limit so that an endless trailer section is cut.
  int count_trailer(size_t n) {
    trailer_bytes_ += n;
    if (trailer_bytes_ > limits_.max_header_bytes) {
      return refuse_in_callback(431, "header_too_large", "chunked trailers too large");
    }
    return 0;
  }

  int on_header_value_complete() {
    if (headers_done_) return 0;
    if (!is_token(field_)) return refuse_in_callback(400, "bad_request", "invalid header name");
    // CGI-style origins read '_' as '-', so "Transfer_Encoding" could frame the request
    // for them while it means nothing here. Such headers are dropped before any check
    // looks at the head, as nginx does by default.
    if (limits_.underscores_in_headers || field_.find('_') == std::string::npos) {
      std::string_view v = trim_ows(value_);
      head_.headers.push_back(Header{std::move(field_), std::string(v)});
    }
    field_.clear();
    value_.clear();
    return 0;
  }

  int on_headers_complete() {
    head_.version_major = llhttp_get_http_major(&parser_);
    head_.version_minor = llhttp_get_http_minor(&parser_);
    if (head_.version_major != 1 || head_.version_minor > 1) {
      return refuse_in_callback(505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are supported");
    }
    const bool http11 = head_.version_minor == 1;

    int cl_count = 0, te_count = 0, host_count = 0;
    const Header* cl = nullptr;
    const Header* te = nullptr;
    const Header* host = nullptr;
    bool upgrade = false, bad_expect = false, expect_continue = false;
    for (const Header& h : head_.headers) {
      const std::string_view name = h.name;
      if (iequals(name, "content-length")) {
        ++cl_count;
        cl = &h;
      } else if (iequals(name, "transfer-encoding")) {
        ++te_count;
        te = &h;
      } else if (iequals(name, "host")) {
        ++host_count;
        host = &h;
      } else if (iequals(name, "upgrade")) {
        upgrade = true;
      } else if (iequals(name, "connection")) {
        if (http11 && has_token(h.value, "upgrade")) upgrade = true;
        // Connection names headers to strip before forwarding; these three carry the
        // framing and the routing, and stripping them would hand the upstream a
        // different request than the one checked here.
        if (has_token(h.value, "host") || has_token(h.value, "content-length") ||
            has_token(h.value, "transfer-encoding")) {
          return refuse_in_callback(400, "bad_connection_header",
                                    "Connection names Host, Content-Length or Transfer-Encoding");
        }
      } else if (iequals(name, "expect")) {
        if (iequals(h.value, "100-continue")) {
          expect_continue = true;
        } else {
          bad_expect = true;
        }
      }
    }

    // Framing first: these are the request-smuggling vectors of SPEC §3. Anything that
    // two HTTP implementations could frame differently is refused outright.
    if (cl_count > 0 && te_count > 0) {
      return refuse_in_callback(400, "smuggling", "Content-Length together with Transfer-Encoding");
    }
    if (cl_count > 1) return refuse_in_callback(400, "smuggling", "several Content-Length headers");
    if (te_count > 1) return refuse_in_callback(400, "smuggling", "several Transfer-Encoding headers");
    if (te != nullptr) {
      if (!iequals(te->value, "chunked")) {
        return refuse_in_callback(400, "smuggling", "Transfer-Encoding other than chunked");
      }
      // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
      if (!http11) return refuse_in_callback(400, "smuggling", "Transfer-Encoding in an HTTP/1.0 request");
      head_.body = BodyKind::kChunked;
      chunked_ = true;
    } else if (cl != nullptr) {
      uint64_t n = 0;
      if (!parse_content_length(cl->value, &n)) {
        return refuse_in_callback(400, "smuggling", "invalid Content-Length");
      }
      // Content-Length: 0 stays kContentLength so that the upstream request carries it.
      head_.body = BodyKind::kContentLength;
      head_.content_length = n;
    } else {
      head_.body = BodyKind::kNone;
    }

    if (host_count > 1) return refuse_in_callback(400, "bad_request", "several Host headers");
    if (host_count == 0 && http11) return refuse_in_callback(400, "bad_request", "missing Host header");
    if (host != nullptr && !is_valid_host(host->value)) {
      return refuse_in_callback(400, "bad_host", "invalid Host header");
    }

    // CONNECT answers 405 rather than 400: the request is well-formed, the gateway just
    // does not offer tunnels, and 405 tells the client so.
    if (llhttp_get_method(&parser_) == HTTP_CONNECT) {
      return refuse_in_callback(405, "method_not_allowed", "CONNECT is not supported");
    }
    if (upgrade) return refuse_in_callback(400, "upgrade_not_supported", "protocol upgrade is not supported");
    if (bad_expect) return refuse_in_callback(417, "expectation_failed", "only Expect: 100-continue is supported");
    if (host != nullptr) head_.host = host->value;
    if (int rc = canonicalize_request_target(); rc != 0) return rc;

    // RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored.
    head_.expect_continue = expect_continue && http11;
    head_.keep_alive = llhttp_should_keep_alive(&parser_) != 0;

    // Delivery waits until llhttp has passed its post-header checks: see finish_head().
    headers_done_ = true;
    pause_ = Pause::kHeadersComplete;
    return HPE_PAUSED;
  }

  // Replaces head_.target with its canonical origin-form (http/path.h), so that route
  // matching, the route's policies and the upstream all see one spelling. Returns 0, or
  // the callback error after refusing the request.
  int canonicalize_request_target() {
    std::string_view target = head_.target;
    if (std::string_view why = check_target_bytes(target); !why.empty()) {
      return refuse_in_callback(400, "bad_target", why);
    }
    // "OPTIONS *" asks about the server itself; it stays as it is (no route path can
    // match it). Any other method with "*" has no meaning.
    if (target == "*") {
      if (llhttp_get_method(&parser_) == HTTP_OPTIONS) return 0;
      return refuse_in_callback(400, "bad_target", "'*' is only valid with OPTIONS");
    }
    if (std::string_view authority; split_absolute_form(&target, &authority)) {
      // RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host.
      if (!is_valid_host(authority)) {
        return refuse_in_callback(400, "bad_host", "invalid authority in request-target");
      }
      head_.host.assign(authority);
      bool replaced = false;
      for (Header& h : head_.headers) {
        if (iequals(h.name, "host")) {
          h.value = head_.host;
          replaced = true;
        }
      }
      if (!replaced) head_.headers.push_back(Header{"Host", head_.host});
    } else if (target.empty() || target.front() != '/') {
      return refuse_in_callback(400, "bad_target", "request-target is neither a path nor an absolute URI");
    }
    std::string origin;  // "http://host" and "http://host?q" have the path "/"
    if (target.empty() || target.front() == '?') {
      origin.assign("/").append(target);
      target = origin;
    }
    std::string canonical;
    if (std::string_view why = canonicalize_target(target, limits_.merge_slashes, &canonical); !why.empty()) {
      return refuse_in_callback(400, "bad_path", why);
    }
    head_.target = std::move(canonical);
    return 0;
  }

  // "http://authority/path?query" (scheme in any case): `*target` becomes the part from
  // the path on (possibly empty), `*authority` the authority. False for other forms.
  static bool split_absolute_form(std::string_view* target, std::string_view* authority) {
    std::string_view t = *target;
    size_t scheme = 0;
    if (t.size() >= 7 && iequals(t.substr(0, 7), "http://")) {
      scheme = 7;
    } else if (t.size() >= 8 && iequals(t.substr(0, 8), "https://")) {
      scheme = 8;
    } else {
      return false;
    }
    t.remove_prefix(scheme);
    const size_t end = t.find_first_of("/?");
    *authority = t.substr(0, end);
    *target = end == std::string_view::npos ? std::string_view() : t.substr(end);
    return true;
  }

  // Pauses so that execute() can check the end of the chunk-size line (see there).
  int on_chunk_header() {
    chunk_remaining_ = parser_.content_length;
    pause_ = Pause::kChunkHeader;
    return HPE_PAUSED;
  }

  int on_body(const char* at, size_t n) {
    if (n == 0) return 0;
    handler_->on_request_body(at, n);
    if (!chunked_) return 0;
    // llhttp never hands out more than the chunk holds; the min() only guards the count.
    chunk_remaining_ -= std::min<uint64_t>(n, chunk_remaining_);
    if (chunk_remaining_ > 0) return 0;
    // The chunk's data is complete: llhttp 8 skips the next two bytes unseen, they must
    // be CRLF. Those that are not in this input are checked at the next execute().
    const char* after = at + n;
    const size_t avail = std::min(kCrlf.size(), static_cast<size_t>(buf_end_ - after));
    if (std::string_view(after, avail) != kCrlf.substr(0, avail)) {
      return refuse_in_callback(400, "bad_request", kBadChunkData);
    }
    crlf_pending_ = kCrlf.size() - avail;
    return 0;
  }

  int on_message_complete() {
    deliver_head();
    message_done_ = true;
    handler_->on_request_complete();
    // Pausing makes llhttp_execute() return right after this message, which is what lets
    // the caller deal with pipelined requests one at a time.
    return HPE_PAUSED;
  }

  bool finish() {
    if (state_ == State::kError) return false;
    if (state_ == State::kMessageDone || !seen_any_) return true;
    fail(400, "incomplete_request", "connection closed before the request was complete");
    return false;
  }

  // Why llhttp_execute() returned HPE_PAUSED when the message is not complete.
  enum class Pause : uint8_t { kNone, kHeadersComplete, kChunkHeader };

  llhttp_t parser_;
  RequestParser::Handler* handler_;
  Limits limits_;
  State state_ = State::kNeedMore;
  ParseError error_;
  RequestHead head_;
  std::string field_;  // header name pieces of the header being parsed
  std::string value_;  // header value pieces of the header being parsed
  bool seen_any_ = false;
  bool headers_done_ = false;    // on_headers_complete accepted the head
  bool head_delivered_ = false;  // on_request_head was called
  bool message_done_ = false;
  bool callback_failed_ = false;
  // Pre-scan state.
  bool scan_done_ = false;
  bool in_trailers_ = false;  // scanning the trailer section rather than the head
  bool after_cr_ = false;
  bool line_start_ = true;
  Part part_ = Part::kMethod;
  uint64_t head_bytes_ = 0;
  uint64_t target_bytes_ = 0;
  uint64_t trailer_bytes_ = 0;
  // Chunk framing state.
  Pause pause_ = Pause::kNone;
  bool chunked_ = false;
  uint64_t chunk_remaining_ = 0;  // data bytes of the current chunk not delivered yet
  size_t crlf_pending_ = 0;       // bytes of the CRLF after chunk data still to check
  const char* buf_end_ = nullptr;  // end of the input llhttp is executing
};

RequestParser::RequestParser(Handler* handler, Limits limits)
    : impl_(std::make_unique<Impl>(handler, limits)) {}

RequestParser::~RequestParser() = default;

RequestParser::Outcome RequestParser::execute(const char* data, size_t len) { return impl_->execute(data, len); }

void RequestParser::reset_for_next() {
  // A full llhttp reset (not just resume) also leaves llhttp's "connection closed"
  // state that it enters after a non-keep-alive message.
  impl_->reset();
}

bool RequestParser::finish() { return impl_->finish(); }

bool RequestParser::idle() const { return !impl_->seen_any_; }

bool RequestParser::in_body() const { return impl_->head_delivered_ && !impl_->message_done_; }

const ParseError& RequestParser::error() const { return impl_->error_; }

void RequestParser::set_limits(Limits limits) { impl_->limits_ = limits; }

}  // namespace fg::http
