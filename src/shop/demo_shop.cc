// floodgate-demo-shop: a small, fast HTTP/1.1 origin that stands in for a digital-goods
// shop behind the gateway in the run command, the integration tests and the benchmarks.
// Its behaviour (latency, injected errors, hangs) can be changed while it runs.
//
// Usage: floodgate-demo-shop --listen 127.0.0.1:8081 [--threads N] [--latency-ms SPEC]
//                            [--error-rate R] [--name NAME]
//
// Prints "demo-shop listening on HOST:PORT" once every listener accepts connections.
// SIGTERM and SIGINT close everything and exit 0.
//
// Endpoints (HEAD is accepted wherever GET is):
//   GET  /healthz                 200 "ok" (503 while healthy=0); never delayed or counted
//   GET  /api/products[/<id>]     static catalogue, JSON
//   POST /api/orders              201 {"order_id","server","idempotency_key"}
//   POST /notify/*                200 "success" (payment callback stand-in)
//   *    /echo, /echo/*           JSON: method, target, headers in order, body length and
//                                 FNV-1a 64 of the body (so tests can see what was forwarded)
//   GET  /big?bytes=N[&chunked=1] N bytes, byte i = kFillerAlphabet[i % 64], streamed
//   *    /slow?ms=N               answers after N ms
//   *    /close                   answers with Connection: close, then closes
//   GET  /_shop/stats             {"requests","orders","keys":{key:count},"max_concurrent",
//                                  "in_flight","server"}
//   POST /_shop/reset[?config=1]  zeroes the counters (config=1: start-up behaviour too)
//   GET|POST /_shop/config?latency_ms=SPEC&error_rate=R&timeout_rate=R&hang=0|1&healthy=0|1
//
// Every path except /healthz and /_shop/* is a "normal" request: it is counted, delayed by
// the latency SPEC, answered 500 with probability error_rate, and held unanswered while
// hang=1 (answered once hang is set back to 0). With probability timeout_rate a normal
// request is never answered at all (until the client gives up and closes the connection):
// an upstream that times out on a share of its requests. Latency SPEC: "0" none, "5"
// fixed, "5-50" uniform, "p50:5,p99:80" piecewise linear between the given percentiles.
// Idempotency-Key values are counted for POST /api/orders and POST /notify/*.

#include <llhttp.h>
#include <uv.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fg::shop {
namespace {

// Unparsed bytes are held here while a response is outstanding; reading stops when full.
constexpr size_t kReadBufferBytes = 64 * 1024;
// A client that pipelines without reading its answers is not read from beyond this.
constexpr size_t kMaxPendingOutput = 1024 * 1024;
// The gateway enforces the real limits; these only keep a misbehaving client bounded.
constexpr size_t kMaxHeadBytes = 256 * 1024;
constexpr size_t kMaxHeaders = 512;
constexpr size_t kBigPieceBytes = 64 * 1024;
// Held requests look at the hang flag this often; polling avoids cross-thread wakeups.
constexpr uint64_t kHangPollMs = 20;
constexpr double kMaxDelayMs = 3600.0 * 1000.0;

// 64 symbols, so a 64 KiB piece ends exactly where the pattern restarts and the body of
// /big is the same however it is cut into pieces.
constexpr std::string_view kFillerAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static_assert(kFillerAlphabet.size() == 64 && kBigPieceBytes % 64 == 0);
char g_filler[kBigPieceBytes];

constexpr std::string_view kProducts =
    R"({"products":[)"
    R"({"id":1,"name":"Steam Wallet 50","price_cents":5000,"currency":"USD","stock":1000},)"
    R"({"id":2,"name":"Game Key: Starfall","price_cents":2999,"currency":"USD","stock":250},)"
    R"({"id":3,"name":"Music Gift Card 25","price_cents":2500,"currency":"USD","stock":800},)"
    R"({"id":4,"name":"VPN 12 months","price_cents":4800,"currency":"USD","stock":5000}]})";
constexpr std::string_view kProductItems[] = {
    R"({"id":1,"name":"Steam Wallet 50","price_cents":5000,"currency":"USD","stock":1000})",
    R"({"id":2,"name":"Game Key: Starfall","price_cents":2999,"currency":"USD","stock":250})",
    R"({"id":3,"name":"Music Gift Card 25","price_cents":2500,"currency":"USD","stock":800})",
    R"({"id":4,"name":"VPN 12 months","price_cents":4800,"currency":"USD","stock":5000})",
};

constexpr std::string_view kJson = "application/json";
constexpr std::string_view kText = "text/plain";

bool parse_double(std::string_view s, double* out) {
  if (s.empty()) return false;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, *out);
  return ec == std::errc() && p == end && std::isfinite(*out);
}

bool parse_u64(std::string_view s, uint64_t* out) {
  if (s.empty()) return false;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, *out);
  return ec == std::errc() && p == end;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

void append_uint(std::string& out, uint64_t v) {
  char buf[24];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  out.append(buf, p);
}

void append_int(std::string& out, int64_t v) {
  char buf[24];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  out.append(buf, p);
}

void append_double(std::string& out, double v) {
  char buf[32];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  out.append(buf, p);
}

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 when it is not one.
size_t utf8_sequence(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  size_t n;
  uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) { n = 2; cp = c & 0x1F; }
  else if (c >= 0xE0 && c <= 0xEF) { n = 3; cp = c & 0x0F; }
  else if (c >= 0xF0 && c <= 0xF4) { n = 4; cp = c & 0x07; }
  else return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
      (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return n;
}

// Header values may hold any octet; bytes that are not valid UTF-8 are written as
// \u00XX (their Latin-1 reading) so that the echo stays parseable JSON.
void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20 || c == 0x7F) {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 15];
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else if (size_t n = utf8_sequence(s, i); n > 0) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 15];
      ++i;
    }
  }
  out += '"';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Finds NAME in an urlencoded query and percent-decodes its value into *out.
bool query_param(std::string_view query, std::string_view name, std::string* out) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) != name) continue;
    std::string_view raw = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    out->clear();
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '+') {
        *out += ' ';
      } else if (raw[i] == '%' && i + 2 < raw.size() && hex_value(raw[i + 1]) >= 0 &&
                 hex_value(raw[i + 2]) >= 0) {
        *out += static_cast<char>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2]));
        i += 2;
      } else {
        *out += raw[i];
      }
    }
    return true;
  }
  return false;
}

// splitmix64: one generator per worker, so drawing latencies and errors takes no lock.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

