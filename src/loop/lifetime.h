// The one lifetime rule for asynchronous callbacks on a loop.
//
// An object that hands callbacks to something slower than itself (Redis, a timer of
// another object, a waiter list) owns an Anchor; each callback captures a Guard taken
// from it and calls into the object only through Guard::get(), which is null once the
// object is retired or has moved on to another exchange (renew()). The object itself
// is never deleted from inside one of its callbacks: it is handed to the loop's Reaper
// (net/reaper.h), which frees it from a uv_check callback, when no frame of it is on
// the stack. A Guard keeps only a small shared cell alive, never the object.
//
// Loop-thread only: nothing here is atomic beyond what std::shared_ptr does.
#pragma once

#include <cstdint>
#include <memory>

namespace fg::loop {

template <class T>
class Guard;

template <class T>
class Anchor {
 public:
  explicit Anchor(T* self) : cell_(std::make_shared<Cell>(Cell{self, 0})) {}
  ~Anchor() { cell_->self = nullptr; }
  Anchor(const Anchor&) = delete;
  Anchor& operator=(const Anchor&) = delete;

  Guard<T> guard() const { return Guard<T>(cell_); }
  // Guards handed out so far stop reaching the object (a new exchange begins).
  void renew() { ++cell_->generation; }
  // Every guard, now and later, stops reaching the object (it is being retired).
  void revoke() { cell_->self = nullptr; }
  uint64_t generation() const { return cell_->generation; }

 private:
  friend class Guard<T>;
  struct Cell {
    T* self;
    uint64_t generation;
  };
  std::shared_ptr<Cell> cell_;
};

template <class T>
class Guard {
 public:
  Guard() = default;
  // The object, or null when it was retired or renewed since this guard was taken.
  T* get() const { return cell_ && cell_->generation == generation_ ? cell_->self : nullptr; }
  explicit operator bool() const { return get() != nullptr; }

 private:
  friend class Anchor<T>;
  using Cell = typename Anchor<T>::Cell;
  explicit Guard(std::shared_ptr<Cell> cell) : cell_(std::move(cell)), generation_(cell_->generation) {}
  std::shared_ptr<Cell> cell_;
  uint64_t generation_ = 0;
};

}  // namespace fg::loop
