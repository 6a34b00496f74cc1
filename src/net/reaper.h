// Deferred deletion for one loop: objects retired here are freed from a uv_check
// callback, after the callback that retired them (and every frame above it) returned.
// Together with loop/lifetime.h this is the rule that no object is freed while a
// callback into it can still be running. Loop-thread only.
#pragma once

#include <uv.h>

#include <memory>
#include <vector>

namespace fg::net {

class Reaper {
 public:
  explicit Reaper(uv_loop_t* loop);
  ~Reaper();  // requires close() to have run (its handles are freed in their close callbacks)
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;

  template <class T>
  void retire(T* obj) {
    add(obj, [](void* p) { delete static_cast<T*>(p); });
  }
  template <class T>
  void retire(std::unique_ptr<T> obj) {
    retire(obj.release());
  }

  // Frees what is waiting once the loop reaches the close callbacks. Objects retired
  // after that (the loop is ending: no callback into them can come) are freed at once.
  void close();
  size_t pending() const { return items_.size(); }

 private:
  struct Item {
    void* obj;
    void (*destroy)(void*);
  };
  void add(void* obj, void (*destroy)(void*));
  void reap();

  std::vector<Item> items_;
  uv_check_t* check_;
  uv_idle_t* idle_;  // runs while items wait, so that the loop does not block in poll
  bool armed_ = false;
  bool closed_ = false;
};

}  // namespace fg::net