// A latency distribution given as points of its quantile function: a draw picks a uniform
// quantile and interpolates linearly between the neighbouring points. "5" is a single
// point; "5-50" is (0,5)..(1,50); "p50:5,p99:80" is (0,5) (0.5,5) (0.99,80) (1,80), i.e.
// half the requests take 5 ms and the slowest percent take 80 ms.
class LatencySpec {
 public:
  static bool parse(std::string_view text, LatencySpec* out, std::string* error) {
    LatencySpec spec;
    text = trim(text);
    spec.text_ = text.empty() ? "0" : std::string(text);
    if (text.empty() || text == "0") {
      *out = std::move(spec);
      return true;
    }
    if (text.find(':') != std::string_view::npos) {
      while (!text.empty()) {
        const size_t comma = text.find(',');
        std::string_view item = trim(text.substr(0, comma));
        text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
        const size_t colon = item.find(':');
        double q, ms;
        if (item.size() < 2 || (item[0] != 'p' && item[0] != 'P') ||
            colon == std::string_view::npos || !parse_double(item.substr(1, colon - 1), &q) ||
            !parse_double(trim(item.substr(colon + 1)), &ms) || q < 0 || q > 100 || ms < 0 ||
            ms > kMaxDelayMs) {
          *error = "latency_ms: expected pNN:MS[,pNN:MS...], got \"" + std::string(item) + "\"";
          return false;
        }
        q /= 100.0;
        if (!spec.points_.empty() &&
            (q <= spec.points_.back().q || ms < spec.points_.back().ms)) {
          *error = "latency_ms: percentiles must increase and their values must not decrease";
          return false;
        }
        spec.points_.push_back({q, ms});
      }
      if (spec.points_.front().q > 0) spec.points_.insert(spec.points_.begin(), {0, spec.points_.front().ms});
      if (spec.points_.back().q < 1) spec.points_.push_back({1, spec.points_.back().ms});
    } else if (const size_t dash = text.find('-'); dash != std::string_view::npos) {
      double lo, hi;
      if (!parse_double(trim(text.substr(0, dash)), &lo) ||
          !parse_double(trim(text.substr(dash + 1)), &hi) || lo < 0 || hi < lo ||
          hi > kMaxDelayMs) {
        *error = "latency_ms: expected LO-HI with 0 <= LO <= HI";
        return false;
      }
      spec.points_ = {{0, lo}, {1, hi}};
    } else {
      double ms;
      if (!parse_double(text, &ms) || ms < 0 || ms > kMaxDelayMs) {
        *error = "latency_ms: expected milliseconds, LO-HI or pNN:MS,...";
        return false;
      }
      spec.points_ = {{0, ms}};
    }
    *out = std::move(spec);
    return true;
  }

  // u is a uniform draw from [0, 1).
  uint64_t draw(double u) const {
    if (points_.empty()) return 0;
    if (points_.size() == 1) return static_cast<uint64_t>(std::llround(points_[0].ms));
    size_t i = 1;
    while (i + 1 < points_.size() && points_[i].q <= u) ++i;
    const Point& a = points_[i - 1];
    const Point& b = points_[i];
    const double t = b.q > a.q ? (u - a.q) / (b.q - a.q) : 1.0;
    return static_cast<uint64_t>(std::llround(a.ms + (b.ms - a.ms) * std::clamp(t, 0.0, 1.0)));
  }

  const std::string& text() const { return text_; }

 private:
  struct Point {
    double q;
    double ms;
  };
  std::vector<Point> points_;
  std::string text_ = "0";
};

// State shared by every worker thread. Counters are relaxed atomics: the numbers are read
// by tests after the traffic they check has been answered, so no ordering is needed.
struct Shop {
  std::string name = "demo-shop";
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> orders{0};
  std::atomic<uint64_t> order_seq{0};  // never reset, so order ids stay unique
  std::atomic<int64_t> in_flight{0};
  std::atomic<int64_t> max_concurrent{0};
  std::atomic<double> error_rate{0};
  std::atomic<double> timeout_rate{0};
  std::atomic<bool> hang{false};
  std::atomic<bool> healthy{true};
  // Bumped after `latency` changes; workers copy the spec when they see a new value.
  std::atomic<uint64_t> latency_gen{0};

  // Guards `latency` and `keys`. Only requests that carry an Idempotency-Key and the
  // control endpoints take it, so the fast paths stay lock-free.
  std::mutex mu;
  LatencySpec latency;
  std::unordered_map<std::string, uint64_t> keys;

  LatencySpec initial_latency;
  double initial_error_rate = 0;
};

struct Conn;

// One event loop, its own SO_REUSEPORT listener and the connections it accepted.
struct Worker {
  Shop* shop = nullptr;
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_async_t stop;
  std::thread thread;
  Conn* conns = nullptr;  // intrusive list, so stopping can close every connection
  Rng rng{0};
  LatencySpec latency;
  uint64_t latency_gen = ~uint64_t{0};
  std::string scratch;  // response bodies are built here, reusing its capacity

  const LatencySpec& current_latency() {
    const uint64_t gen = shop->latency_gen.load(std::memory_order_acquire);
    if (gen != latency_gen) {
      std::lock_guard<std::mutex> lock(shop->mu);
      latency = shop->latency;
      latency_gen = gen;
    }
    return latency;
  }
};

// The request being parsed or answered. Strings and the header slots keep their capacity
// from one request to the next, so a keep-alive connection allocates only while warming up.
struct Request {
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  size_t nheaders = 0;
  size_t ntrailers_from = SIZE_MAX;  // headers at or after this index arrived as trailers
  bool in_field = false;
  bool head_done = false;
  bool too_big = false;
  size_t head_bytes = 0;
  uint8_t method = HTTP_GET;
  uint8_t major = 1;
  uint8_t minor = 1;
  bool chunked = false;
  bool keep_alive = true;
  size_t key_index = SIZE_MAX;  // Idempotency-Key header, if any
  uint64_t body_length = 0;
  uint64_t body_hash = 0;

  void reset() {
    url.clear();
    nheaders = 0;
    ntrailers_from = SIZE_MAX;
    in_field = false;
    head_done = false;
    too_big = false;
    head_bytes = 0;
    method = HTTP_GET;
    chunked = false;
    keep_alive = true;
    key_index = SIZE_MAX;
    body_length = 0;
    body_hash = 0xcbf29ce484222325ull;  // FNV-1a 64 offset basis
  }
  bool is_head() const { return method == HTTP_HEAD; }
  bool is_get() const { return method == HTTP_GET || method == HTTP_HEAD; }
  bool is_post() const { return method == HTTP_POST; }
  std::string_view key() const {
    return key_index == SIZE_MAX ? std::string_view() : std::string_view(headers[key_index].second);
  }
};

