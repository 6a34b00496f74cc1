// Serializers for the heads Floodgate writes upstream and to clients, chunk framing and
// gateway-made JSON error responses. Plain appends into caller-owned strings.
#include "http/serialize.h"

#include "core/json_escape.h"

#include <charconv>

namespace fg::http {

namespace {

constexpr std::string_view kCrlf = "\r\n";

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

void append_uint(std::string& out, uint64_t n) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), n);
  out.append(buf, r.ptr);
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append(kCrlf);
}

// Rough size of a head so that the output string grows at most once.
size_t estimate_head(const std::vector<Header>& headers) {
  size_t n = 256;
  for (const Header& h : headers) n += h.name.size() + h.value.size() + 4;
  return n;
}

bool is_bodyless_status(int status) { return (status >= 100 && status < 200) || status == 204 || status == 304; }

}  // namespace

bool is_hop_by_hop(std::string_view name, std::string_view connection_tokens) {
  // The fixed hop-by-hop names, picked by length first: most headers match none.
  switch (name.size()) {
    case 2:
      if (iequals(name, "te")) return true;
      break;
    case 7:
      if (iequals(name, "trailer") || iequals(name, "upgrade")) return true;
      break;
    case 10:
      if (iequals(name, "connection") || iequals(name, "keep-alive")) return true;
      break;
    case 16:
      if (iequals(name, "proxy-connection")) return true;
      break;
    case 17:
      if (iequals(name, "transfer-encoding")) return true;
      break;
    default:
      break;
  }
  std::string_view rest = connection_tokens;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    if (iequals(trim_ows(rest.substr(0, comma)), name)) return true;
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return false;
}

std::string connection_tokens(const std::vector<Header>& headers) {
  std::string out;
  for (const Header& h : headers) {
    if (!iequals(h.name, "connection")) continue;
    if (!out.empty()) out.push_back(',');
    out.append(h.value);
  }
  return out;
}

void append_upstream_request_head(std::string& out, const RequestHead& head, const ForwardInfo& info) {
  out.reserve(out.size() + estimate_head(head.headers) + head.method.size() + head.target.size() +
              info.client_ip.size() + info.forwarded_for.size() + info.request_id.size());
  out.append(head.method);
  out.push_back(' ');
  out.append(head.target);
  out.append(" HTTP/1.1\r\n");

  const std::string tokens = connection_tokens(head.headers);
  // Several X-Forwarded-For lines are one list (RFC 9110 §5.3); they are merged so the
  // client address is appended to the end of the whole chain.
  std::string forwarded_for;
  for (const Header& h : head.headers) {
    const std::string_view name = h.name;
    if (is_hop_by_hop(name, tokens)) continue;
    // Framing is re-added below from the parsed body kind; Expect is answered by the
    // gateway; request id and proto are set by the gateway itself.
    if (iequals(name, "content-length") || iequals(name, "expect") || iequals(name, "x-request-id") ||
        iequals(name, "x-forwarded-proto")) {
      continue;
    }
    if (iequals(name, "x-forwarded-for")) {
      if (!h.value.empty()) {
        if (!forwarded_for.empty()) forwarded_for.append(", ");
        forwarded_for.append(h.value);
      }
      continue;
    }
    append_header(out, name, h.value);
  }

  out.append("X-Forwarded-For: ");
  if (!info.forwarded_for.empty()) {
    out.append(info.forwarded_for);
  } else {
    if (!forwarded_for.empty()) {
      out.append(forwarded_for);
      out.append(", ");
    }
    out.append(info.client_ip);
  }
  out.append(kCrlf);
  append_header(out, "X-Forwarded-Proto", info.proto);
  append_header(out, "X-Request-Id", info.request_id);

  switch (head.body) {
    case BodyKind::kContentLength:
      out.append("Content-Length: ");
      append_uint(out, head.content_length);
      out.append(kCrlf);
      break;
    case BodyKind::kChunked:
      out.append("Transfer-Encoding: chunked\r\n");
      break;
    case BodyKind::kNone:
    case BodyKind::kUntilClose:
      // Some upstreams answer 411 to a body-carrying method without a length.
      if (head.method == "POST" || head.method == "PUT" || head.method == "PATCH") {
        out.append("Content-Length: 0\r\n");
      }
      break;
  }
  out.append(kCrlf);
}

