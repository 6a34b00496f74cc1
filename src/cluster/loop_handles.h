// The libuv handles of the cluster objects, and the guard their Redis callbacks hold.
// Handles live on the heap and free themselves in their close callbacks, so an owner
// may be destroyed right after it stopped: the handle finishes closing on a later loop
// turn without touching the owner.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "core/clock.h"

namespace fg::cluster {

// The monotonic clock in ms, the clock of every cluster timeout.
using clock::mono_ms;

// A repeating (or one-shot) timer. Constructed, started, stopped and destroyed on the
// loop's thread; the callback never runs after the destructor.
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
// destructor starts, which runs on the loop's thread; the callback runs on the loop.
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

// A Redis callback may run after its object stopped (close() of the client fails what
// is pending, possibly later). Each object keeps an Alive and its callbacks hold a
// Watch: a callback whose Watch expired returns without touching the object. Loop
// thread only.
using Alive = std::shared_ptr<char>;
using Watch = std::weak_ptr<char>;
inline Alive make_alive() { return std::make_shared<char>(0); }

}  // namespace fg::cluster
