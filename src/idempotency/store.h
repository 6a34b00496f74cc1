// Idempotency records in Redis: one string per key holding the claim (state, owner
// token, request fingerprint) and, once answered, the stored response (layout in
// store.cc). Each operation is one round trip; a claim is atomic.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "redis/redis_client.h"

namespace fg::idempotency {

struct ClaimResult {
  enum class Kind {
    kClaimed,      // the key is ours: forward the request
    kInFlight,     // another request with this key is being processed
    kMismatch,     // the key was used with a different request (fingerprint)
    kDone,         // completed before: `stored` holds the response to replay
    kNotStored,    // completed, but the response was too large to keep
    kTicket,       // the first request with this key is parked as ticket `ticket`
    kUnavailable,  // Redis did not answer (down, timeout): apply redis.on_failure
  };
  Kind kind = Kind::kUnavailable;
  int64_t retry_after_ms = 0;  // kInFlight: remaining lease
  std::string stored;          // kDone: serialized response (see encode_response)
  std::string ticket;          // kTicket
  bool same_request = true;    // kTicket: the fingerprints match
  // kInFlight, kMismatch: the record is another attempt's claim, not yet a ticket or an
  // answer (nothing durable stands behind the key yet).
  bool claimed_only = false;
};

// The Lua scripts, one set per worker (a Script caches its SHA per connection owner).
struct Scripts {
  Scripts();
  redis::Script claim;
  redis::Script complete;
  redis::Script release;
};

// Claims `key` for a request with `fingerprint`; `owner` is a random token naming
// this attempt; the claim expires after `lease_ms` unless completed or released.
// `deadline_ms` (wall clock): a claim that reaches Redis later than this (it was
// stuck behind a stall and the gateway already answered 503) does nothing.
void claim(redis::Client& client, Scripts& scripts, const std::string& key, const std::string& fingerprint,
           const std::string& owner, uint64_t lease_ms, uint64_t deadline_ms,
           std::function<void(ClaimResult&)> done);

// Stores the answer of the owning attempt and keeps it for `ttl_ms`. `response` empty
// and `stored` false: the answer was too large and is recorded as not replayable.
// Completion is best effort: if Redis fails here, the claim simply expires.
// A script: it checks that the key is still this attempt's (used once the lease may
// have run out; record_answer() is the common case).
void complete(redis::Client& client, Scripts& scripts, const std::string& key, const std::string& owner,
              const std::string& response, bool stored, uint64_t ttl_ms, std::function<void()> done = nullptr);

// The same answer written with one native SET, without reading the key first: for an
// attempt whose lease certainly still runs (the caller's clock says so, with a margin),
// so the key can only hold this attempt's own claim. `record` is built by
// answer_record(). A key that expired meanwhile is written again, which is what a
// retry needs (it finds the answer instead of forwarding once more).
void record_answer(redis::Client& client, const std::string& key, std::string_view record, uint64_t ttl_ms,
                   std::function<void()> done = nullptr);
// "d<fingerprint>\n<response>" (stored) or "u<fingerprint>" (too large to keep), the
// layout described in store.cc, built in `out` (replacing what it held).
void answer_record(std::string& out, std::string_view fingerprint, bool stored, int status,
                   std::string_view reason, std::string_view header_lines, std::string_view body);

// Drops the owning attempt's claim (5xx answers, upstream failures, aborted requests),
// so that a retry may proceed.
void release(redis::Client& client, Scripts& scripts, const std::string& key, const std::string& owner,
             std::function<void()> done = nullptr);

// Serialized response: "<status> <reason>\r\n" + header lines + "\r\n" + body.
std::string encode_response(int status, std::string_view reason, std::string_view header_lines,
                            std::string_view body);
struct StoredResponse {
  int status = 0;
  std::string_view reason;
  std::string_view header_lines;  // "Name: value\r\n" lines
  std::string_view body;
};
bool decode_response(std::string_view blob, StoredResponse* out);

}  // namespace fg::idempotency