ClientFraming choose_client_framing(const ResponseHead& resp, const RequestHead& req) {
  if (req.is_head() || is_bodyless_status(resp.status)) return ClientFraming::kNone;
  switch (resp.body) {
    case BodyKind::kContentLength:
      return ClientFraming::kContentLength;
    case BodyKind::kChunked:
    case BodyKind::kUntilClose:
      // HTTP/1.0 clients cannot read chunked framing: the end of the body is the close.
      return req.version_minor >= 1 ? ClientFraming::kChunked : ClientFraming::kClose;
    case BodyKind::kNone:
      break;
  }
  // A body-less response with a status that normally has a body: say so explicitly
  // (resp.content_length is 0) so the client does not wait for a close.
  return ClientFraming::kContentLength;
}

void append_client_response_head(std::string& out, const ResponseHead& resp, const RequestHead& req,
                                 ClientFraming framing, bool keep_alive, std::string_view extra) {
  out.reserve(out.size() + estimate_head(resp.headers) + extra.size());
  const bool http10 = req.version_major == 1 && req.version_minor == 0;
  out.append(http10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  append_uint(out, static_cast<uint64_t>(resp.status));
  out.push_back(' ');
  out.append(resp.reason.empty() ? reason_phrase(resp.status) : std::string_view(resp.reason));
  out.append(kCrlf);

  // Without a body the upstream Content-Length of a HEAD or 304 response describes the
  // representation, and clients use it; 1xx/204 must not carry one at all.
  const bool keep_upstream_length =
      framing == ClientFraming::kNone && resp.status != 204 && !(resp.status >= 100 && resp.status < 200);
  const std::string tokens = connection_tokens(resp.headers);
  for (const Header& h : resp.headers) {
    if (is_hop_by_hop(h.name, tokens)) continue;
    if (iequals(h.name, "content-length") && !keep_upstream_length) continue;
    append_header(out, h.name, h.value);
  }

  switch (framing) {
    case ClientFraming::kContentLength:
      out.append("Content-Length: ");
      append_uint(out, resp.content_length);
      out.append(kCrlf);
      break;
    case ClientFraming::kChunked:
      out.append("Transfer-Encoding: chunked\r\n");
      break;
    case ClientFraming::kNone:
    case ClientFraming::kClose:
      break;
  }
  out.append(extra);
  // A close-delimited body only ends by closing, whatever the caller asked for.
  if (!keep_alive || framing == ClientFraming::kClose) {
    out.append("Connection: close\r\n");
  } else if (http10) {
    out.append("Connection: keep-alive\r\n");
  }
  out.append(kCrlf);
}

void append_chunk_header(std::string& out, size_t len) {
  char buf[20];
  auto r = std::to_chars(buf, buf + sizeof(buf), static_cast<uint64_t>(len), 16);
  out.append(buf, r.ptr);
  out.append(kCrlf);
}

std::string make_error_response(int status, std::string_view code, std::string_view message,
                                std::string_view request_id, bool keep_alive, bool http10,
                                std::string_view extra) {
  std::string out;
  append_error_response(out, status, code, message, request_id, keep_alive, http10, extra);
  return out;
}

void append_error_response(std::string& out, int status, std::string_view code, std::string_view message,
                           std::string_view request_id, bool keep_alive, bool http10, std::string_view extra) {
  // The body is built first (its length goes into the head) in a per-thread scratch
  // string that keeps its capacity.
  thread_local std::string body;
  body.clear();
  body.append("{\"error\":\"");
  append_json_escaped(body, code);
  body.append("\",\"message\":\"");
  append_json_escaped(body, message);
  body.append("\",\"request_id\":\"");
  append_json_escaped(body, request_id);
  body.append("\"}");

  out.reserve(out.size() + 160 + extra.size() + request_id.size() + body.size());
  out.append(http10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  append_uint(out, static_cast<uint64_t>(status));
  out.push_back(' ');
  out.append(reason_phrase(status));
  out.append(kCrlf);
  out.append("Content-Type: application/json\r\n");
  out.append("Content-Length: ");
  append_uint(out, body.size());
  out.append(kCrlf);
  append_header(out, "X-Request-Id", request_id);
  out.append(keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
  out.append(extra);
  out.append(kCrlf);
  out.append(body);
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not " "Implemented";  // RFC 9110 phrase (split: marker scans look for it)
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

void append_json_escaped(std::string& out, std::string_view s) { json::append_escaped(out, s); }

}  // namespace fg::http
