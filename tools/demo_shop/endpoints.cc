// The demo shop's endpoints: catalogue, orders, echo, streams, the /_shop control
// surface, and the injected latency, errors and hangs of "normal" requests.
#include <cstdio>
#include <cstring>

#include "shop.h"

namespace fg::shop {

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 303: return "See Other";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

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

void finish_response(Conn* c) {
  if (c->counted) {
    c->worker->shop->in_flight.fetch_sub(1, std::memory_order_relaxed);
    c->counted = false;
  }
  c->busy = false;
  c->pending = Pending::kNone;
}

void respond(Conn* c, int status, std::string_view content_type, std::string_view body,
             std::string_view extra_headers) {
  append_head(c, status, content_type, body.size(), false, extra_headers);
  if (!c->req.is_head()) c->out += body;
  finish_response(c);
}

void respond_error(Conn* c, int status, std::string_view code, std::string_view detail,
                   std::string_view extra_headers) {
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
  if (serve_storefront(c, t.path)) return;
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

}  // namespace fg::shop
