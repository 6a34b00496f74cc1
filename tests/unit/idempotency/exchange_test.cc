// The idempotency stage without a socket: what a request does for each key outcome
// and each Redis answer, which result is counted, the Redis key it claims, and the
// answer held back until the record is stored.
#include "idempotency/exchange.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

namespace {

using fg::http::RequestHead;
using fg::idempotency::ClaimResult;
using fg::idempotency::Decision;
using fg::idempotency::Exchange;
using fg::idempotency::KeySource;
using fg::idempotency::Link;
using fg::idempotency::Rules;
using Next = Decision::Next;
using Kind = ClaimResult::Kind;

std::vector<KeySource> header_source() {
  return {KeySource{KeySource::Kind::kHeader, "Idempotency-Key"}};
}

RequestHead post(const std::string& key) {
  RequestHead h;
  h.method = "POST";
  h.target = "/orders";
  if (!key.empty()) h.headers.push_back({"Idempotency-Key", key});
  return h;
}

ClaimResult answer(Kind kind) {
  ClaimResult r;
  r.kind = kind;
  return r;
}

// An exchange whose key "k1" was found and prepared for a claim.
Exchange prepared(const Rules& rules) {
  Exchange x;
  Decision d = x.begin(rules, header_source(), post("k1"), "", false, true);
  REQUIRE(d.next == Next::kClaim);
  x.prepare(rules, "fg:", "orders", "10.0.0.1", "owner1");
  return x;
}

}  // namespace

TEST_CASE("a request without a key is forwarded, or refused when the route requires one") {
  Exchange x;
  Rules rules;
  Decision d = x.begin(rules, header_source(), post(""), "", false, true);
  CHECK(d.next == Next::kForward);
  CHECK(d.counted == fg::idempotency::kNoKey);
  CHECK(x.forward_key().empty());
  CHECK(x.begin(rules, header_source(), post(""), "", true, true).next == Next::kPark);

  rules.required = true;
  d = x.begin(rules, header_source(), post(""), "", false, true);
  CHECK(d.next == Next::kRefuse);
  CHECK(d.status == 400);
  CHECK(std::string(d.code) == "idempotency_key_missing");
  CHECK(d.counted == fg::idempotency::kMissing);
  CHECK_FALSE(d.conflict);
}

TEST_CASE("an invalid key is refused with 400 whatever the route says") {
  Exchange x;
  Decision d = x.begin(Rules{}, header_source(), post(std::string(256, 'a')), "", false, true);
  CHECK(d.next == Next::kRefuse);
  CHECK(d.status == 400);
  CHECK(std::string(d.code) == "bad_idempotency_key");
  CHECK(d.counted == fg::idempotency::kInvalid);
}

TEST_CASE("Redis down: fail open forwards the key, fail closed and parked requests get 503") {
  Exchange x;
  Rules rules;
  Decision d = x.begin(rules, header_source(), post("k1"), "", false, false);
  CHECK(d.next == Next::kRefuse);
  CHECK(d.status == 503);
  CHECK(d.retry_after_s == 1);
  CHECK(std::string(d.message) == "duplicate protection is unavailable; retry shortly");
  CHECK(d.counted == fg::idempotency::kUnavailable);

  d = x.begin(rules, header_source(), post("k1"), "", true, false);
  CHECK(std::string(d.message) == "the queue is unavailable; retry shortly");

  rules.fail_open = true;
  d = x.begin(rules, header_source(), post("k1"), "", false, false);
  CHECK(d.next == Next::kForward);
  CHECK(d.counted == fg::idempotency::kBypassed);
  CHECK(x.forward_key() == "k1");
  CHECK(x.key().empty());
}

TEST_CASE("the Redis key names the route, the client when per_client, and the key") {
  Rules rules;
  Exchange x = prepared(rules);
  CHECK(x.claiming() == "fg:idem:{orders}:k1");
  CHECK(x.owner() == "owner1");
  rules.per_client = true;
  Exchange y = prepared(rules);
  CHECK(y.claiming() == "fg:idem:{orders}:10.0.0.1:k1");
}

TEST_CASE("a won claim forwards, records the answer and holds the client's copy") {
  Rules rules;
  Exchange x = prepared(rules);
  ClaimResult r = answer(Kind::kClaimed);
  Decision d = x.claimed(r, rules, false);
  CHECK(d.next == Next::kForward);
  CHECK(d.counted == fg::idempotency::kClaimed);
  CHECK(x.key() == "fg:idem:{orders}:k1");
  CHECK(x.capturing());
  CHECK(x.holding());
  x.hold("HTTP/1.1 200 OK\r\n", 17);
  CHECK(x.stop_holding() == "HTTP/1.1 200 OK\r\n");
  CHECK_FALSE(x.holding());
  x.drop_held();
  CHECK(x.stop_holding().empty());

  // Parked: the claim goes with the ticket, nothing is captured here.
  Exchange p = prepared(rules);
  r = answer(Kind::kClaimed);
  d = p.claimed(r, rules, true);
  CHECK(d.next == Next::kPark);
  CHECK_FALSE(p.capturing());
  CHECK(p.key() == "fg:idem:{orders}:k1");
  p.hand_over();
  CHECK(p.key().empty());
}

