// Heap-allocated libuv timers for objects that may go away before a close callback
// runs: the timer is freed in its own close callback, never with its owner.
#pragma once

#include <uv.h>

namespace fg::proxy {

inline uv_timer_t* new_timer(uv_loop_t* loop, void* data) {
  auto* t = new uv_timer_t;
  uv_timer_init(loop, t);
  t->data = data;
  return t;
}

inline void close_timer(uv_timer_t* t) {
  uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

}  // namespace fg::proxy