enum class ConnState { kOpen, kClosing };
enum class Pending { kNone, kDelay, kHang, kNever };

// One client connection. Requests are answered strictly in order: while a response is
// outstanding (`busy`) later pipelined bytes stay unparsed in `rbuf`. Owned by its worker;
// freed in the close callback of the last of its two handles.
struct Conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t write_req;
  uv_shutdown_t shutdown_req;
  Worker* worker = nullptr;
  Conn* prev = nullptr;
  Conn* next = nullptr;
  ConnState state = ConnState::kOpen;
  int open_handles = 0;

  llhttp_t parser;
  Request req;
  bool message_done = false;

  char rbuf[kReadBufferBytes];
  size_t rstart = 0;
  size_t rend = 0;
  bool reading = false;
  bool peer_eof = false;

  // `out` collects responses while `inflight` is being written; one write at a time.
  std::string out;
  std::string inflight;
  bool writing = false;
  bool close_after = false;
  bool shutting_down = false;

  bool busy = false;
  Pending pending = Pending::kNone;
  bool counted = false;      // this request is in Shop::in_flight
  bool inject_error = false;
  uint64_t stream_left = 0;  // /big bytes not yet handed to uv_write
  bool stream_chunked = false;
  bool stream_finishing = false;
  char chunk_head[24];
};

Conn* from_parser(llhttp_t* p) { return static_cast<Conn*>(p->data); }

void close_conn(Conn* c);
void drive(Conn* c);

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

// --- parser callbacks: copy what the slices say before the read buffer is reused ---

int on_message_begin(llhttp_t* p) {
  from_parser(p)->req.reset();
  return 0;
}

bool grow_head(Request& r, size_t n) {
  r.head_bytes += n;
  if (r.head_bytes > kMaxHeadBytes) r.too_big = true;
  return !r.too_big;
}

int on_url(llhttp_t* p, const char* at, size_t n) {
  Request& r = from_parser(p)->req;
  if (!grow_head(r, n)) return -1;
  r.url.append(at, n);
  return 0;
}

int on_header_field(llhttp_t* p, const char* at, size_t n) {
  Request& r = from_parser(p)->req;
  if (!grow_head(r, n)) return -1;
  if (!r.in_field) {
    if (r.nheaders >= kMaxHeaders) {
      r.too_big = true;
      return -1;
    }
    if (r.nheaders == r.headers.size()) r.headers.emplace_back();
    r.headers[r.nheaders].first.clear();
    r.headers[r.nheaders].second.clear();
    r.in_field = true;
  }
  r.headers[r.nheaders].first.append(at, n);
  return 0;
}

int on_header_value(llhttp_t* p, const char* at, size_t n) {
  Request& r = from_parser(p)->req;
  if (!grow_head(r, n)) return -1;
  r.headers[r.nheaders].second.append(at, n);
  return 0;
}

int on_header_value_complete(llhttp_t* p) {
  Conn* c = from_parser(p);
  Request& r = c->req;
  const auto& [name, value] = r.headers[r.nheaders];
  if (!r.head_done && r.key_index == SIZE_MAX && iequals(name, "idempotency-key"))
    r.key_index = r.nheaders;
  // curl and other clients wait for this before sending a large body.
  if (!r.head_done && iequals(name, "expect") && iequals(trim(value), "100-continue") &&
      p->http_major == 1 && p->http_minor >= 1)
    c->out += "HTTP/1.1 100 Continue\r\n\r\n";
  r.in_field = false;
  ++r.nheaders;
  return 0;
}

int on_headers_complete(llhttp_t* p) {
  Request& r = from_parser(p)->req;
  r.head_done = true;
  r.ntrailers_from = r.nheaders;
  r.method = static_cast<uint8_t>(p->method);
  r.major = p->http_major;
  r.minor = p->http_minor;
  r.chunked = (p->flags & F_CHUNKED) != 0;
  return 0;
}

int on_body(llhttp_t* p, const char* at, size_t n) {
  Request& r = from_parser(p)->req;
  r.body_length += n;
  uint64_t h = r.body_hash;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(at[i]);
    h *= 0x100000001b3ull;
  }
  r.body_hash = h;
  return 0;
}

// Pausing here hands control back to drive(), which answers outside the parser and then
// resumes parsing at the byte after this message.
int on_message_complete(llhttp_t* p) {
  Conn* c = from_parser(p);
  c->req.keep_alive = llhttp_should_keep_alive(p) != 0 && p->upgrade == 0;
  c->message_done = true;
  return HPE_PAUSED;
}

llhttp_settings_t make_settings() {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = on_message_begin;
  s.on_url = on_url;
  s.on_header_field = on_header_field;
  s.on_header_value = on_header_value;
  s.on_header_value_complete = on_header_value_complete;
  s.on_headers_complete = on_headers_complete;
  s.on_body = on_body;
  s.on_message_complete = on_message_complete;
  return s;
}
const llhttp_settings_t g_settings = make_settings();

// --- responses ---

void append_head(Conn* c, int status, std::string_view content_type, uint64_t length,
                 bool chunked, std::string_view extra_headers = {}) {
  std::string& o = c->out;
  o += "HTTP/1.1 ";
  append_uint(o, static_cast<uint64_t>(status));
  o += ' ';
  o += reason_phrase(status);
  o += "\r\nServer: floodgate-demo-shop\r\nX-Shop: ";
  o += c->worker->shop->name;
  o += "\r\n";
  if (!content_type.empty()) {
    o += "Content-Type: ";
    o += content_type;
    o += "\r\n";
  }
  if (chunked) {
    o += "Transfer-Encoding: chunked\r\n";
  } else {
    o += "Content-Length: ";
    append_uint(o, length);
    o += "\r\n";
  }
  if (!c->req.keep_alive) c->close_after = true;
  if (c->close_after)
    o += "Connection: close\r\n";
  else if (c->req.minor == 0)
    o += "Connection: keep-alive\r\n";
  o += extra_headers;
  o += "\r\n";
}

