// Building the bytes Floodgate writes: the request head sent upstream, the response head
// sent to the client, chunk framing, and gateway-made JSON errors.
#pragma once

#include <string>
#include <string_view>

#include "http/message.h"

namespace fg::http {

// True for hop-by-hop headers that a proxy must not forward: Connection, Keep-Alive,
// TE, Trailer, Transfer-Encoding, Upgrade, Proxy-Connection, plus every name listed in
// the message's Connection header(s) (`connection_tokens`, comma-separated, any case).
bool is_hop_by_hop(std::string_view name, std::string_view connection_tokens);

// All values of the Connection header(s) joined with ",".
std::string connection_tokens(const std::vector<Header>& headers);

struct ForwardInfo {
  std::string_view client_ip;   // appended to X-Forwarded-For
  std::string_view proto;       // "http" or "https" (X-Forwarded-Proto)
  std::string_view request_id;  // set as X-Request-Id (replaces any incoming one)
  // When not empty: the whole X-Forwarded-For value to send instead of the incoming
  // chain + client_ip (the chain a trusted proxy passed on, http/real_ip.h).
  std::string_view forwarded_for = {};
};

// Appends the upstream request head to `out`: "METHOD target HTTP/1.1", the end-to-end
// headers of `head` (Host preserved; Expect dropped: the gateway answers 100-continue
// itself; X-Request-Id replaced; X-Forwarded-For extended), X-Forwarded-Proto, and the
// framing: Content-Length when known, "Transfer-Encoding: chunked" for chunked bodies.
// HTTP/1.1 keep-alive is implied.
void append_upstream_request_head(std::string& out, const RequestHead& head, const ForwardInfo& info);

// How the response body is framed towards the client.
enum class ClientFraming { kNone, kContentLength, kChunked, kClose };

// Chooses the client framing for a response: Content-Length passes through; an unknown
// length becomes chunked for HTTP/1.1 clients and close-delimited for HTTP/1.0 ones;
// HEAD responses and 1xx/204/304 have no body.
ClientFraming choose_client_framing(const ResponseHead& resp, const RequestHead& req);

// Appends the response head for the client: status line in the client's version
// (HTTP/1.1 or HTTP/1.0), end-to-end headers of `resp`, `extra` (already formatted
// "Name: value\r\n" lines), framing headers, and "Connection: close" or
// "Connection: keep-alive" (the latter for HTTP/1.0 keep-alive clients).
void append_client_response_head(std::string& out, const ResponseHead& resp, const RequestHead& req,
                                 ClientFraming framing, bool keep_alive, std::string_view extra);

// Chunk framing: "<hex len>\r\n" before the data, "\r\n" after; the last chunk "0\r\n\r\n".
void append_chunk_header(std::string& out, size_t len);
inline constexpr std::string_view kChunkTrailer = "\r\n";
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

// A complete gateway-made error response:
// status line, Content-Type: application/json, Content-Length, X-Request-Id,
// Connection: close|keep-alive, optional `extra` header lines, and the body
// {"error":"<code>","message":"<message>","request_id":"<id>"}.
// `http10` selects the HTTP/1.0 status line.
std::string make_error_response(int status, std::string_view code, std::string_view message,
                                std::string_view request_id, bool keep_alive, bool http10 = false,
                                std::string_view extra = {});
// The same, appended to `out` (a caller's reused buffer: no allocation once it is large
// enough).
void append_error_response(std::string& out, int status, std::string_view code, std::string_view message,
                           std::string_view request_id, bool keep_alive, bool http10 = false,
                           std::string_view extra = {});

// Standard reason phrase for a status code ("OK", "Bad Gateway", ...; "Unknown" otherwise).
std::string_view reason_phrase(int status);

// Appends `s` to `out` escaped for a JSON string (without quotes).
void append_json_escaped(std::string& out, std::string_view s);

}  // namespace fg::http
