// The idempotency stage of one request: finds its key, claims it in Redis, turns
// Redis's answer into what the request does next, holds the client's answer back
// until Redis has the record, and completes or releases the claim. The decisions are
// plain functions of their inputs (tested without a socket); the Redis calls go
// through store.h on the worker's connection (`Link`).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "http/message.h"
#include "idempotency/key_source.h"
#include "idempotency/store.h"

namespace fg::idempotency {

// Decisions, for floodgate_idempotency_total{route,result}.
enum Result : int {
  kClaimed = 0,    // a miss: first request with this key, forwarded
  kReplayed,       // a hit: stored answer replayed
  kInFlight,       // a hit: 409 while the first is processed
  kKeyReused,      // 422: same key, different request
  kNotReplayable,  // 409: completed but too large to have been stored
  kMissing,        // 400: required and absent
  kInvalid,        // 400: malformed key
  kNoKey,          // no key and not required: forwarded without dedupe
  kBypassed,       // Redis unavailable and on_failure = "open": forwarded without dedupe
  kUnavailable,    // Redis unavailable and on_failure = "closed": 503
  kResultCount
};
const char* result_name(int r);

// The worker's Redis side, as exchanges use it. Owned by the worker; outlives every
// exchange and every callback of one. Loop thread only.
struct Link {
  redis::Client* client = nullptr;  // null without [redis]; replaced when Redis is reopened
  Scripts scripts;
  // Counts a write whose loss would break a promise to a client (the worker closes
  // Redis only once all are answered); call the returned function once, when answered.
  std::function<std::function<void()>()> hold;
  bool up() const { return client != nullptr && client->connected(); }
};

// A route's idempotency settings, as the stage needs them.
struct Rules {
  bool required = false;           // no key: 400
  bool per_client = false;         // the Redis key includes the client key
  bool store_and_forward = false;  // duplicates are acknowledged like the first
  bool fail_open = false;          // Redis down: forward without dedupe
};

// What the request does next.
struct Decision {
  enum class Next {
    kClaim,        // (begin only) claim the key: call claim()
    kForward,      // forward upstream; forward_key() (if any) travels as Idempotency-Key
    kPark,         // enqueue as a ticket
    kAcknowledge,  // store_and_forward duplicate: the route's ack (with `ticket` when known)
    kTicket,       // duplicate of a parked request: answer with `ticket`'s current state
    kReplay,       // replay `stored`
    kRefuse,       // answer status/code/message (+ Retry-After when retry_after_s > 0)
  };
  Next next = Next::kForward;
  int counted = -1;  // the Result to count, -1: none
  int status = 0;
  const char* code = "";
  const char* message = "";
  int64_t retry_after_s = 0;
  bool conflict = false;  // the refusal is a conflict (409/422), not an error
  std::string ticket;     // kAcknowledge, kTicket
  std::string stored;     // kReplay
};

class Exchange {
 public:
  // A new request: forgets everything of the previous one (no Redis call).
  void reset();

  // The body is whole: find the key. kClaim: call prepare() and claim(); anything else
  // is the answer (park: the request becomes a ticket, whose refusals say "queue").
  Decision begin(const Rules& rules, const std::vector<KeySource>& sources, const http::RequestHead& head,
                 std::string_view body, bool park, bool redis_up);
  // Builds the Redis key ("<prefix>idem:{<route>}:[<client>:]<key>", in the route's hash
  // slot) and takes `owner` as this attempt's token. After begin() answered kClaim.
  void prepare(const Rules& rules, std::string_view prefix, std::string_view route, std::string_view client_key,
               std::string owner);
  // Claims the prepared key; `done` gets Redis's answer (pass it to claimed(), or to
  // abandon() when the request is gone).
  void claim(Link& link, const http::RequestHead& head, std::string_view body, uint64_t lease_ms,
             uint64_t deadline_ms, std::function<void(ClaimResult&)> done);
  // Redis's answer to claim() → what to do. A won claim is remembered (key()).
  Decision claimed(ClaimResult& r, const Rules& rules, bool park);
  // Redis was not reachable for this request.
  Decision unavailable(const Rules& rules, bool park) const;
  // The request that claimed `key` as `owner` went away before the answer came: a
  // claim won is given back at once.
  static void abandon(Link& link, const ClaimResult& r, const std::string& key, const std::string& owner);

  // The key as the client sent it (empty: none); it travels upstream.
  const std::string& forward_key() const { return forward_key_; }
  // The claimed Redis key (empty: nothing claimed) and its owner token.
  const std::string& key() const { return key_; }
  const std::string& owner() const { return owner_; }
  // The prepared key while its claim is on its way.
  const std::string& claiming() const { return pending_key_; }
  // The claim now belongs to someone else (a ticket): this exchange forgets it.
  void hand_over() { key_.clear(); }

  // The answer is recorded for replay (true after a won claim on a forwarded request).
  bool capturing() const { return capture_; }
  // Client output is held back until Redis has the record.
  bool holding() const { return hold_; }
  void hold(const char* data, size_t len) { held_.append(data, len); }
  // Stops holding; returns what was held, for the caller to write and then drop.
  std::string_view stop_holding() {
    hold_ = false;
    return held_;
  }
  // Forgets what was held; the buffer keeps its capacity for the next request.
  void drop_held() { held_.clear(); }

  // The upstream answer ended: stores it (a 5xx or an overflowing answer is released
  // or recorded as not replayable), then `after` runs once Redis answered. False when
  // nothing was claimed or Redis is gone (then `after` is not called).
  bool complete(Link& link, int status, std::string_view reason, std::string_view header_lines,
                std::string_view body, bool overflow, uint64_t ttl_ms, std::function<void()> after);
  // Gives the claim back (the upstream failed); `after` runs once Redis answered.
  // False when nothing was claimed or Redis is gone (`after` is not called).
  bool release_then(Link& link, std::function<void()> after);
  // Gives the claim back without waiting; stops capturing and holding.
  void release(Link& link);

 private:
  std::string key_;          // claimed Redis key
  std::string pending_key_;  // prepared, not yet claimed
  std::string owner_;
  std::string forward_key_;
  std::string fingerprint_;     // of the request being claimed
  uint64_t claim_sent_ms_ = 0;  // steady clock, when the claim left
  uint64_t lease_ms_ = 0;
  bool capture_ = false;
  bool hold_ = false;
  std::string held_;
};

}  // namespace fg::idempotency
