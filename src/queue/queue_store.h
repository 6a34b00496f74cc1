// Durable queues and tickets in Redis (SPEC §6). One stream per route with one
// consumer group ("fg") shared by every worker of every instance; one hash per ticket;
// two counters per route (enqueued, taken out of the queued state) from which depth
// and positions are derived. Each state change is one Lua script, so it is atomic.
// Ticket state changes are published on one channel ("<prefix>tickets") so that
// long-polls wake and workers' ticket memories (ticket_memory.h) stay current without
// polling Redis. The message is the ticket id; a change that takes a ticket out of the
// queued state appends " <route> <taken>", the route's taken counter after it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "redis/redis_client.h"

namespace fg::queue {

inline constexpr const char* kGroup = "fg";

// The route part of a ticket id (new_ticket_id); "" for an id that is not valid.
std::string_view ticket_route(std::string_view id);

// Key names, all under the configured prefix. Ready for Redis Cluster (SPEC §10): every
// key of a route carries the hash tag {<route>} (route names cannot contain braces), so
// that each script, which touches one route's keys only, touches one hash slot. The
// route's stream, counters, client sets, retry and dead sets, its dispatch lease
// (cluster::LeaderLease with tag <route>), its budget and its idempotency records
// (idempotency::Exchange) share that slot. A ticket id carries its route
// ("<22 random characters>.<route>", new_ticket_id), so that a poll, which knows only
// the id, finds the ticket's key in the route's slot.
struct Keys {
  std::string prefix;
  // "<prefix>q:{<route>}", the start of every queue key of the route.
  std::string route_base(std::string_view route) const { return prefix + "q:{" + std::string(route) + "}"; }
  std::string stream(std::string_view route) const { return route_base(route) + ":s"; }
  std::string enq(std::string_view route) const { return route_base(route) + ":enq"; }
  std::string taken(std::string_view route) const { return route_base(route) + ":taken"; }
  std::string client_set(std::string_view route, std::string_view client) const {
    return route_base(route) + ":c:" + std::string(client);
  }
  // "<prefix>t:{<route>}:": a ticket's key is this followed by its id. The scripts that
  // read tickets by the ids in a route's sets are given it.
  std::string ticket_prefix(std::string_view route) const { return prefix + "t:{" + std::string(route) + "}:"; }
  // The key of a ticket id made by new_ticket_id (valid_ticket_id).
  std::string ticket(std::string_view id) const { return ticket_prefix(ticket_route(id)) + std::string(id); }
  std::string channel() const { return prefix + "tickets"; }
};
struct Scripts {
  Scripts();
  redis::Script enqueue, start, finish, poll, cancel, expire, retry;
  // Behind a fencing token: the same, and keep_claimed's XCLAIM.
  redis::Script start_fenced, finish_fenced, retry_fenced, claim_fenced;
};

// The dispatcher's writes (start, keep_claimed, count_retry, finish; park, bury and
// promote in queue/dead_letter.h) carry the fencing token of the route's
// dispatch lease (cluster::LeaderLease): `key` is the lease's fence key, which holds
// the highest token seen. A write with a lower token is refused before it changes
// anything (a deposed leader's late write); a higher one raises the fence. token 0:
// unfenced (a single dispatcher without a lease, tests).
struct Fence {
  std::string key;
  uint64_t token = 0;
};

// The Lua put before a dispatcher script (after its shebang line) to fence it: it takes
// the fence key and the token off the end of KEYS and ARGV and answers an error
// starting "FENCED" for a token below the fence.
extern const char* const kFencePrelude;
// Whether `r` is that refusal.
bool is_fenced(const redis::Reply& r);
// Appends the fence to `keys` and `args` and returns `with_fence`; token 0: `plain`,
// unchanged arguments.
redis::Script* fenced(redis::Script* plain, redis::Script* with_fence, const Fence& fence,
                      std::vector<std::string>& keys, std::vector<std::string>& args);

// What a request becomes when it is parked.
struct NewTicket {
  std::string id;
  std::string route;
  uint64_t created_ms = 0;
  std::string method, target, header_lines, body;
  std::string client_key;   // for client_max_tickets ("" when unlimited)
  std::string idem_key;     // Redis key of the idempotency record, "" when none
  std::string idem_owner;   // owner token of that record
  std::string forward_key;  // Idempotency-Key sent to the shop (the client's key or the ticket id)
};

struct EnqueueResult {
  enum class Kind { kOk, kFull, kTooMany, kUnavailable } kind = Kind::kUnavailable;
  int64_t seq = 0;
  int64_t depth = 0;  // after this enqueue (kOk) or current (kFull)
};

void enqueue(redis::Client& c, Scripts& s, const Keys& k, const NewTicket& t, uint64_t max_depth,
             uint64_t hash_ttl_ms, uint64_t client_max, std::function<void(EnqueueResult&)> done);

// A ticket taken out of the stream for delivery.
struct Delivery {
  // kFenced: a newer dispatcher exists; nothing was written, the entry is left to it.
  enum class Kind { kGo, kSkip, kExpired, kUnavailable, kFenced } kind = Kind::kUnavailable;
  int64_t attempts = 0;
  std::string method, target, header_lines, body, forward_key;
  int64_t created_ms = 0;
  // >0: back in the queue after a durable retry or a re-delivery (queue/dead_letter.h),
  // so the time since created_ms is not a queue wait.
  int64_t requeued_ms = 0;
};

// Moves a stream entry's ticket to "processing" (or finds it already there after a
// reclaim), counts the attempt, and returns what to send. Cancelled/finished tickets
// come back kSkip (their entry is acknowledged); tickets older than max_wait become
// failed/expired (kExpired).
void start(redis::Client& c, Scripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
           std::string_view ticket_id, uint64_t now_ms, uint64_t max_wait_ms, std::function<void(Delivery&)> done,
           bool reclaimed = false, const Fence& fence = {});

// Claims a stream entry again for `consumer`, resetting its idle time, so that no other
// consumer reclaims it while this one still works on it (waiting for a server or for
// Redis). XCLAIM is allowed while Redis refuses writes that grow memory. Fire and forget.
// With a fence, a deposed dispatcher's claim is refused, so that it cannot keep the new
// leader from reclaiming the entry.
void keep_claimed(redis::Client& c, Scripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
                  std::string_view consumer, const Fence& fence = {});

// Counts one more attempt of a ticket being retried, and claims its stream entry
// again for `consumer` (resetting its idle time) so that no other worker reclaims it
// while this one is still retrying. One script, fenced like start(): a deposed
// dispatcher neither counts nor keeps the entry (the new leader reclaims it). Fire and
// forget; the claim is made also while Redis refuses writes that grow memory.
void count_retry(redis::Client& c, Scripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
                 std::string_view consumer, std::string_view ticket_id, const Fence& fence = {});

// Final state: "done" with the stored response, or "failed" with a reason. Acks and
// deletes the stream entry, updates the idempotency record (stores the answer when
// `store_idem`, else releases it), and publishes the change.
enum class Written { kOk, kFailed, kFenced };
void finish(redis::Client& c, Scripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
            std::string_view ticket_id, std::string_view state, std::string_view response,
            std::string_view reason, uint64_t now_ms, uint64_t ticket_ttl_ms, bool store_idem,
            uint64_t idem_ttl_ms, std::function<void(Written)> done, const Fence& fence = {});

struct TicketView {
  enum class Kind { kUnknown, kQueued, kProcessing, kDone, kFailed, kCancelled, kUnavailable } kind =
      Kind::kUnavailable;
  std::string route;
  int64_t seq = 0;
  int64_t taken = 0;  // route counter, for the position (queued only)
  int64_t created_ms = 0;
  int64_t attempts = 0;
  std::string response;  // done: stored response; failed: stored response, if any
  std::string reason;    // failed; retry and dead: the last attempt's failure
  // The stored state as written ("queued", "processing", "retry", "dead", ...). The
  // durable retry states map to kProcessing above (still owed a delivery: 202).
  std::string state;
  int64_t due_ms = 0;       // retry: when the ticket goes back into the queue
  int64_t requeued_ms = 0;  // >0: queued again after a retry or a re-delivery (max_wait no longer applies)
  int64_t ttl_ms = -1;      // the hash's PTTL when read (-1: none)
};
void poll(redis::Client& c, Scripts& s, const Keys& k, std::string_view ticket_id,
          std::function<void(TicketView&)> done);

// Marks a queued ticket older than max_wait as failed/expired (lazy expiry at read time).
// `done(true)` when this call moved the ticket to expired.
void expire(redis::Client& c, Scripts& s, const Keys& k, std::string_view ticket_id, uint64_t now_ms,
            uint64_t ticket_ttl_ms, std::function<void(bool)> done = nullptr);

enum class CancelResult { kCancelled, kTooLate, kUnknown, kUnavailable };
// `done(result, route)`: route is the cancelled ticket's route (kCancelled only).
void cancel(redis::Client& c, Scripts& s, const Keys& k, std::string_view ticket_id, uint64_t now_ms,
            uint64_t ticket_ttl_ms, std::function<void(CancelResult, const std::string&)> done);

// 128 bits from the OS CSPRNG as 22 URL-safe base64 characters, then "." and the
// route's name: the id names the route whose hash slot holds the ticket (Keys).
std::string new_ticket_id(std::string_view route);
// 22 URL-safe base64 characters, ".", and a route name (letters, digits, '_', '-', '.').
bool valid_ticket_id(std::string_view id);

// Reading script replies, shared with the retry and dead-letter scripts
// (queue/dead_letter.h). reply_ok is false for a failed command and for any error reply
// (OOM, READONLY, NOSCRIPT, BUSY, LOADING, MISCONF, a Lua error...): such a reply
// never counts as success. reply_str / reply_int read element i of an array reply
// ("" / 0 when missing; integers also from strings).
bool reply_ok(redis::Failure f, const redis::Reply& r);
const std::string& reply_str(const redis::Reply& r, size_t i);
int64_t reply_int(const redis::Reply& r, size_t i);

}  // namespace fg::queue
