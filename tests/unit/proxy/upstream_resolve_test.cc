// Upstream names are resolved with uv_getaddrinfo (libuv's thread pool), never by a
// blocking call on a worker loop. A worker (its own thread and loop, as in production)
// serves through an upstream given by name; a name that cannot be resolved fails the
// start (docs/operations.md); a pool added by a reload resolves in the background and
// serves once its name has an answer.
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "floodgate/config.h"
#include "net/snapshot.h"
#include "gateway/worker_context.h"
#include "net/worker.h"
#include "tests/support/loop_fixture.h"
#include "tests/unit/proxy/fake_upstream.h"

namespace {

using fg::test::FakeUpstream;
using fg::test::free_port;
using fg::test::http_get;
using fg::test::mono_ms;

std::string config_text(uint16_t listen, const std::string& server) {
  return "[server]\nlisten = \"127.0.0.1:" + std::to_string(listen) +
         "\"\nworkers = 1\ndrain_timeout = \"1s\"\n\n"
         "[upstreams.shop]\nservers = [\"" + server + "\"]\nconnect_timeout = \"500ms\"\ntimeout = \"2s\"\n\n"
         "[[routes]]\nname = \"all\"\nmatch = { prefix = \"/\" }\nupstream = \"shop\"\n";
}

std::shared_ptr<const fg::net::Snapshot> snapshot(const std::string& text, const fg::net::Snapshot* prev = nullptr) {
  auto c = fg::config::load_string(text, "upstream_resolve_test.toml");
  INFO(c.message());
  REQUIRE(c.is_ok());
  return fg::net::Snapshot::build(c.value(), prev, fg::net::mono_ns());
}

bool ok_200(const std::string& response) { return response.rfind("HTTP/1.1 200", 0) == 0; }

}  // namespace

TEST_CASE("a worker resolves an upstream host name and serves through it") {
  FakeUpstream shop("by name");
  REQUIRE(shop.port() != 0);
  uint16_t listen = free_port();
  fg::net::Instance instance;
  instance.workers = 1;
  fg::net::Worker w(0, &instance, snapshot(config_text(listen, "localhost:" + std::to_string(shop.port()))), fg::gateway::make_worker_context);
  fg::Status s = w.start();
  INFO(s.message());
  REQUIRE(s.is_ok());
  std::string r = http_get(listen, "/x");
  INFO(r);
  CHECK(ok_200(r));
  CHECK(r.find("by name") != std::string::npos);
  CHECK(shop.requests() == 1);
  w.request_stop();
  w.join();
}

TEST_CASE("a worker does not start when an upstream name cannot be resolved") {
  uint16_t listen = free_port();
  fg::net::Instance instance;
  instance.workers = 1;
  fg::net::Worker w(0, &instance, snapshot(config_text(listen, "no-such-host.invalid:80")), fg::gateway::make_worker_context);
  fg::Status s = w.start();
  REQUIRE_FALSE(s.is_ok());
  CHECK(s.message().find("upstreams.shop: cannot resolve no-such-host.invalid:80") != std::string::npos);
  w.join();
}

TEST_CASE("a pool added by a reload resolves its name in the background, then serves") {
  FakeUpstream first("first");
  FakeUpstream second("second");
  uint16_t listen = free_port();
  fg::net::Instance instance;
  instance.workers = 1;
  auto snap = snapshot(config_text(listen, "127.0.0.1:" + std::to_string(first.port())));
  fg::net::Worker w(0, &instance, snap, fg::gateway::make_worker_context);
  REQUIRE(w.start().is_ok());
  CHECK(http_get(listen, "/").find("first") != std::string::npos);
  w.post_snapshot(snapshot(config_text(listen, "localhost:" + std::to_string(second.port())), snap.get()));
  // Until the name has its answer a request fails like one with no server up (503
  // upstream_unavailable, at once rather than after a wait); the
  // worker keeps serving meanwhile and switches once the resolver answered.
  std::string r;
  uint64_t until = mono_ms() + 3000;
  while (mono_ms() < until) {
    r = http_get(listen, "/");
    if (r.find("second") != std::string::npos) break;
    INFO(r);
    CHECK((r.find("second") != std::string::npos ||
           (r.rfind("HTTP/1.1 503", 0) == 0 && r.find("upstream_unavailable") != std::string::npos)));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  INFO(r);
  CHECK(r.find("second") != std::string::npos);
  w.request_stop();
  w.join();
}
