// The worker as a loop: it drives whatever net::Service it is given (here one that
// records its calls), with no proxy code involved: prepare before listening, start,
// accept, snapshot switches, the drain held while the service is busy, stop.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "floodgate/config.h"
#include "net/service.h"
#include "net/snapshot.h"
#include "net/worker.h"
#include "tests/unit/proxy/fake_upstream.h"

namespace {

using fg::test::free_port;

struct Journal {
  std::mutex mu;
  std::vector<std::string> events;
  void add(std::string e) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(std::move(e));
  }
  bool has(const std::string& e) {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& x : events)
      if (x == e) return true;
    return false;
  }
  size_t index(const std::string& e) {
    std::lock_guard<std::mutex> lock(mu);
    for (size_t i = 0; i < events.size(); i++)
      if (events[i] == e) return i;
    return events.size();
  }
};

class RecordingService final : public fg::net::Service {
 public:
  RecordingService(fg::net::Worker& w, Journal* j, bool fail_prepare, bool busy_on_drain)
      : worker_(w), journal_(j), fail_prepare_(fail_prepare), busy_on_drain_(busy_on_drain) {}
  fg::Status on_prepare() override {
    journal_->add("prepare");
    return fail_prepare_ ? fg::Status::error("prepare failed") : fg::Status::ok();
  }
  void on_start() override { journal_->add("start"); }
  void on_accept(uv_stream_t* server) override {
    auto* c = new uv_tcp_t;
    uv_tcp_init(worker_.loop(), c);
    if (uv_accept(server, reinterpret_cast<uv_stream_t*>(c)) == 0) journal_->add("accept");
    uv_close(reinterpret_cast<uv_handle_t*>(c), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  }
  void on_snapshot(const fg::net::Snapshot&) override { journal_->add("snapshot"); }
  void on_tick(uint64_t) override {}
  void on_pressure(bool, const char*) override {}
  void on_drain() override {
    journal_->add("drain");
    if (!busy_on_drain_) return;
    // Busy for a moment (a write still on its way); then tell the worker.
    busy_ = true;
    uv_timer_init(worker_.loop(), &timer_);
    timer_.data = this;
    uv_timer_start(&timer_, [](uv_timer_t* t) {
      auto* self = static_cast<RecordingService*>(t->data);
      self->busy_ = false;
      self->journal_->add("idle");
      uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
      self->worker_.service_idle();
    }, 50, 0);
  }
  void on_drain_expired() override { journal_->add("drain_expired"); }
  size_t connections() const override { return 0; }
  bool busy() const override { return busy_; }
  void on_stop() override { journal_->add("stop"); }

 private:
  fg::net::Worker& worker_;
  Journal* journal_;
  bool fail_prepare_;
  bool busy_on_drain_;
  bool busy_ = false;
  uv_timer_t timer_;
};

std::shared_ptr<const fg::net::Snapshot> snapshot(uint16_t listen) {
  std::string text = "[server]\nlisten = \"127.0.0.1:" + std::to_string(listen) +
                     "\"\nworkers = 1\ndrain_timeout = \"5s\"\n\n"
                     "[upstreams.shop]\nservers = [\"127.0.0.1:9\"]\n\n"
                     "[[routes]]\nname = \"all\"\nmatch = { prefix = \"/\" }\nupstream = \"shop\"\n";
  auto c = fg::config::load_string(text, "worker_test.toml");
  INFO(c.message());
  REQUIRE(c.is_ok());
  return fg::net::Snapshot::build(c.value(), nullptr, fg::net::mono_ns());
}

fg::net::ServiceFactory recording(Journal* j, bool fail_prepare = false, bool busy_on_drain = false) {
  return [=](fg::net::Worker& w) { return std::make_unique<RecordingService>(w, j, fail_prepare, busy_on_drain); };
}

bool wait_for(Journal& j, const std::string& e) {
  for (int i = 0; i < 300 && !j.has(e); i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return j.has(e);
}

}  // namespace

TEST_CASE("a worker drives its service: prepare, start, accept, snapshot, drain, stop") {
  Journal j;
  fg::net::Instance instance;
  instance.workers = 1;
  uint16_t listen = free_port();
  auto snap = snapshot(listen);
  fg::net::Worker w(0, &instance, snap, recording(&j));
  REQUIRE(w.start().is_ok());
  fg::test::http_get(listen, "/");  // the service closes it at once
  CHECK(wait_for(j, "accept"));
  w.post_snapshot(snapshot(listen));
  CHECK(wait_for(j, "snapshot"));
  w.request_stop();
  w.join();
  CHECK(j.index("prepare") < j.index("start"));
  CHECK(j.index("start") < j.index("accept"));
  CHECK(j.index("drain") < j.index("stop"));
  CHECK(j.has("stop"));
  CHECK_FALSE(j.has("drain_expired"));
}

TEST_CASE("a busy service holds the drain until it says it is idle") {
  Journal j;
  fg::net::Instance instance;
  instance.workers = 1;
  fg::net::Worker w(0, &instance, snapshot(free_port()), recording(&j, false, true));
  REQUIRE(w.start().is_ok());
  w.request_stop();
  w.join();
  CHECK(j.index("drain") < j.index("idle"));
  CHECK(j.index("idle") < j.index("stop"));
}

TEST_CASE("a failed prepare fails the start: nothing is started or served") {
  Journal j;
  fg::net::Instance instance;
  instance.workers = 1;
  fg::net::Worker w(0, &instance, snapshot(free_port()), recording(&j, true));
  fg::Status s = w.start();
  CHECK_FALSE(s.is_ok());
  w.join();
  CHECK(j.has("prepare"));
  CHECK_FALSE(j.has("start"));
  CHECK(j.has("stop"));
}
