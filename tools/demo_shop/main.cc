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
//   GET  /                        storefront: an HTML page with an order form (storefront.cc)
//   POST /checkout                303 See Other to /orders/o-N (an order, counted)
//   GET  /orders/o-N              HTML: the order's confirmation page
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
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>

#include "shop.h"

namespace fg::shop {

// The bytes of every /big piece (kFillerAlphabet repeated), filled once at start.
char g_filler[kBigPieceBytes];

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


}  // namespace fg::shop

int main(int argc, char** argv) { return fg::shop::run(argc, argv); }