TEST_CASE("each Redis answer to a lost claim becomes its answer") {
  Rules rules;
  Exchange x = prepared(rules);

  ClaimResult r = answer(Kind::kInFlight);
  r.retry_after_ms = 1500;
  Decision d = x.claimed(r, rules, false);
  CHECK(d.status == 409);
  CHECK(std::string(d.code) == "in_flight");
  CHECK(d.retry_after_s == 2);
  CHECK(d.conflict);
  CHECK(x.key().empty());
  r.retry_after_ms = 0;
  CHECK(x.claimed(r, rules, false).retry_after_s == 1);

  r = answer(Kind::kMismatch);
  d = x.claimed(r, rules, false);
  CHECK(d.status == 422);
  CHECK(d.counted == fg::idempotency::kKeyReused);

  r = answer(Kind::kNotStored);
  d = x.claimed(r, rules, false);
  CHECK(d.status == 409);
  CHECK(std::string(d.code) == "not_replayable");
  CHECK(d.counted == fg::idempotency::kNotReplayable);

  r = answer(Kind::kDone);
  r.stored = "200 OK\r\n\r\nbody";
  d = x.claimed(r, rules, false);
  CHECK(d.next == Next::kReplay);
  CHECK(d.stored == "200 OK\r\n\r\nbody");
  CHECK(d.counted == fg::idempotency::kReplayed);

  r = answer(Kind::kTicket);
  r.ticket = "t1";
  d = x.claimed(r, rules, false);
  CHECK(d.next == Next::kTicket);
  CHECK(d.ticket == "t1");
  CHECK(d.counted == fg::idempotency::kInFlight);
  r.same_request = false;
  CHECK(x.claimed(r, rules, false).status == 422);

  r = answer(Kind::kUnavailable);
  CHECK(x.claimed(r, rules, false).status == 503);
  CHECK_FALSE(x.capturing());
}

TEST_CASE("store_and_forward acknowledges every duplicate, even a different copy") {
  Rules rules;
  rules.store_and_forward = true;
  Exchange x = prepared(rules);
  ClaimResult r = answer(Kind::kTicket);
  r.ticket = "t9";
  r.same_request = false;
  Decision d = x.claimed(r, rules, true);
  CHECK(d.next == Next::kAcknowledge);
  CHECK(d.ticket == "t9");
  CHECK(d.counted == fg::idempotency::kReplayed);
  r = answer(Kind::kMismatch);
  d = x.claimed(r, rules, true);
  CHECK(d.next == Next::kAcknowledge);
  CHECK(d.ticket.empty());
  CHECK(d.counted == fg::idempotency::kKeyReused);
  // Redis down is still a 503: the ack promises the callback is held.
  r = answer(Kind::kUnavailable);
  CHECK(x.claimed(r, rules, true).status == 503);
}

TEST_CASE("store_and_forward does not acknowledge a copy while the key is only claimed") {
  // Another copy claimed the key but has no ticket yet (its enqueue may still fail, or
  // its claim may have been written although its gateway saw a timeout): an ack now
  // would promise a callback that nobody holds. 409 with Retry-After: the provider
  // sends it again.
  Rules rules;
  rules.store_and_forward = true;
  for (Kind kind : {Kind::kInFlight, Kind::kMismatch}) {
    Exchange x = prepared(rules);
    ClaimResult r = answer(kind);
    r.claimed_only = true;
    r.retry_after_ms = 2500;
    Decision d = x.claimed(r, rules, true);
    CHECK(d.next == Next::kRefuse);
    CHECK(d.status == 409);
    CHECK(d.code == std::string("in_flight"));
    CHECK(d.retry_after_s == 3);
    CHECK(d.counted == fg::idempotency::kInFlight);
  }
}

TEST_CASE("without a claim or a Redis connection, completion and release do nothing") {
  Link link;  // no client
  Rules rules;
  Exchange x = prepared(rules);
  bool called = false;
  CHECK_FALSE(x.complete(link, 200, "OK", "", "body", false, 1000, [&] { called = true; }));
  CHECK_FALSE(x.release_then(link, [&] { called = true; }));
  ClaimResult r = answer(Kind::kClaimed);
  x.claimed(r, rules, false);
  CHECK_FALSE(x.complete(link, 200, "OK", "", "body", false, 1000, [&] { called = true; }));
  x.release(link);
  CHECK(x.key().empty());
  CHECK_FALSE(x.capturing());
  CHECK_FALSE(x.holding());
  CHECK_FALSE(called);
  x.reset();
  CHECK(x.forward_key().empty());
}

TEST_CASE("result names are the metric labels") {
  CHECK(std::string(fg::idempotency::result_name(fg::idempotency::kClaimed)) == "claimed");
  CHECK(std::string(fg::idempotency::result_name(fg::idempotency::kUnavailable)) == "unavailable");
  CHECK(std::string(fg::idempotency::result_name(99)) == "unknown");
}
