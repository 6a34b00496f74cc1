// Deferred deletion on uv_check.
#include "net/reaper.h"

namespace fg::net {

Reaper::Reaper(uv_loop_t* loop) : check_(new uv_check_t), idle_(new uv_idle_t) {
  uv_check_init(loop, check_);
  uv_idle_init(loop, idle_);
  check_->data = this;
  idle_->data = this;
}

Reaper::~Reaper() {
  // close() ran: the handles belong to their close callbacks now.
  for (auto& it : items_) it.destroy(it.obj);
}

void Reaper::add(void* obj, void (*destroy)(void*)) {
  if (closed_) {
    destroy(obj);
    return;
  }
  items_.push_back({obj, destroy});
  if (armed_) return;
  armed_ = true;
  uv_check_start(check_, [](uv_check_t* c) { static_cast<Reaper*>(c->data)->reap(); });
  uv_idle_start(idle_, [](uv_idle_t*) {});
}

void Reaper::reap() {
  // Destructors may retire more objects: those wait for the next turn.
  std::vector<Item> now;
  now.swap(items_);
  for (auto& it : now) it.destroy(it.obj);
  if (items_.empty()) {
    armed_ = false;
    uv_check_stop(check_);
    uv_idle_stop(idle_);
  }
}

void Reaper::close() {
  if (closed_) return;
  closed_ = true;
  armed_ = false;
  check_->data = this;
  uv_close(reinterpret_cast<uv_handle_t*>(idle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
  // What is still waiting is freed in the check handle's close callback: by then the
  // callbacks of this loop turn have all returned.
  uv_close(reinterpret_cast<uv_handle_t*>(check_), [](uv_handle_t* h) {
    auto* self = static_cast<Reaper*>(h->data);
    if (self) {
      std::vector<Item> now;
      now.swap(self->items_);
      for (auto& it : now) it.destroy(it.obj);
    }
    delete reinterpret_cast<uv_check_t*>(h);
  });
}

}  // namespace fg::net