// Called once the whole response has been produced (queued in `out` or, for a stream,
// written). Parsing of pipelined requests resumes after it.
void finish_response(Conn* c) {
  if (c->counted) {
    c->worker->shop->in_flight.fetch_sub(1, std::memory_order_relaxed);
    c->counted = false;
  }
  c->busy = false;
  c->pending = Pending::kNone;
}

void respond(Conn* c, int status, std::string_view content_type, std::string_view body,
             std::string_view extra_headers = {}) {
  append_head(c, status, content_type, body.size(), false, extra_headers);
  if (!c->req.is_head()) c->out += body;
  finish_response(c);
}

void respond_error(Conn* c, int status, std::string_view code, std::string_view detail,
                   std::string_view extra_headers = {}) {
  std::string& b = c->worker->scratch;
  b.clear();
  b += R"({"error":)";
  append_json_string(b, code);
  if (!detail.empty()) {
    b += R"(,"detail":)";
    append_json_string(b, detail);
  }
  b += '}';
  respond(c, status, kJson, b, extra_headers);
}

void start_stream(Conn* c, uint64_t bytes, bool chunked) {
  // HTTP/1.0 clients cannot read chunked framing.
  if (c->req.minor == 0 && c->req.major == 1) chunked = false;
  append_head(c, 200, "application/octet-stream", bytes, chunked);
  if (c->req.is_head()) {
    finish_response(c);
    return;
  }
  if (bytes == 0) {
    if (chunked) c->out += "0\r\n\r\n";
    finish_response(c);
    return;
  }
  c->stream_left = bytes;
  c->stream_chunked = chunked;
  c->busy = true;
}

// --- endpoints ---

void serve_stats(Conn* c) {
  Shop* s = c->worker->shop;
  std::string& b = c->worker->scratch;
  b.clear();
  b += R"({"requests":)";
  append_uint(b, s->requests.load(std::memory_order_relaxed));
  b += R"(,"orders":)";
  append_uint(b, s->orders.load(std::memory_order_relaxed));
  b += R"(,"keys":{)";
  {
    std::lock_guard<std::mutex> lock(s->mu);
    bool first = true;
    for (const auto& [key, count] : s->keys) {
      if (!first) b += ',';
      first = false;
      append_json_string(b, key);
      b += ':';
      append_uint(b, count);
    }
  }
  b += R"(},"max_concurrent":)";
  append_int(b, s->max_concurrent.load(std::memory_order_relaxed));
  b += R"(,"in_flight":)";
  append_int(b, s->in_flight.load(std::memory_order_relaxed));
  b += R"(,"server":)";
  append_json_string(b, s->name);
  b += '}';
  respond(c, 200, kJson, b);
}

void serve_config_state(Conn* c) {
  Shop* s = c->worker->shop;
  std::string& b = c->worker->scratch;
  b.clear();
  b += R"({"latency_ms":)";
  {
    std::lock_guard<std::mutex> lock(s->mu);
    append_json_string(b, s->latency.text());
  }
  b += R"(,"error_rate":)";
  append_double(b, s->error_rate.load());
  b += R"(,"timeout_rate":)";
  append_double(b, s->timeout_rate.load());
  b += R"(,"hang":)";
  b += s->hang.load() ? "true" : "false";
  b += R"(,"healthy":)";
  b += s->healthy.load() ? "true" : "false";
  b += R"(,"server":)";
  append_json_string(b, s->name);
  b += '}';
  respond(c, 200, kJson, b);
}

bool parse_flag(std::string_view v, bool* out) {
  if (v == "1" || v == "true") { *out = true; return true; }
  if (v == "0" || v == "false") { *out = false; return true; }
  return false;
}

// Every parameter is validated before any is applied, and unknown ones are refused, so a
// typo in a test cannot silently leave the shop in the wrong mode.
void serve_config(Conn* c, std::string_view query) {
  Shop* s = c->worker->shop;
  std::string value, error;
  for (std::string_view rest = query; !rest.empty();) {
    const size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    std::string_view name = pair.substr(0, pair.find('='));
    if (!name.empty() && name != "latency_ms" && name != "error_rate" && name != "timeout_rate" &&
        name != "hang" && name != "healthy") {
      respond_error(c, 400, "bad_config", "unknown parameter " + std::string(name));
      return;
    }
  }
  LatencySpec latency;
  const bool has_latency = query_param(query, "latency_ms", &value);
  if (has_latency && !LatencySpec::parse(value, &latency, &error)) {
    respond_error(c, 400, "bad_config", error);
    return;
  }
  double rate = 0;
  const bool has_rate = query_param(query, "error_rate", &value);
  if (has_rate && (!parse_double(value, &rate) || rate < 0 || rate > 1)) {
    respond_error(c, 400, "bad_config", "error_rate: expected a number in [0, 1]");
    return;
  }
  double timeout_rate = 0;
  const bool has_timeout_rate = query_param(query, "timeout_rate", &value);
  if (has_timeout_rate &&
      (!parse_double(value, &timeout_rate) || timeout_rate < 0 || timeout_rate > 1)) {
    respond_error(c, 400, "bad_config", "timeout_rate: expected a number in [0, 1]");
    return;
  }
  bool hang = false, healthy = true;
  const bool has_hang = query_param(query, "hang", &value);
  if (has_hang && !parse_flag(value, &hang)) {
    respond_error(c, 400, "bad_config", "hang: expected 0 or 1");
    return;
  }
  const bool has_healthy = query_param(query, "healthy", &value);
  if (has_healthy && !parse_flag(value, &healthy)) {
    respond_error(c, 400, "bad_config", "healthy: expected 0 or 1");
    return;
  }
  if (has_latency) {
    std::lock_guard<std::mutex> lock(s->mu);
    s->latency = std::move(latency);
    s->latency_gen.fetch_add(1, std::memory_order_release);
  }
  if (has_rate) s->error_rate.store(rate);
  if (has_timeout_rate) s->timeout_rate.store(timeout_rate);
  if (has_hang) s->hang.store(hang);
  if (has_healthy) s->healthy.store(healthy);
  serve_config_state(c);
}

void serve_reset(Conn* c, std::string_view query) {
  Shop* s = c->worker->shop;
  std::string value;
  const bool config = query_param(query, "config", &value) && value == "1";
  s->requests.store(0);
  s->orders.store(0);
  // Requests still being answered keep counting down, so the peak restarts from them.
  s->max_concurrent.store(s->in_flight.load());
  {
    std::lock_guard<std::mutex> lock(s->mu);
    s->keys.clear();
    if (config) {
      s->latency = s->initial_latency;
      s->latency_gen.fetch_add(1, std::memory_order_release);
    }
  }
  if (config) {
    s->error_rate.store(s->initial_error_rate);
    s->timeout_rate.store(0);
    s->hang.store(false);
    s->healthy.store(true);
  }
  respond(c, 200, kJson, R"({"reset":true})");
}

