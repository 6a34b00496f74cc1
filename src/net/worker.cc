// Worker threads: loop setup, accept, snapshot switches, graceful drain and teardown.
#include "net/worker.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "net/listener.h"

namespace fg::net {
namespace {

constexpr uint64_t kTickMs = 100;

}  // namespace

Worker::Worker(int id, Instance* instance, std::shared_ptr<const Snapshot> snapshot, ServiceFactory make_service)
    : id_(id), instance_(instance), snapshot_(std::move(snapshot)), make_service_(std::move(make_service)),
      read_buffer_(new char[kReadBufferSize]) {
  metrics::Registry::get().ensure_thread(id_);
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

void Worker::post_snapshot(std::shared_ptr<const Snapshot> snapshot) {
  {
    std::lock_guard<std::mutex> lock(mailbox_mu_);
    mailbox_ = std::move(snapshot);
  }
  uv_async_send(&snapshot_async_);
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::run(std::promise<Status>* started) {
  uv_loop_init(&loop_);
  uv_async_init(&loop_, &stop_async_, on_stop_async);
  stop_async_.data = this;
  uv_async_init(&loop_, &snapshot_async_, on_snapshot_async);
  snapshot_async_.data = this;
  uv_timer_init(&loop_, &drain_timer_);
  drain_timer_.data = this;
  uv_timer_init(&loop_, &tick_timer_);
  tick_timer_.data = this;
  reaper_ = std::make_unique<Reaper>(&loop_);
  service_ = make_service_(*this);

  Status status = service_->on_prepare();
  if (status.is_ok()) status = sync_listeners();
  bool ok = status.is_ok();
  if (ok) service_->on_start();
  if (ok) {
    next_tick_ns_ = uv_hrtime() + kTickMs * 1000000;
    uv_timer_start(&tick_timer_, on_tick, kTickMs, kTickMs);
    log::event("info", "worker_start", [&](log::Line& l) { l.num("worker", id_); });
  } else {
    stop_requested_ = true;
    begin_drain();
  }
  started->set_value(status);  // `started` must not be touched after this
  uv_run(&loop_, UV_RUN_DEFAULT);
  access_log_.flush();
  listeners_.clear();
  closed_listeners_.clear();
  service_.reset();
  reaper_.reset();
  // Every handle is closed by now; a non-zero result would mean a leaked handle.
  int r = uv_loop_close(&loop_);
  if (r != 0) {
    log::event("error", "worker_leak", [&](log::Line& l) { l.num("worker", id_).str("error", uv_strerror(r)); });
  }
  if (ok) log::event("info", "worker_stop", [&](log::Line& l) { l.num("worker", id_); });
}

Status Worker::sync_listeners() {
  // Listeners are keyed by their address text: open new ones, close dropped ones.
  const auto& want = config().server.listen;
  std::vector<std::unique_ptr<Listener>> keep;
  for (auto& l : listeners_) {
    bool wanted = false;
    for (const auto& a : want) wanted = wanted || a.text == l->address();
    if (wanted) {
      keep.push_back(std::move(l));
    } else {
      l->close();
      closed_listeners_.push_back(std::move(l));
    }
  }
  listeners_ = std::move(keep);
  Status first_error;
  for (const auto& a : want) {
    bool have = false;
    for (auto& l : listeners_) have = have || l->address() == a.text;
    if (have) continue;
    auto l = std::make_unique<Listener>(this, a);
    Status s = l->open();
    if (s) {
      listeners_.push_back(std::move(l));
    } else {
      closed_listeners_.push_back(std::move(l));
      if (first_error) first_error = s;
    }
  }
  return first_error;
}

void Worker::on_snapshot_async(uv_async_t* a) {
  auto* self = static_cast<Worker*>(a->data);
  std::shared_ptr<const Snapshot> next;
  {
    std::lock_guard<std::mutex> lock(self->mailbox_mu_);
    next = std::move(self->mailbox_);
  }
  if (next && !self->draining_) self->apply_snapshot(std::move(next));
}

void Worker::apply_snapshot(std::shared_ptr<const Snapshot> next) {
  // Requests in flight keep the snapshot they started with; new requests see the new
  // one from here on.
  std::shared_ptr<const Snapshot> old = std::move(snapshot_);
  snapshot_ = std::move(next);
  service_->on_snapshot(*old);
  Status s = sync_listeners();
  if (!s) {
    log::event("error", "listen_failed", [&](log::Line& l) { l.num("worker", id_).str("error", s.message()); });
  }
}

void Worker::on_stop_async(uv_async_t* a) {
  auto* self = static_cast<Worker*>(a->data);
  self->begin_drain();
}

void Worker::begin_drain() {
  if (draining_) return;
  draining_ = true;
  for (auto& l : listeners_) l->close();
  if (service_) service_->on_drain();
  uv_timer_start(&drain_timer_, on_drain_timer, config().server.drain_timeout_ms, 0);
  maybe_finish();
}

void Worker::on_drain_timer(uv_timer_t* t) {
  auto* self = static_cast<Worker*>(t->data);
  log::event("warn", "drain_timeout", [&](log::Line& l) {
    l.num("worker", self->id_).num("connections", static_cast<int64_t>(self->service_->connections()));
  });
  self->service_->on_drain_expired();
  self->maybe_finish();
}

void Worker::maybe_finish() {
  if (!draining_ || finished_ || service_->busy()) return;
  finished_ = true;
  service_->on_stop();
  reaper_->close();
  uv_close(reinterpret_cast<uv_handle_t*>(&stop_async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&snapshot_async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&tick_timer_), nullptr);
}

void Worker::on_tick(uv_timer_t* t) {
  auto* self = static_cast<Worker*>(t->data);
  // Loop lag: how late this periodic timer fires compared with its schedule.
  uint64_t now_ns = uv_hrtime();
  uint64_t lag = now_ns > self->next_tick_ns_ ? now_ns - self->next_tick_ns_ : 0;
  self->next_tick_ns_ = now_ns + kTickMs * 1000000;
  self->instance_->loop_lag_ns[self->id_].store(lag, std::memory_order_relaxed);
  uint64_t limit_ms = self->config().pressure.loop_lag_ms;
  bool pressure = false;
  const char* condition = "loop_lag";
  if (uint64_t qmax = self->config().pressure.queue_depth; qmax > 0) {
    for (const auto& rt : self->snapshot_->routes) {
      if (rt.queue && rt.queue->depth.load(std::memory_order_relaxed) > static_cast<int64_t>(qmax)) {
        pressure = true;
        condition = "queue_depth";
      }
    }
  }
  if (limit_ms > 0 && !pressure) {
    int n = self->instance_->workers.load(std::memory_order_relaxed);
    for (int i = 0; i < n && i < metrics::kMaxWorkers; i++) {
      if (self->instance_->loop_lag_ns[i].load(std::memory_order_relaxed) > limit_ms * 1000000) pressure = true;
    }
  }
  if (pressure != self->pressure_) self->service_->on_pressure(pressure, condition);
  self->pressure_ = pressure;

  self->access_log_.flush();
  self->service_->on_tick(self->now_ms());
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
  service_->on_accept(server);
}

}  // namespace fg::net
