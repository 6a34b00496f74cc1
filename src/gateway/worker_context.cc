// A worker's context: its request state plus, on worker 0, the instance duties.
#include "gateway/worker_context.h"

#include "proxy/dispatcher.h"

namespace fg::gateway {

WorkerContext::WorkerContext(net::Worker& worker) : proxy::WorkerState(worker) {}

WorkerContext::~WorkerContext() = default;

proxy::Dispatcher* WorkerContext::dispatcher(const std::string& route) {
  return duties_ ? duties_->dispatcher(route) : nullptr;
}

void WorkerContext::on_start() {
  proxy::WorkerState::on_start();
  // The one place that decides where the instance's own duties run.
  if (id() == 0) {
    duties_ = std::make_unique<InstanceDuties>(this, [this] { worker().service_idle(); });
    duties_->start();
  }
}

void WorkerContext::on_snapshot(const net::Snapshot& old) {
  proxy::WorkerState::on_snapshot(old);
  if (duties_) duties_->config_changed();
}

void WorkerContext::on_tick(uint64_t now_ms) {
  if (duties_) duties_->tick();
  proxy::WorkerState::on_tick(now_ms);
}

void WorkerContext::on_pressure(bool on, const char* condition) {
  if (duties_) duties_->pressure_changed(on, condition);
}

void WorkerContext::on_drain() {
  proxy::WorkerState::on_drain();
  if (duties_) duties_->drain();
}

void WorkerContext::on_drain_expired() {
  proxy::WorkerState::on_drain_expired();
  if (duties_) duties_->drain_expired();
}

bool WorkerContext::busy() const { return proxy::WorkerState::busy() || (duties_ && duties_->busy()); }

void WorkerContext::on_stop() {
  proxy::WorkerState::on_stop();
  if (duties_) duties_->stop();
}

std::unique_ptr<net::Service> make_worker_context(net::Worker& worker) {
  return std::make_unique<WorkerContext>(worker);
}

}  // namespace fg::gateway
