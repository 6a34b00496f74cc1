// The durable half of a ticket's retries and its dead-letter state (SPEC §6, last
// paragraph). A delivery that must wait longer than a short in-memory backoff is parked
// in Redis (state "retry", in the route's retry set scored by due time) and its stream
// entry is finished; the route's dispatcher promotes due tickets back into the stream.
// A ticket whose schedule is exhausted becomes "dead": kept without expiry, with its
// body and its idempotency record, listed in the route's dead-letter set until it is
// re-delivered. Each state change is one Lua script, like queue_store.h.
//
// Every function may be called on the loop of the client it is given; `done` runs
// exactly once on that loop (also when Redis is unavailable or answers with an error,
// which is always reported as a failure, never as success).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "queue/queue_store.h"
#include "redis/redis_client.h"

namespace fg::queue {

// The route's sorted sets: tickets waiting for their next attempt (score: due ms) and
// dead letters (score: ms they died).
std::string retry_set_key(const Keys& k, std::string_view route);
std::string dead_set_key(const Keys& k, std::string_view route);

struct RetryScripts {
  RetryScripts();
  redis::Script move, promote, redeliver, list;
  redis::Script move_fenced, promote_fenced;  // behind the dispatch lease's fencing token
};

enum class MoveResult {
  kMoved,        // the ticket left "processing" as asked
  kLate,         // not "processing" (already final, parked, or taken over by a reclaim): nothing changed
  kUnknown,      // no such ticket (its entry, if still there, is acknowledged)
  kUnavailable,  // Redis down, timed out or answered with an error: nothing is known to have changed
  kFenced,       // the fence holds a newer dispatch lease token: nothing changed (queue::Fence)
};

// processing → retry: stores `reason` and `due_ms`, removes the ticket's expiry (and
// that of its idempotency record, so a repeated request still finds the ticket),
// acknowledges and deletes the stream entry `entry_id` and adds the ticket to the
// route's retry set. The attempt count is not touched (start() counts attempts).
// A `entry_id` that is no longer in the stream means another delivery took the ticket
// over and finished with it: kLate, nothing changes.
void park(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
          std::string_view ticket_id, std::string_view reason, uint64_t now_ms, uint64_t due_ms,
          std::function<void(MoveResult)> done, const Fence& fence = {});

// processing → dead: like park, but into the route's dead-letter set (score now_ms).
// The hash keeps its body and never expires; the idempotency record stays (without
// expiry) and keeps pointing at the ticket, so repeats are acknowledged, not queued.
void bury(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
          std::string_view ticket_id, std::string_view reason, uint64_t now_ms,
          std::function<void(MoveResult)> done, const Fence& fence = {});

struct Promoted {
  bool ok = false;            // false: Redis unavailable or error; nothing is known to have moved
  bool fenced = false;        // refused: a newer dispatch lease token exists (nothing moved)
  int64_t moved = 0;          // tickets queued again by this call
  int64_t next_due_ms = -1;   // earliest due time still in the set, -1 when empty
};
// Moves up to `max` tickets due at `now_ms` from the retry set back into the queue,
// earliest due first: each gets a new stream entry and a new sequence (so depth and
// positions keep following the enq/taken counters) and state "queued" again, which
// max_wait, cancel and lazy expiry no longer apply to. Members whose ticket is not in
// "retry" any more are dropped from the set. The queue's max_depth does not apply:
// these tickets were accepted long ago. With a fence (the route's dispatch leader), a
// deposed leader's promotion is refused (fenced) before anything moves.
void promote(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, uint64_t now_ms,
             uint64_t max, std::function<void(const Promoted&)> done, const Fence& fence = {});

struct DeadLetter {
  std::string id;
  int64_t created_ms = 0;
  int64_t dead_ms = 0;
  int64_t attempts = 0;
  std::string reason;  // the last attempt's failure
  std::string method, target;
};
struct DeadPage {
  bool ok = false;
  int64_t total = 0;  // dead letters of the route, all pages
  std::vector<DeadLetter> items;  // oldest first
};
// One page of the route's dead letters, oldest first: `offset` (0-based) and at most
// `count` (capped at 1000). Read-only, so it also answers while Redis refuses writes
// (maxmemory reached).
void list_dead(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, uint64_t offset,
               uint64_t count, std::function<void(DeadPage&)> done);

// Number of tickets in the route's dead-letter set, or retry set (for gauges).
// `done(false, 0)` when Redis is unavailable.
void count_dead(redis::Client& c, const Keys& k, std::string_view route, std::function<void(bool, int64_t)> done);
void count_parked(redis::Client& c, const Keys& k, std::string_view route,
                  std::function<void(bool, int64_t)> done);

struct Redelivered {
  bool ok = false;
  int64_t moved = 0;      // tickets queued again by this call
  int64_t remaining = 0;  // dead letters left in the route's set
};
// dead → queued for one ticket of `route` (attempts reset to 0, a new stream entry and
// sequence, removed from the dead-letter set). Calling it again, or for a ticket that
// is not a dead letter of this route, moves nothing (moved = 0).
void redeliver(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, std::string_view ticket_id,
               uint64_t now_ms, std::function<void(const Redelivered&)> done);
// The same for up to `max` dead letters of the route, oldest first; call again while
// `remaining` > 0.
void redeliver_all(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, uint64_t now_ms,
                   uint64_t max, std::function<void(const Redelivered&)> done);

}  // namespace fg::queue
