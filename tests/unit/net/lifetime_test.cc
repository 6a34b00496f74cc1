// Tests for the lifetime rule: guards (loop/lifetime.h) and the reaper (net/reaper.h).
#include "loop/lifetime.h"

#include <catch2/catch.hpp>

#include <functional>
#include <memory>
#include <vector>

#include "net/reaper.h"
#include "tests/support/loop_fixture.h"

namespace {

using fg::loop::Anchor;
using fg::loop::Guard;

struct Thing {
  Anchor<Thing> anchor{this};
  int calls = 0;
};

// Counts its destruction into a flag owned by the test.
struct Tracked {
  explicit Tracked(bool* freed) : freed(freed) {}
  ~Tracked() { *freed = true; }
  bool* freed;
};

}  // namespace

TEST_CASE("a guard reaches its object until the object goes, is renewed or revoked") {
  auto t = std::make_unique<Thing>();
  Guard<Thing> g = t->anchor.guard();
  REQUIRE(g.get() == t.get());
  CHECK(static_cast<bool>(g));

  t->anchor.renew();  // a new exchange: the old guard is stale, a new one works
  CHECK(g.get() == nullptr);
  Guard<Thing> g2 = t->anchor.guard();
  CHECK(g2.get() == t.get());

  t.reset();  // gone: every guard sees null, and holding one is still safe
  CHECK(g2.get() == nullptr);
  CHECK(g.get() == nullptr);

  auto u = std::make_unique<Thing>();
  Guard<Thing> g3 = u->anchor.guard();
  u->anchor.revoke();
  CHECK(g3.get() == nullptr);
  CHECK(u->anchor.guard().get() == nullptr);  // also for guards taken later
  CHECK(Guard<Thing>().get() == nullptr);
}

TEST_CASE("the reaper frees a retired object after the retiring callback returned") {
  fg::test::LoopFixture fx;
  auto reaper = std::make_unique<fg::net::Reaper>(&fx.loop);
  bool freed = false;
  bool freed_inside = true;
  uv_timer_t timer;
  uv_timer_init(&fx.loop, &timer);
  struct Ctx {
    fg::net::Reaper* reaper;
    bool* freed;
    bool* freed_inside;
  } ctx{reaper.get(), &freed, &freed_inside};
  timer.data = &ctx;
  uv_timer_start(&timer, [](uv_timer_t* t) {
    auto* c = static_cast<Ctx*>(t->data);
    c->reaper->retire(new Tracked(c->freed));
    *c->freed_inside = *c->freed;  // still alive while its retiring callback runs
  }, 1, 0);
  REQUIRE(fx.run_until([&] { return freed; }, 1000));
  CHECK_FALSE(freed_inside);
  CHECK(reaper->pending() == 0);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  reaper->close();
  REQUIRE(fx.close());
  reaper.reset();
}

TEST_CASE("the reaper does not keep an idle loop busy, and frees what waits when it closes") {
  fg::test::LoopFixture fx;
  auto reaper = std::make_unique<fg::net::Reaper>(&fx.loop);
  // Nothing retired: the loop has nothing to do (the reaper's handles are inactive).
  CHECK(uv_run(&fx.loop, UV_RUN_NOWAIT) == 0);
  bool freed = false;
  reaper->retire(std::make_unique<Tracked>(&freed));
  CHECK_FALSE(freed);
  reaper->close();
  REQUIRE(fx.close());
  CHECK(freed);
  bool late = false;
  reaper->retire(new Tracked(&late));  // after close: freed at once
  CHECK(late);
  reaper.reset();
}
