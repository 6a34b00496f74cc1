// The idempotency stage: key → claim → decision → held answer → complete or release.
#include "idempotency/exchange.h"

#include "core/clock.h"

namespace fg::idempotency {
namespace {

// The completion skips the owner check while the lease has at least this much left: the
// key then still holds this attempt's claim unless Redis stalls, with the answer's SET
// unread in its socket, for longer than this margin (docs/operations.md, "Idempotency
// records").
constexpr uint64_t kLeaseMarginMs = 2000;

const char* const kKeyReusedMessage = "this idempotency key was used for a different request";

Decision refuse(int counted, int status, const char* code, const char* message, bool conflict,
                int64_t retry_after_s = 0) {
  Decision d;
  d.next = Decision::Next::kRefuse;
  d.counted = counted;
  d.status = status;
  d.code = code;
  d.message = message;
  d.conflict = conflict;
  d.retry_after_s = retry_after_s;
  return d;
}

Decision go(Decision::Next next, int counted) {
  Decision d;
  d.next = next;
  d.counted = counted;
  return d;
}

}  // namespace

const char* result_name(int r) {
  static const char* kNames[kResultCount] = {"claimed", "replayed",      "in_flight", "key_reused",
                                             "not_replayable", "missing", "invalid", "no_key",
                                             "bypassed", "unavailable"};
  return r >= 0 && r < kResultCount ? kNames[r] : "unknown";
}

void Exchange::reset() {
  key_.clear();
  pending_key_.clear();
  forward_key_.clear();
  capture_ = false;
  hold_ = false;
  held_.clear();
}

Decision Exchange::begin(const Rules& rules, const std::vector<KeySource>& sources, const http::RequestHead& head,
                         std::string_view body, bool park, bool redis_up) {
  std::string key;
  switch (extract_key(sources, head, body, &key)) {
    case Extract::kInvalid:
      return refuse(kInvalid, 400, "bad_idempotency_key",
                    "the idempotency key must be 1-255 bytes without control characters", false);
    case Extract::kAbsent:
      if (rules.required)
        return refuse(kMissing, 400, "idempotency_key_missing", "this route requires an idempotency key", false);
      return go(park ? Decision::Next::kPark : Decision::Next::kForward, kNoKey);
    case Extract::kFound:
      break;
  }
  forward_key_ = std::move(key);
  if (!redis_up) return unavailable(rules, park);
  return go(Decision::Next::kClaim, -1);
}

void Exchange::prepare(const Rules& rules, std::string_view prefix, std::string_view route,
                       std::string_view client_key, std::string owner) {
  // The route's hash tag (queue/queue_store.h Keys): the queue's scripts update the
  // record together with the ticket it was parked as, in one slot.
  pending_key_.assign(prefix);
  pending_key_ += "idem:{";
  pending_key_.append(route);
  pending_key_ += "}:";
  if (rules.per_client) {
    pending_key_.append(client_key);
    pending_key_ += ':';
  }
  pending_key_ += forward_key_;
  owner_ = std::move(owner);
}

void Exchange::claim(Link& link, const http::RequestHead& head, std::string_view body, uint64_t lease_ms,
                     uint64_t deadline_ms, std::function<void(ClaimResult&)> done) {
  fingerprint_ = fingerprint(head.method, head.path(), body);
  claim_sent_ms_ = clock::mono_ms();
  lease_ms_ = lease_ms;
  idempotency::claim(*link.client, link.scripts, pending_key_, fingerprint_, owner_, lease_ms, deadline_ms,
                     std::move(done));
}

Decision Exchange::claimed(ClaimResult& r, const Rules& rules, bool park) {
  using Kind = ClaimResult::Kind;
  key_ = r.kind == Kind::kClaimed ? pending_key_ : std::string();
  // A payment provider repeating a callback is acknowledged whatever its copy looks
  // like (providers often change a timestamp field): it is never delivered twice. But
  // only once a ticket or an answer stands behind the key: while another copy's claim
  // is still being turned into a ticket, that copy may yet fail (Redis refusing or
  // timing out its enqueue) and its claim be left to expire, so this copy is told to
  // come again (the provider retries), never acknowledged on a promise nobody holds.
  if (rules.store_and_forward && r.claimed_only) {
    int64_t secs = (r.retry_after_ms + 999) / 1000;
    return refuse(kInFlight, 409, "in_flight", "a request with this idempotency key is still being processed", true,
                  secs < 1 ? 1 : secs);
  }
  if (rules.store_and_forward && r.kind != Kind::kClaimed && r.kind != Kind::kUnavailable) {
    Decision d = go(Decision::Next::kAcknowledge, r.kind == Kind::kMismatch ? kKeyReused : kReplayed);
    if (r.kind == Kind::kTicket) d.ticket = r.ticket;
    return d;
  }
  switch (r.kind) {
    case Kind::kClaimed:
      if (park) return go(Decision::Next::kPark, kClaimed);
      capture_ = true;
      hold_ = true;
      return go(Decision::Next::kForward, kClaimed);
    case Kind::kTicket: {
      if (!r.same_request) return refuse(kKeyReused, 422, "key_reused", kKeyReusedMessage, true);
      Decision d = go(Decision::Next::kTicket, kInFlight);
      d.ticket = r.ticket;
      return d;
    }
    case Kind::kInFlight: {
      int64_t secs = (r.retry_after_ms + 999) / 1000;
      return refuse(kInFlight, 409, "in_flight", "a request with this idempotency key is still being processed", true,
                    secs < 1 ? 1 : secs);
    }
    case Kind::kMismatch:
      return refuse(kKeyReused, 422, "key_reused", kKeyReusedMessage, true);
    case Kind::kNotStored:
      return refuse(kNotReplayable, 409, "not_replayable",
                    "this idempotency key completed with a response too large to replay", true);
    case Kind::kDone: {
      Decision d = go(Decision::Next::kReplay, kReplayed);
      d.stored = std::move(r.stored);
      return d;
    }
    case Kind::kUnavailable:
      break;
  }
  return unavailable(rules, park);
}

Decision Exchange::unavailable(const Rules& rules, bool park) const {
  // A ticket is only ever promised once Redis holds it.
  if (park) return refuse(kUnavailable, 503, "redis_unavailable", "the queue is unavailable; retry shortly", false, 1);
  if (rules.fail_open) return go(Decision::Next::kForward, kBypassed);
  return refuse(kUnavailable, 503, "redis_unavailable", "duplicate protection is unavailable; retry shortly", false,
                1);
}

void Exchange::abandon(Link& link, const ClaimResult& r, const std::string& key, const std::string& owner) {
  if (r.kind == ClaimResult::Kind::kClaimed && link.client != nullptr)
    idempotency::release(*link.client, link.scripts, key, owner);
}

bool Exchange::complete(Link& link, int status, std::string_view reason, std::string_view header_lines,
                        std::string_view body, bool overflow, uint64_t ttl_ms, std::function<void()> after) {
  if (!capture_ || key_.empty() || link.client == nullptr) return false;
  capture_ = false;
  auto done = [hold = link.hold(), after = std::move(after)] {
    hold();
    after();
  };
  // The client copies the key and the record before it returns and never calls back
  // from inside the call, so both are passed as they are and key_ keeps its capacity.
  if (status >= 500) {
    // A 5xx is not final: release the key so a retry may succeed.
    idempotency::release(*link.client, link.scripts, key_, owner_, std::move(done));
  } else if (clock::mono_ms() - claim_sent_ms_ + kLeaseMarginMs <= lease_ms_) {
    // The lease cannot have run out yet: one plain SET, no script, no read.
    thread_local std::string record;
    answer_record(record, fingerprint_, !overflow, status, reason, header_lines, body);
    idempotency::record_answer(*link.client, key_, record, ttl_ms, std::move(done));
  } else {
    std::string blob = overflow ? std::string() : encode_response(status, reason, header_lines, body);
    idempotency::complete(*link.client, link.scripts, key_, owner_, blob, !overflow, ttl_ms, std::move(done));
  }
  key_.clear();
  return true;
}

bool Exchange::release_then(Link& link, std::function<void()> after) {
  if (key_.empty() || link.client == nullptr) return false;
  std::string key = std::move(key_);
  key_.clear();
  capture_ = false;
  hold_ = false;
  idempotency::release(*link.client, link.scripts, key, owner_, [hold = link.hold(), after = std::move(after)] {
    hold();
    after();
  });
  return true;
}

void Exchange::release(Link& link) {
  capture_ = false;
  hold_ = false;
  if (key_.empty()) return;
  if (link.client != nullptr) idempotency::release(*link.client, link.scripts, key_, owner_, link.hold());
  key_.clear();
}

}  // namespace fg::idempotency
