// Worker threads: loop setup, accept, graceful drain and teardown.
#include "net/worker.h"

#include <fcntl.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <random>

#include "net/listener.h"
#include "proxy/client_conn.h"

namespace fg::net {
namespace {

constexpr uint64_t kTickMs = 100;

std::string random_hex(size_t bytes) {
  std::string out;
  unsigned char buf[16];
  if (bytes > sizeof buf) bytes = sizeof buf;
  if (uv_random(nullptr, nullptr, buf, bytes, 0, nullptr) != 0) {
    std::random_device rd;
    for (size_t i = 0; i < bytes; i++) buf[i] = static_cast<unsigned char>(rd());
  }
  static const char* kHex = "0123456789abcdef";
  for (size_t i = 0; i < bytes; i++) {
    out += kHex[buf[i] >> 4];
    out += kHex[buf[i] & 15];
  }
  return out;
}

}  // namespace

Instance::Instance(const Config& config) {
  for (const auto& u : config.upstreams)
    server_counters.push_back(std::make_unique<proxy::ServerCounters>(u.servers.size()));
}

Worker::Worker(int id, Instance* instance, std::shared_ptr<const Config> config)
    : id_(id), instance_(instance), config_(std::move(config)),
      read_buffer_(new char[kReadBufferSize]) {
  id_prefix_ = random_hex(6);
}

Worker::~Worker() { join(); }

Status Worker::start() {
  std::promise<Status> started;
  auto fut = started.get_future();
  thread_ = std::thread([this, &started] { run(&started); });
  return fut.get();
}

void Worker::request_stop() {
  if (stop_requested_.exchange(true)) return;
  uv_async_send(&stop_async_);
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::run(std::promise<Status>* started) {
  uv_loop_init(&loop_);
  uv_async_init(&loop_, &stop_async_, on_stop_async);
  stop_async_.data = this;
  uv_timer_init(&loop_, &drain_timer_);
  drain_timer_.data = this;
  uv_timer_init(&loop_, &tick_timer_);
  tick_timer_.data = this;

  Status status;
  for (size_t u = 0; u < config_->upstreams.size() && status.is_ok(); u++) {
    pools_.push_back(std::make_unique<proxy::UpstreamPool>(this, config_->upstreams[u],
                                                           instance_->server_counters[u].get()));
    status = pools_.back()->resolve();
  }
  for (const auto& addr : config_->server.listen) {
    if (!status.is_ok()) break;
    auto l = std::make_unique<Listener>(this, addr);
    status = l->open();
    listeners_.push_back(std::move(l));
  }
  bool ok = status.is_ok();
  if (ok) {
    uv_timer_start(&tick_timer_, on_tick, kTickMs, kTickMs);
    log::event("info", "worker_start", [&](log::Line& l) { l.num("worker", id_); });
  } else {
    stop_requested_ = true;
    begin_drain();
  }
  started->set_value(status);  // `started` must not be touched after this
  uv_run(&loop_, UV_RUN_DEFAULT);
  access_log_.flush();
  // Every handle is closed by now; a non-zero result would mean a leaked handle.
  int r = uv_loop_close(&loop_);
  if (r != 0) {
    log::event("error", "worker_leak", [&](log::Line& l) { l.num("worker", id_).str("error", uv_strerror(r)); });
  }
  if (ok) log::event("info", "worker_stop", [&](log::Line& l) { l.num("worker", id_); });
}

void Worker::on_stop_async(uv_async_t* a) {
  auto* self = static_cast<Worker*>(a->data);
  self->begin_drain();
}

void Worker::begin_drain() {
  if (draining_) return;
  draining_ = true;
  for (auto& l : listeners_) l->close();
  for (auto& p : pools_) p->close_idle();
  // Copy: drain() may close connections, which edits the list.
  std::vector<proxy::ClientConn*> conns = conns_;
  for (auto* c : conns) c->drain();
  uv_timer_start(&drain_timer_, on_drain_timer, config_->server.drain_timeout_ms, 0);
  maybe_finish();
}

void Worker::on_drain_timer(uv_timer_t* t) {
  auto* self = static_cast<Worker*>(t->data);
  log::event("warn", "drain_timeout", [&](log::Line& l) {
    l.num("worker", self->id_).num("connections", static_cast<int64_t>(self->conns_.size()));
  });
  std::vector<proxy::ClientConn*> conns = self->conns_;
  for (auto* c : conns) c->close();
}

void Worker::maybe_finish() {
  if (!draining_ || finished_ || !conns_.empty()) return;
  finished_ = true;
  for (auto& p : pools_) p->close_idle();
  uv_close(reinterpret_cast<uv_handle_t*>(&stop_async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&tick_timer_), nullptr);
}

void Worker::on_tick(uv_timer_t* t) {
  auto* self = static_cast<Worker*>(t->data);
  self->access_log_.flush();
  uint64_t now = self->now_ms();
  for (auto& p : self->pools_) p->sweep(now);
}

void Worker::accept_from(uv_stream_t* server) {
  if (server == nullptr) {
    uint64_t now = now_ms();
    if (now - accept_errors_logged_ms_ >= 1000) {
      accept_errors_logged_ms_ = now;
      log::event("warn", "accept_failed", [&](log::Line& l) {
        l.num("worker", id_).str("error", "out of file descriptors; connection dropped");
      });
    }
    return;
  }
  auto* conn = new proxy::ClientConn(this);
  conn->list_index = conns_.size();
  conns_.push_back(conn);
  conn->accept(server);
}

void Worker::conn_closed(proxy::ClientConn* conn) {
  size_t i = conn->list_index;
  if (i < conns_.size() && conns_[i] == conn) {
    conns_[i] = conns_.back();
    conns_[i]->list_index = i;
    conns_.pop_back();
  }
  maybe_finish();
}

void Worker::next_request_id(std::string& out) {
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "-%02x%08" PRIx64, id_ & 0xff, ++id_counter_);
  out.assign(id_prefix_);
  out.append(buf, static_cast<size_t>(n));
}

}  // namespace fg::net
