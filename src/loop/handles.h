// libuv handles for objects that may go away before a close callback runs. Each handle
// lives on the heap and frees itself in its own close callback, never with its owner,
// so an owner may be destroyed right after it stopped: the handle finishes closing on a
// later loop turn without touching the owner. Callbacks of other kinds (Redis replies)
// reach their object through loop/lifetime.h.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>

namespace fg::loop {

// A repeating (or one-shot) timer calling a function. Constructed, started, stopped and
// destroyed on the loop's thread; the function never runs after the destructor.
class Timer {
 public:
  Timer(uv_loop_t* loop, std::function<void()> fn);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  void start(uint64_t first_ms, uint64_t repeat_ms);
  void stop();

 private:
  struct Handle;
  Handle* h_;
};

// A uv_async_t: send() may be called from any thread (sends coalesce) until the
// destructor starts, which runs on the loop's thread; the function runs on the loop.
class Wakeup {
 public:
  Wakeup(uv_loop_t* loop, std::function<void()> fn);
  ~Wakeup();
  Wakeup(const Wakeup&) = delete;
  Wakeup& operator=(const Wakeup&) = delete;
  void send();

 private:
  struct Handle;
  Handle* h_;
};

// The bare form, for owners that start the timer with different callbacks (a plain
// function taking the timer; `data` points back at the owner): new_timer() instead of
// uv_timer_init, close_timer() in the owner's destructor instead of uv_close.
inline uv_timer_t* new_timer(uv_loop_t* loop, void* data) {
  auto* t = new uv_timer_t;
  uv_timer_init(loop, t);
  t->data = data;
  return t;
}

inline void close_timer(uv_timer_t* t) {
  uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

}  // namespace fg::loop
