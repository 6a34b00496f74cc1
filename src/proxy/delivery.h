// A parked ticket's delivery to the shop, driven by its route's Dispatcher: a budget
// token, the start script, the HTTP exchange, retries (in memory, or parked on the
// retry schedule), and the final state written back to Redis. Loop thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "floodgate/config.h"
#include "loop/lifetime.h"
#include "net/snapshot.h"
#include "proxy/dispatcher.h"
#include "proxy/upstream_pool.h"
#include "queue/dead_letter.h"
#include "queue/queue_store.h"

namespace fg::proxy {

// One ticket on its way to the shop: budget token, start script, HTTP exchange,
// retries, final state. Owned by its Dispatcher; deletes itself through delivery_done().
class Delivery final : public UpstreamUser {
 public:
  Delivery(Dispatcher* d, std::string entry, std::string ticket, bool reclaimed);
  ~Delivery() override;

  void begin();

  // Leaves the dispatcher: no callback reaches this object any more; the reaper frees it.
  void retire();

  // The worker is stopping: give up waiting; the entry stays pending in Redis and is
  // reclaimed later (by this instance after a restart, or by another one).
  void abandon();

  // On the wire to the shop, or recording its outcome: a stopping dispatcher lets it
  // finish instead of giving it up.
  bool sending() const { return conn_ != nullptr || finishing_; }
  const std::string& entry() const { return entry_; }

 private:
  const RouteConfig* route() const;

  void wait_budget();

  // The start script, with the budget token already taken.
  void start_ticket();
  void on_started(queue::Delivery& del);
  void send();
  void connect();
  void write_request();

  // UpstreamUser
  void on_upstream_connected(UpstreamConn* c) override;
  void on_upstream_head(http::ResponseHead& h) override;
  void on_upstream_body(const char* data, size_t len) override;
  void on_upstream_complete() override;
  void on_upstream_error(UpstreamError kind, bool) override;
  void on_upstream_drained() override {}

  void outcome(UpstreamError kind, const std::string& reason);
  void retry_or_fail(const std::string& reason);

  // A route with a retry schedule never gives a delivery up: after `del_.attempts`
  // failed attempts it waits the schedule's next delay (in memory when that is short,
  // parked in Redis otherwise), or becomes a dead letter once the schedule is exhausted.
  void retry_on_schedule(const RouteConfig& rc, const std::string& reason);

  enum class Move { kPark, kBury };
  // Parks the ticket in the retry set (due at `due_ms`) or buries it as a dead letter.
  // Like finish(), the delivery stays and keeps its entry claimed until Redis has
  // answered; a refused or lost command is tried again with backoff.
  void move_out(Move how, const std::string& reason, uint64_t now_ms, uint64_t due_ms);
  void write_move();
  void on_moved(queue::MoveResult r);
  void complete();
  void fail(const std::string& reason);

  // Records the final state. The delivery stays (and keeps its entry claimed) until
  // Redis has acknowledged the write: a refused write (OOM, READONLY, MISCONF, a
  // timeout) is tried again with backoff, because leaving the entry for a reclaim
  // would deliver the ticket to the shop a second time although its answer is known.
  void finish(const char* state, const std::string& blob, const std::string& reason, bool store_idem);
  void write_final();

  // A write was refused for a stale fencing token: this instance was deposed. Nothing
  // was written; the entry belongs to the new leader, which delivers it again.
  void deposed();
  void on_final_written(queue::Written w);

  // Runs `next` after a backoff that doubles from 100 ms to 2 s, keeping the stream
  // entry claimed meanwhile so that no other consumer reclaims it.
  void redis_backoff(void (*next)(Delivery*));
  void webhook(const std::string& reason, int64_t attempts);

  Dispatcher* d_;
  std::string entry_;
  std::string ticket_;
  bool reclaimed_;
  queue::Fence fence_;  // the dispatch lease's token when this delivery began
  bool started_ = false;
  uv_timer_t* timer_;
  std::shared_ptr<const net::Snapshot> snap_;
  queue::Delivery del_;
  UpstreamPool* pool_ = nullptr;
  UpstreamConn* conn_ = nullptr;
  size_t upstream_index_ = 0;
  std::vector<bool> tried_;
  int status_ = 0;
  std::string reason_;
  std::string resp_headers_;
  std::string resp_body_;
  bool too_large_ = false;
  uint64_t retry_after_ms_ = 0;
  uint64_t wake_due_ns_ = 0;  // when the budget said a token would be free
  // The final state being written (kept for retries of the write).
  bool finishing_ = false;
  std::string fin_state_, fin_blob_, fin_reason_;
  bool fin_store_idem_ = false;
  struct PendingMove {
    Move how = Move::kPark;
    uint64_t now_ms = 0, due_ms = 0;
  } move_;  // the park or bury being written (move_out)
  uint64_t redis_backoff_ms_ = 0;
  void (*backoff_next_)(Delivery*) = nullptr;
  loop::Anchor<Delivery> anchor_{this};
};

}  // namespace fg::proxy