void serve_control(Conn* c, std::string_view path, std::string_view query) {
  const Request& r = c->req;
  if (path == "/_shop/stats") {
    if (!r.is_get()) return respond_error(c, 405, "method_not_allowed", {}, "Allow: GET, HEAD\r\n");
    return serve_stats(c);
  }
  if (path == "/_shop/reset") {
    if (!r.is_post()) return respond_error(c, 405, "method_not_allowed", {}, "Allow: POST\r\n");
    return serve_reset(c, query);
  }
  if (path == "/_shop/config") {
    if (!r.is_get() && !r.is_post())
      return respond_error(c, 405, "method_not_allowed", {}, "Allow: GET, HEAD, POST\r\n");
    return serve_config(c, query);
  }
  respond_error(c, 404, "not_found", path);
}

void serve_echo(Conn* c) {
  const Request& r = c->req;
  std::string& b = c->worker->scratch;
  b.clear();
  b += R"({"server":)";
  append_json_string(b, c->worker->shop->name);
  b += R"(,"method":)";
  append_json_string(b, llhttp_method_name(static_cast<llhttp_method_t>(r.method)));
  b += R"(,"target":)";
  append_json_string(b, r.url);
  b += R"(,"version":"HTTP/)";
  append_uint(b, r.major);
  b += '.';
  append_uint(b, r.minor);
  b += '"';
  sockaddr_storage peer;
  int len = sizeof peer;
  char host[INET6_ADDRSTRLEN] = "";
  int port = 0;
  if (uv_tcp_getpeername(&c->tcp, reinterpret_cast<sockaddr*>(&peer), &len) == 0) {
    if (peer.ss_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(&peer);
      uv_ip4_name(a, host, sizeof host);
      port = ntohs(a->sin_port);
    } else if (peer.ss_family == AF_INET6) {
      const auto* a = reinterpret_cast<const sockaddr_in6*>(&peer);
      uv_ip6_name(a, host, sizeof host);
      port = ntohs(a->sin6_port);
    }
  }
  b += R"(,"peer":)";
  append_json_string(b, host);
  b += R"(,"peer_port":)";
  append_int(b, port);
  const auto append_list = [&](size_t from, size_t to) {
    b += '[';
    for (size_t i = from; i < to; ++i) {
      if (i > from) b += ',';
      b += '[';
      append_json_string(b, r.headers[i].first);
      b += ',';
      append_json_string(b, r.headers[i].second);
      b += ']';
    }
    b += ']';
  };
  const size_t trailers_from = std::min(r.ntrailers_from, r.nheaders);
  b += R"(,"headers":)";
  append_list(0, trailers_from);
  b += R"(,"trailers":)";
  append_list(trailers_from, r.nheaders);
  b += R"(,"chunked":)";
  b += r.chunked ? "true" : "false";
  b += R"(,"body_length":)";
  append_uint(b, r.body_length);
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(r.body_hash));
  b += R"(,"body_fnv1a":")";
  b += hash;
  b += "\"}";
  respond(c, 200, kJson, b);
}

void serve_order(Conn* c) {
  Shop* s = c->worker->shop;
  s->orders.fetch_add(1, std::memory_order_relaxed);
  const uint64_t id = s->order_seq.fetch_add(1, std::memory_order_relaxed) + 1;
  std::string& b = c->worker->scratch;
  b.clear();
  b += R"({"order_id":"o-)";
  append_uint(b, id);
  b += R"(","server":)";
  append_json_string(b, s->name);
  b += R"(,"idempotency_key":)";
  append_json_string(b, c->req.key());
  b += '}';
  respond(c, 201, kJson, b);
}

void serve_product(Conn* c, std::string_view id) {
  uint64_t n = 0;
  if (!parse_u64(id, &n) || n < 1 || n > std::size(kProductItems))
    return respond_error(c, 404, "unknown_product", id);
  respond(c, 200, kJson, kProductItems[n - 1]);
}

struct Target {
  std::string_view path;
  std::string_view query;
};

Target split_target(std::string_view url) {
  // Absolute-form targets ("http://host/path") name the same resource as their path.
  if (url.size() > 0 && url[0] != '/') {
    const size_t scheme = url.find("://");
    if (scheme != std::string_view::npos) {
      const size_t slash = url.find('/', scheme + 3);
      url = slash == std::string_view::npos ? std::string_view("/") : url.substr(slash);
    }
  }
  const size_t q = url.find('?');
  if (q == std::string_view::npos) return {url, {}};
  return {url.substr(0, q), url.substr(q + 1)};
}

bool has_prefix_segment(std::string_view path, std::string_view base) {
  return path == base || (path.size() > base.size() && path.substr(0, base.size()) == base &&
                          path[base.size()] == '/');
}

uint64_t slow_ms(std::string_view query) {
  std::string value;
  uint64_t ms = 0;
  if (query_param(query, "ms", &value) && parse_u64(value, &ms))
    return std::min<uint64_t>(ms, static_cast<uint64_t>(kMaxDelayMs));
  return 0;
}

// Answers a normal request once its configured delay (if any) has passed.
void serve_normal(Conn* c) {
  const Request& r = c->req;
  const Target t = split_target(r.url);
  if (c->inject_error) return respond_error(c, 500, "injected", "error_rate");

  if (t.path == "/api/products") {
    if (!r.is_get()) return respond_error(c, 405, "method_not_allowed", {}, "Allow: GET, HEAD\r\n");
    return respond(c, 200, kJson, kProducts);
  }
  if (t.path.substr(0, 14) == "/api/products/") {
    if (!r.is_get()) return respond_error(c, 405, "method_not_allowed", {}, "Allow: GET, HEAD\r\n");
    return serve_product(c, t.path.substr(14));
  }
  if (t.path == "/api/orders") {
    if (!r.is_post()) return respond_error(c, 405, "method_not_allowed", {}, "Allow: POST\r\n");
    return serve_order(c);
  }
  if (t.path.substr(0, 8) == "/notify/") {
    if (!r.is_post()) return respond_error(c, 405, "method_not_allowed", {}, "Allow: POST\r\n");
    return respond(c, 200, kText, "success");
  }
  if (has_prefix_segment(t.path, "/echo")) return serve_echo(c);
  if (t.path == "/big") {
    if (!r.is_get()) return respond_error(c, 405, "method_not_allowed", {}, "Allow: GET, HEAD\r\n");
    std::string value;
    uint64_t bytes = 0;
    if (!query_param(t.query, "bytes", &value) || !parse_u64(value, &bytes))
      return respond_error(c, 400, "bad_request", "bytes: expected a byte count");
    const bool chunked = query_param(t.query, "chunked", &value) && value == "1";
    return start_stream(c, bytes, chunked);
  }
  if (t.path == "/slow") {
    std::string& b = c->worker->scratch;
    b.clear();
    b += R"({"slept_ms":)";
    append_uint(b, slow_ms(t.query));
    b += '}';
    return respond(c, 200, kJson, b);
  }
  if (t.path == "/close") {
    c->close_after = true;
    return respond(c, 200, kText, "bye");
  }
  respond_error(c, 404, "not_found", t.path);
}

