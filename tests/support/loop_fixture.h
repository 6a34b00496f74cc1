// A libuv loop for one test, shared by every unit suite that drives asynchronous code.
// run_until() turns the loop until a condition holds (a 5 ms tick keeps UV_RUN_ONCE
// from blocking when nothing else is due); close() closes the fixture's own handle,
// runs the loop until every close callback ran and requires uv_loop_close() == 0, so
// a handle the code under test forgot to close fails the test. Tests close their own
// objects first and then REQUIRE(close()); the destructor does the same (as a CHECK)
// when a REQUIRE threw halfway, so one failure never aborts the whole run.
#pragma once

#include <uv.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>

namespace fg::test {

inline uint64_t mono_ms() { return uv_hrtime() / 1000000; }

class LoopFixture {
 public:
  LoopFixture() {
    uv_loop_init(&loop);
    uv_timer_init(&loop, &tick_);
  }
  ~LoopFixture() {
    if (!closed_) CHECK(close());
  }
  LoopFixture(const LoopFixture&) = delete;
  LoopFixture& operator=(const LoopFixture&) = delete;

  bool run_until(const std::function<bool()>& pred, uint64_t timeout_ms) {
    uint64_t deadline = mono_ms() + timeout_ms;
    uv_timer_start(&tick_, [](uv_timer_t*) {}, 5, 5);
    while (!pred() && mono_ms() < deadline) uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&tick_);
    return pred();
  }
  void run_for(uint64_t ms) {
    uint64_t end = mono_ms() + ms;
    run_until([&] { return mono_ms() >= end; }, ms + 50);
  }

  // True when the loop closed empty. Idempotent: later calls return the first answer.
  bool close() {
    if (closed_) return close_ok_;
    closed_ = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    close_ok_ = uv_loop_close(&loop) == 0;
    if (!close_ok_) {
      // Name what is left open, then let the process go on (the test fails).
      uv_walk(&loop, [](uv_handle_t* h, void*) { UNSCOPED_INFO("handle left open: " << uv_handle_type_name(h->type)); },
              nullptr);
    }
    return close_ok_;
  }

  uv_loop_t loop;

 private:
  uv_timer_t tick_;
  bool closed_ = false;
  bool close_ok_ = false;
};

}  // namespace fg::test
