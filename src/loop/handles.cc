#include "loop/handles.h"

#include <utility>

namespace fg::loop {

struct Timer::Handle {
  uv_timer_t timer;
  std::function<void()> fn;
};

Timer::Timer(uv_loop_t* loop, std::function<void()> fn) : h_(new Handle{}) {
  h_->fn = std::move(fn);
  uv_timer_init(loop, &h_->timer);
  h_->timer.data = h_;
}

Timer::~Timer() {
  h_->fn = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&h_->timer),
           [](uv_handle_t* h) { delete static_cast<Handle*>(h->data); });
}

void Timer::start(uint64_t first_ms, uint64_t repeat_ms) {
  uv_timer_start(
      &h_->timer,
      [](uv_timer_t* t) {
        auto* h = static_cast<Handle*>(t->data);
        if (h->fn) h->fn();
      },
      first_ms, repeat_ms);
}

void Timer::stop() { uv_timer_stop(&h_->timer); }

struct Wakeup::Handle {
  uv_async_t async;
  std::function<void()> fn;
};

Wakeup::Wakeup(uv_loop_t* loop, std::function<void()> fn) : h_(new Handle{}) {
  h_->fn = std::move(fn);
  uv_async_init(loop, &h_->async, [](uv_async_t* a) {
    auto* h = static_cast<Handle*>(a->data);
    if (h->fn) h->fn();
  });
  h_->async.data = h_;
}

Wakeup::~Wakeup() {
  h_->fn = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&h_->async),
           [](uv_handle_t* h) { delete static_cast<Handle*>(h->data); });
}

void Wakeup::send() { uv_async_send(&h_->async); }

}  // namespace fg::loop