static void on_timer(uv_timer_t* timer) {
  Conn* c = static_cast<Conn*>(timer->data);
  if (c->state != ConnState::kOpen) return;
  if (c->pending == Pending::kHang) {
    if (c->worker->shop->hang.load(std::memory_order_relaxed)) return;
    uv_timer_stop(timer);
  }
  c->pending = Pending::kNone;
  serve_normal(c);
  drive(c);
}

void count_key(Shop* s, const std::string& key) {
  std::lock_guard<std::mutex> lock(s->mu);
  auto it = s->keys.find(key);
  if (it == s->keys.end())
    s->keys.emplace(key, 1);
  else
    ++it->second;
}

// Decides what to do with a complete request: control endpoints are answered at once,
// normal ones are counted and then answered now, after a delay, or once a hang ends.
void dispatch(Conn* c) {
  Worker* w = c->worker;
  Shop* s = w->shop;
  const Request& r = c->req;
  const Target t = split_target(r.url);

  if (t.path.substr(0, 7) == "/_shop/") return serve_control(c, t.path, t.query);
  if (t.path == "/healthz") {
    if (s->healthy.load(std::memory_order_relaxed)) return respond(c, 200, kText, "ok");
    return respond(c, 503, kText, "unhealthy");
  }

  s->requests.fetch_add(1, std::memory_order_relaxed);
  const int64_t now = s->in_flight.fetch_add(1, std::memory_order_relaxed) + 1;
  c->counted = true;
  int64_t peak = s->max_concurrent.load(std::memory_order_relaxed);
  while (now > peak &&
         !s->max_concurrent.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  if (r.key_index != SIZE_MAX && r.is_post() &&
      (t.path == "/api/orders" || t.path.substr(0, 8) == "/notify/"))
    count_key(s, r.headers[r.key_index].second);

  const double error_rate = s->error_rate.load(std::memory_order_relaxed);
  c->inject_error = error_rate > 0 && w->rng.uniform() < error_rate;
  uint64_t delay = w->current_latency().draw(w->rng.uniform());
  if (t.path == "/slow") delay += slow_ms(t.query);

  // Never answered: no timer, the connection stays busy until the client closes it.
  const double timeout_rate = s->timeout_rate.load(std::memory_order_relaxed);
  if (timeout_rate > 0 && w->rng.uniform() < timeout_rate) {
    c->busy = true;
    c->pending = Pending::kNever;
    return;
  }
  if (s->hang.load(std::memory_order_relaxed)) {
    c->busy = true;
    c->pending = Pending::kHang;
    uv_timer_start(&c->timer, on_timer, kHangPollMs, kHangPollMs);
    return;
  }
  if (delay > 0) {
    c->busy = true;
    c->pending = Pending::kDelay;
    uv_timer_start(&c->timer, on_timer, delay, 0);
    return;
  }
  serve_normal(c);
}

// --- connection plumbing ---

static void on_close(uv_handle_t* handle) {
  Conn* c = static_cast<Conn*>(handle->data);
  if (--c->open_handles == 0) delete c;
}

void unlink(Conn* c) {
  Worker* w = c->worker;
  if (c->prev) c->prev->next = c->next;
  else if (w->conns == c) w->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = nullptr;
}

// Idempotent. Pending write and shutdown callbacks still run (with UV_ECANCELED) before
// the close callbacks, which free the connection.
void close_conn(Conn* c) {
  if (c->state != ConnState::kOpen) return;
  c->state = ConnState::kClosing;
  if (c->counted) {
    c->worker->shop->in_flight.fetch_sub(1, std::memory_order_relaxed);
    c->counted = false;
  }
  unlink(c);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), on_close);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_close);
}

static void on_shutdown(uv_shutdown_t* req, int /*status*/) {
  close_conn(static_cast<Conn*>(req->data));
}

static void on_write(uv_write_t* req, int status) {
  Conn* c = static_cast<Conn*>(req->data);
  c->writing = false;
  if (c->state != ConnState::kOpen) return;
  if (status < 0) {
    close_conn(c);
    return;
  }
  c->inflight.clear();
  if (c->stream_finishing) {
    c->stream_finishing = false;
    finish_response(c);
  }
  drive(c);
}

// Starts one write with everything that is ready: queued responses and, for /big, the next
// piece, which points into the shared filler instead of being copied.
void flush(Conn* c) {
  if (c->state != ConnState::kOpen || c->writing) return;
  static const char kCrlf[] = "\r\n";
  static const char kLastChunk[] = "\r\n0\r\n\r\n";
  uv_buf_t bufs[4];
  unsigned n = 0;
  if (!c->out.empty()) {
    std::swap(c->out, c->inflight);
    bufs[n++] = uv_buf_init(c->inflight.data(), static_cast<unsigned>(c->inflight.size()));
  }
  if (c->stream_left > 0 && !c->stream_finishing) {
    const size_t piece = static_cast<size_t>(std::min<uint64_t>(c->stream_left, kBigPieceBytes));
    if (c->stream_chunked) {
      const int len = std::snprintf(c->chunk_head, sizeof c->chunk_head, "%zx\r\n", piece);
      bufs[n++] = uv_buf_init(c->chunk_head, static_cast<unsigned>(len));
    }
    bufs[n++] = uv_buf_init(g_filler, static_cast<unsigned>(piece));
    c->stream_left -= piece;
    if (c->stream_chunked) {
      const char* tail = c->stream_left == 0 ? kLastChunk : kCrlf;
      bufs[n++] = uv_buf_init(const_cast<char*>(tail), static_cast<unsigned>(std::strlen(tail)));
    }
    if (c->stream_left == 0) c->stream_finishing = true;
  }
  if (n == 0) return;
  c->writing = true;
  if (uv_write(&c->write_req, reinterpret_cast<uv_stream_t*>(&c->tcp), bufs, n, on_write) != 0) {
    c->writing = false;
    close_conn(c);
  }
}

