// Shared types of floodgate-demo-shop: the shop's counters and behaviour, its worker
// loops and their connections. See main.cc for what the shop serves.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fg::shop {

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

// --- text helpers (text.cc) ---

bool parse_double(std::string_view s, double* out);
bool parse_u64(std::string_view s, uint64_t* out);
std::string_view trim(std::string_view s);
bool iequals(std::string_view a, std::string_view b);
void append_uint(std::string& out, uint64_t v);
void append_int(std::string& out, int64_t v);
void append_double(std::string& out, double v);
// Appends `s` as a quoted JSON string. Header values may hold any octet; bytes that are not
// valid UTF-8 are written as \u00XX (their Latin-1 reading) so that the echo stays JSON.
void append_json_string(std::string& out, std::string_view s);
// The percent-decoded value of `name` in a query string; false when absent.
bool query_param(std::string_view query, std::string_view name, std::string* out);

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

inline Conn* from_parser(llhttp_t* p) { return static_cast<Conn*>(p->data); }


// --- answering (endpoints.cc) ---

// Decides what to do with a complete request: control endpoints are answered at once,
// normal ones are counted and then answered now, after a delay, or once a hang ends.
void dispatch(Conn* c);
// Called once the whole response has been produced (queued in `out` or, for a stream,
// written). Parsing of pipelined requests resumes after it.
void finish_response(Conn* c);
void respond_error(Conn* c, int status, std::string_view code, std::string_view detail,
                   std::string_view extra_headers = {});
void respond(Conn* c, int status, std::string_view content_type, std::string_view body,
             std::string_view extra_headers = {});

// --- the storefront for browsers (storefront.cc) ---

// GET /, POST /checkout (303 to the order page), GET /orders/o-N; false for other paths.
bool serve_storefront(Conn* c, std::string_view path);

// --- connection plumbing (main.cc) ---

void close_conn(Conn* c);
// Parses and answers what is buffered, writes what is queued, and resumes reading.
void drive(Conn* c);

}  // namespace fg::shop
