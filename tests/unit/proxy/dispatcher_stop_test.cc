// A queue dispatcher stopped while a ticket's start script is waiting for Redis.
//
// A worker (its own thread and loop, as in production) dispatches one queued route
// against a real redis-server. The test empties the route budget, parks one ticket and
// waits until the dispatcher has read it: its delivery then waits about a second for
// a budget token. Redis is stopped (SIGSTOP) meanwhile, so the start script the
// delivery sends when the token comes stays unanswered. The dispatcher is then
// stopped (by a reload that removes the queue, or by a drain) and Redis answers late,
// lets the command time out, or dies. No callback may reach the stopped delivery
// (under ASan a use-after-free aborts the run), the worker must end cleanly, and the
// ticket's stream entry stays pending so that it is delivered after a reclaim.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "core/log.h"
#include "floodgate/config.h"
#include "net/snapshot.h"
#include "gateway/worker_context.h"
#include "net/worker.h"
#include "queue/queue_store.h"
#include "redis/redis_client.h"
#include "tests/support/loop_fixture.h"
#include "tests/unit/proxy/fake_upstream.h"
#include "tests/support/redis_server.h"

namespace {

using fg::redis::Client;
using fg::redis::Failure;
using fg::redis::Reply;
using fg::test::free_port;
using fg::test::mono_ms;
using fg::test::RedisServer;
namespace q = fg::queue;

constexpr const char* kPrefix = "dst:";
constexpr uint64_t kCommandTimeoutMs = 1500;

void sleep_ms(uint64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// One queued route at one ticket a second; `queued = false` is the reload that removes
// the queue. The upstream port has no listener: no delivery gets that far here.
std::string config_text(uint16_t listen, uint16_t redis_port, uint16_t upstream, bool queued) {
  std::string t = "[server]\nlisten = \"127.0.0.1:" + std::to_string(listen) +
                  "\"\nworkers = 1\ndrain_timeout = \"3s\"\n\n"
                  "[redis]\nurl = \"redis://127.0.0.1:" + std::to_string(redis_port) +
                  "\"\nprefix = \"" + kPrefix + "\"\ntimeout = \"" + std::to_string(kCommandTimeoutMs) +
                  "ms\"\n\n"
                  "[upstreams.shop]\nservers = [\"127.0.0.1:" + std::to_string(upstream) +
                  "\"]\nconnect_timeout = \"200ms\"\ntimeout = \"1s\"\n\n"
                  "[[routes]]\nname = \"orders\"\nmatch = { methods = [\"POST\"], path = \"/orders\" }\n"
                  "upstream = \"shop\"\nrate = 1\nburst = 0\n";
  t += queued ? "overflow = \"queue\"\nqueue = { concurrency = 1 }\n" : "overflow = \"reject\"\n";
  return t;
}

std::shared_ptr<const fg::Config> load(const std::string& text) {
  auto c = fg::config::load_string(text, "dispatcher_stop_test.toml");
  INFO(c.message());
  REQUIRE(c.is_ok());
  return c.value();
}

// The gateway side (one worker) plus the test's own Redis client on a fixture loop.
struct Rig {
  RedisServer srv;
  fg::test::LoopFixture fx;
  std::unique_ptr<Client> c;
  bool up = false;
  uint16_t listen = free_port();
  uint16_t upstream = free_port();
  fg::net::Instance instance;
  std::shared_ptr<const fg::net::Snapshot> snap;
  std::unique_ptr<fg::net::Worker> worker;
  q::Scripts scripts;
  q::Keys keys{kPrefix};

  Rig() {
    INFO(srv.error());
    REQUIRE(srv.ok());
    auto ep = fg::redis::parse_url(srv.url());
    REQUIRE(ep.is_ok());
    Client::Options o;
    o.endpoint = ep.value();
    o.name = "test";
    o.command_timeout_ms = 3000;
    o.on_state = [this](bool u) { up = u; };
    c = std::make_unique<Client>(&fx.loop, std::move(o));
    c->start();
    REQUIRE(fx.run_until([&] { return up; }, 3000));

    instance.workers = 1;
    snap = fg::net::Snapshot::build(load(config_text(listen, srv.port(), upstream, true)), nullptr,
                                    fg::net::mono_ns());
    worker = std::make_unique<fg::net::Worker>(0, &instance, snap, fg::gateway::make_worker_context);
    fg::Status s = worker->start();
    INFO(s.message());
    REQUIRE(s.is_ok());
  }

  ~Rig() {
    if (worker) {
      worker->request_stop();
      worker->join();
    }
    if (c) {
      bool closed = false;
      c->close([&closed] { closed = true; });
      fx.run_until([&] { return closed; }, 3000);
      c.reset();
    }
    CHECK(fx.close());
  }

  Reply cmd(std::vector<std::string> argv) {
    auto out = std::make_shared<std::pair<bool, Reply>>();
    auto fail = std::make_shared<Failure>(Failure::kNone);
    c->command(std::move(argv), [out, fail](Failure f, Reply& r) {
      *fail = f;
      out->second = std::move(r);
      out->first = true;
    });
    REQUIRE(fx.run_until([&] { return out->first; }, 4000));
    REQUIRE(*fail == Failure::kNone);
    return std::move(out->second);
  }

  int64_t pending() {
    Reply r = cmd({"XPENDING", keys.stream("orders"), q::kGroup});
    if (r.is_error() || r.type != Reply::Type::kArray || r.elements.empty()) return -1;
    return r.elements[0].integer;
  }

  // Empties the route budget, parks one ticket and waits until the dispatcher has read
  // it (its delivery now waits for the next token, about a second away). Returns when
  // the budget was emptied (steady ms).
  uint64_t park_one_behind_empty_budget() {
    uint64_t t0 = mono_ms();
    auto& budget = *snap->routes[0].budget;
    while (budget.try_acquire(fg::net::mono_ns()).admitted) {
    }
    q::NewTicket t;
    t.id = q::new_ticket_id("orders");
    t.route = "orders";
    t.created_ms = fg::log::wall_ms();
    t.method = "POST";
    t.target = "/orders";
    t.header_lines = "Host: shop\r\nContent-Type: application/json\r\n";
    t.body = "{}";
    t.forward_key = t.id;
    auto kind = std::make_shared<int>(-1);
    q::enqueue(*c, scripts, keys, t, 1000, 600000, 0,
               [kind](q::EnqueueResult& r) { *kind = static_cast<int>(r.kind); });
    REQUIRE(fx.run_until([&] { return *kind >= 0; }, 3000));
    REQUIRE(*kind == static_cast<int>(q::EnqueueResult::Kind::kOk));
    bool read = false;
    uint64_t until = mono_ms() + 3000;
    while (!read && mono_ms() < until) {
      read = pending() == 1;
      if (!read) fx.run_for(10);
    }
    REQUIRE(read);
    // The delivery must still be waiting for its token: Redis is stopped before it sends.
    REQUIRE(mono_ms() - t0 < 700);
    return t0;
  }

  // Stops Redis, then waits until the delivery's start script has gone out to it.
  void pause_until_start_is_pending(uint64_t t0) {
    REQUIRE(srv.pause());
    uint64_t due = t0 + 1400;
    if (mono_ms() < due) sleep_ms(due - mono_ms());
  }

  void reload_without_queue() {
    worker->post_snapshot(fg::net::Snapshot::build(load(config_text(listen, srv.port(), upstream, false)),
                                                   snap.get(), fg::net::mono_ns()));
  }

  void stop_worker() {
    worker->request_stop();
    worker->join();
    worker.reset();
  }
};

}  // namespace

TEST_CASE("a reload stops the dispatcher while a start is pending; Redis answers late") {
  Rig rig;
  uint64_t t0 = rig.park_one_behind_empty_budget();
  rig.pause_until_start_is_pending(t0);
  rig.reload_without_queue();
  sleep_ms(300);  // the dispatcher has stopped and let its waiting delivery go
  REQUIRE(rig.srv.resume());
  sleep_ms(300);  // the late answer reaches the worker
  // The entry was taken by this consumer and is left pending for a later reclaim.
  CHECK(rig.pending() == 1);
  rig.stop_worker();
}

TEST_CASE("a reload stops the dispatcher while a start is pending; the command times out") {
  Rig rig;
  uint64_t t0 = rig.park_one_behind_empty_budget();
  rig.pause_until_start_is_pending(t0);
  rig.reload_without_queue();
  // The start went out about a second after t0; its timeout fires kCommandTimeoutMs later.
  uint64_t due = t0 + 1000 + kCommandTimeoutMs + 600;
  sleep_ms(due - mono_ms());
  REQUIRE(rig.srv.resume());
  CHECK(rig.pending() == 1);
  rig.stop_worker();
}

TEST_CASE("a reload stops the dispatcher while a start is pending; Redis dies") {
  Rig rig;
  uint64_t t0 = rig.park_one_behind_empty_budget();
  rig.pause_until_start_is_pending(t0);
  rig.reload_without_queue();
  sleep_ms(300);
  REQUIRE(rig.srv.kill());  // the worker sees the connection drop: pending commands fail
  sleep_ms(500);
  rig.stop_worker();
  REQUIRE(rig.srv.restart());  // for the rig's own client to close cleanly
}

TEST_CASE("a drain stops the dispatcher while a start is pending; Redis answers late") {
  Rig rig;
  uint64_t t0 = rig.park_one_behind_empty_budget();
  rig.pause_until_start_is_pending(t0);
  // The drain closes the worker's Redis connections once the dispatcher is idle:
  // the pending start fails then, while Redis is still stopped.
  rig.stop_worker();
  REQUIRE(rig.srv.resume());
  CHECK(rig.pending() == 1);
}

TEST_CASE("a drain stops the dispatcher while a start is pending; Redis dies") {
  Rig rig;
  uint64_t t0 = rig.park_one_behind_empty_budget();
  rig.pause_until_start_is_pending(t0);
  rig.worker->request_stop();
  REQUIRE(rig.srv.kill());
  rig.stop_worker();
  REQUIRE(rig.srv.restart());
}