static void on_alloc(uv_handle_t* handle, size_t /*suggested*/, uv_buf_t* buf) {
  Conn* c = static_cast<Conn*>(handle->data);
  if (c->rstart > 0) {
    std::memmove(c->rbuf, c->rbuf + c->rstart, c->rend - c->rstart);
    c->rend -= c->rstart;
    c->rstart = 0;
  }
  *buf = uv_buf_init(c->rbuf + c->rend, static_cast<unsigned>(kReadBufferBytes - c->rend));
}

static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* /*buf*/);

// Reads only while there is room for the bytes and the client is taking its answers.
void update_reading(Conn* c) {
  const bool want = c->state == ConnState::kOpen && !c->peer_eof && !c->close_after &&
                    c->rend - c->rstart < kReadBufferBytes && c->out.size() < kMaxPendingOutput;
  if (want == c->reading) return;
  auto* s = reinterpret_cast<uv_stream_t*>(&c->tcp);
  if (want) {
    if (uv_read_start(s, on_alloc, on_read) != 0) return close_conn(c);
  } else {
    uv_read_stop(s);
  }
  c->reading = want;
}

// Parses buffered requests and answers them in order until one is outstanding, then
// writes what is ready and decides whether to keep reading or to close. Called after every
// read, write and timer event; never from inside the parser.
void drive(Conn* c) {
  while (c->state == ConnState::kOpen && !c->busy && !c->close_after && c->rstart < c->rend) {
    const char* begin = c->rbuf + c->rstart;
    const llhttp_errno_t err = llhttp_execute(&c->parser, begin, c->rend - c->rstart);
    if (err == HPE_OK) {
      c->rstart = c->rend;
      break;
    }
    if (err == HPE_PAUSED) {
      c->rstart = static_cast<size_t>(llhttp_get_error_pos(&c->parser) - c->rbuf);
      llhttp_resume(&c->parser);
      if (c->message_done) {
        c->message_done = false;
        dispatch(c);
      }
      continue;
    }
    // Protocol errors and upgrades both end the connection after one last answer.
    c->rstart = c->rend;
    if (err == HPE_PAUSED_UPGRADE) {
      c->close_after = true;
      break;
    }
    c->req.keep_alive = false;
    c->req.method = HTTP_GET;
    c->req.minor = 1;
    if (c->req.too_big)
      respond_error(c, 431, "header_too_large", {});
    else
      respond_error(c, 400, "bad_request", llhttp_get_error_reason(&c->parser));
  }
  if (c->state != ConnState::kOpen) return;
  if (c->rstart == c->rend) c->rstart = c->rend = 0;
  if (c->peer_eof && !c->busy) c->close_after = true;
  flush(c);
  if (c->close_after && !c->busy && !c->writing && c->out.empty() && !c->shutting_down) {
    c->shutting_down = true;
    if (uv_shutdown(&c->shutdown_req, reinterpret_cast<uv_stream_t*>(&c->tcp), on_shutdown) != 0)
      close_conn(c);
    return;
  }
  update_reading(c);
}

static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* /*buf*/) {
  Conn* c = static_cast<Conn*>(stream->data);
  if (nread > 0) {
    c->rend += static_cast<size_t>(nread);
    drive(c);
  } else if (nread == UV_EOF) {
    // A client that goes away while its answer is pending has given up on it, as a
    // gateway does after its upstream timeout; the held request is dropped.
    if (c->busy) return close_conn(c);
    c->peer_eof = true;
    drive(c);
  } else if (nread == UV_ENOBUFS) {
    update_reading(c);
  } else if (nread < 0) {
    close_conn(c);
  }
}

static void on_connection(uv_stream_t* server, int status) {
  if (status < 0) return;
  Worker* w = static_cast<Worker*>(server->data);
  Conn* c = new Conn;
  c->worker = w;
  c->tcp.data = c;
  c->timer.data = c;
  c->write_req.data = c;
  c->shutdown_req.data = c;
  llhttp_init(&c->parser, HTTP_REQUEST, &g_settings);
  c->parser.data = c;
  c->req.reset();
  uv_tcp_init(&w->loop, &c->tcp);
  uv_timer_init(&w->loop, &c->timer);
  c->open_handles = 2;
  c->next = w->conns;
  if (w->conns) w->conns->prev = c;
  w->conns = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) return close_conn(c);
  // Responses are small and often pipelined; do not let Nagle hold them back.
  uv_tcp_nodelay(&c->tcp, 1);
  update_reading(c);
}

static void on_stop(uv_async_t* async) {
  Worker* w = static_cast<Worker*>(async->data);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->listener), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->stop), nullptr);
  while (w->conns) close_conn(w->conns);
}

// --- process ---

struct Options {
  std::string host = "127.0.0.1";
  int port = 8081;
  unsigned threads = 1;
  std::string latency = "0";
  double error_rate = 0;
  std::string name = "demo-shop";
};

void usage(FILE* to) {
  std::fputs(
      "usage: floodgate-demo-shop --listen HOST:PORT [--threads N] [--latency-ms SPEC]\n"
      "                           [--error-rate R] [--name NAME]\n"
      "  SPEC: 5 (fixed ms), 5-50 (uniform), p50:5,p99:80 (percentiles)\n",
      to);
}

bool parse_listen(std::string_view s, Options* o) {
  const size_t colon = s.rfind(':');
  if (colon == std::string_view::npos) return false;
  std::string_view host = s.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  uint64_t port = 0;
  if (host.empty() || !parse_u64(s.substr(colon + 1), &port) || port > 65535) return false;
  o->host = std::string(host);
  o->port = static_cast<int>(port);
  return true;
}

bool parse_args(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "floodgate-demo-shop: %s needs a value\n", argv[i]);
      return false;
    }
    const std::string_view value = argv[++i];
    uint64_t n = 0;
    std::string error;
    LatencySpec spec;
    if (arg == "--listen") {
      if (!parse_listen(value, o)) {
        std::fprintf(stderr, "floodgate-demo-shop: --listen expects HOST:PORT\n");
        return false;
      }
    } else if (arg == "--threads") {
      if (!parse_u64(value, &n) || n < 1 || n > 256) {
        std::fprintf(stderr, "floodgate-demo-shop: --threads expects 1..256\n");
        return false;
      }
      o->threads = static_cast<unsigned>(n);
    } else if (arg == "--latency-ms") {
      if (!LatencySpec::parse(value, &spec, &error)) {
        std::fprintf(stderr, "floodgate-demo-shop: %s\n", error.c_str());
        return false;
      }
      o->latency = std::string(value);
    } else if (arg == "--error-rate") {
      if (!parse_double(value, &o->error_rate) || o->error_rate < 0 || o->error_rate > 1) {
        std::fprintf(stderr, "floodgate-demo-shop: --error-rate expects a number in [0, 1]\n");
        return false;
      }
    } else if (arg == "--name") {
      // The name goes into a response header, so only visible ASCII is accepted.
      if (value.empty() || !std::all_of(value.begin(), value.end(),
                                        [](char ch) { return ch > 0x20 && ch < 0x7F; })) {
        std::fprintf(stderr, "floodgate-demo-shop: --name expects visible ASCII\n");
        return false;
      }
      o->name = std::string(value);
    } else {
      std::fprintf(stderr, "floodgate-demo-shop: unknown option %s\n", argv[i - 1]);
      usage(stderr);
      return false;
    }
  }
  return true;
}

// Binds one listening socket. Several workers share the port through SO_REUSEPORT, so the
// kernel spreads connections across their loops; with one worker the option stays off and
// a port already in use is an error.
int open_listener(const sockaddr* addr, socklen_t addr_len, bool reuse_port, int* fd_out) {
  const int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    const int err = -errno;
    ::close(fd);
    return err;
  }
  if (bind(fd, addr, addr_len) != 0) {
    const int err = -errno;
    ::close(fd);
    return err;
  }
  *fd_out = fd;
  return 0;
}

static void on_signal(uv_signal_t* signal, int /*signum*/) {
  auto* workers = static_cast<std::vector<std::unique_ptr<Worker>>*>(signal->data);
  for (auto& w : *workers) uv_async_send(&w->stop);
  uv_walk(
      signal->loop,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
}

int run(int argc, char** argv) {
  Options opts;
  if (!parse_args(argc, argv, &opts)) return 2;
  std::signal(SIGPIPE, SIG_IGN);
  for (size_t i = 0; i < kBigPieceBytes; ++i) g_filler[i] = kFillerAlphabet[i % 64];

  Shop shop;
  shop.name = opts.name;
  std::string error;
  LatencySpec::parse(opts.latency, &shop.initial_latency, &error);
  shop.latency = shop.initial_latency;
  shop.initial_error_rate = opts.error_rate;
  shop.error_rate.store(opts.error_rate);

  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  if (uv_ip4_addr(opts.host.c_str(), opts.port, reinterpret_cast<sockaddr_in*>(&addr)) == 0) {
    addr_len = sizeof(sockaddr_in);
  } else if (uv_ip6_addr(opts.host.c_str(), opts.port, reinterpret_cast<sockaddr_in6*>(&addr)) == 0) {
    addr_len = sizeof(sockaddr_in6);
  } else {
    std::fprintf(stderr, "floodgate-demo-shop: bad listen address %s\n", opts.host.c_str());
    return 2;
  }

  uv_loop_t main_loop;
  uv_loop_init(&main_loop);
  std::vector<std::unique_ptr<Worker>> workers;
  const uint64_t seed = static_cast<uint64_t>(
      std::chrono::steady_clock::now().time_since_epoch().count()) ^ (uint64_t(getpid()) << 32);
  for (unsigned i = 0; i < opts.threads; ++i) {
    auto w = std::make_unique<Worker>();
    w->shop = &shop;
    w->rng = Rng(seed + i * 0x9E3779B97F4A7C15ull);
    uv_loop_init(&w->loop);
    int fd = -1;
    int rc = open_listener(reinterpret_cast<sockaddr*>(&addr), addr_len, opts.threads > 1, &fd);
    if (rc == 0) {
      // With port 0 the first bind picks the port; the other workers join it.
      sockaddr_storage bound{};
      socklen_t len = sizeof bound;
      getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
      const int port = ntohs(bound.ss_family == AF_INET6
                                 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                 : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
      if (opts.port == 0) {
        opts.port = port;
        if (addr.ss_family == AF_INET6)
          reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port = htons(static_cast<uint16_t>(port));
        else
          reinterpret_cast<sockaddr_in*>(&addr)->sin_port = htons(static_cast<uint16_t>(port));
      }
      uv_tcp_init(&w->loop, &w->listener);
      w->listener.data = w.get();
      rc = uv_tcp_open(&w->listener, fd);
      if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&w->listener), 1024, on_connection);
    }
    if (rc != 0) {
      std::fprintf(stderr, "floodgate-demo-shop: cannot listen on %s:%d: %s\n", opts.host.c_str(),
                   opts.port, uv_strerror(rc));
      return 1;
    }
    uv_async_init(&w->loop, &w->stop, on_stop);
    w->stop.data = w.get();
    workers.push_back(std::move(w));
  }

  uv_signal_t sigterm, sigint;
  for (uv_signal_t* s : {&sigterm, &sigint}) {
    uv_signal_init(&main_loop, s);
    s->data = &workers;
  }
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_signal_start(&sigint, on_signal, SIGINT);

  for (auto& w : workers) {
    Worker* raw = w.get();
    raw->thread = std::thread([raw] { uv_run(&raw->loop, UV_RUN_DEFAULT); });
  }
  const bool v6 = addr.ss_family == AF_INET6;
  std::printf("demo-shop listening on %s%s%s:%d\n", v6 ? "[" : "", opts.host.c_str(), v6 ? "]" : "",
              opts.port);
  std::fflush(stdout);

  uv_run(&main_loop, UV_RUN_DEFAULT);
  int status = 0;
  for (auto& w : workers) {
    w->thread.join();
    if (uv_loop_close(&w->loop) != 0) {
      std::fprintf(stderr, "floodgate-demo-shop: worker loop still had handles at exit\n");
      status = 1;
    }
  }
  uv_loop_close(&main_loop);
  return status;
}

}  // namespace
}  // namespace fg::shop

int main(int argc, char** argv) { return fg::shop::run(argc, argv); }
