// Tests for the durable retry schedule and dead letters (SPEC §6, last paragraph):
// RetrySchedule and the validation of its route keys (pure), and the park, promote,
// bury, list, count and re-deliver scripts against a real redis-server, driven through
// the async client. Tickets are made and started with the queue's own enqueue/start, so
// the enq/taken counters are the ones the gateway uses. Every loop ends closed.
#include "queue/dead_letter.h"

#include <catch2/catch.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "queue/queue_store.h"
#include "queue/retry_schedule.h"
#include "tests/support/redis_rig.h"

namespace {

namespace q = fg::queue;
using fg::redis::Failure;
using fg::redis::Reply;

constexpr const char* kRoute = "callbacks";
// Script times (the scripts only compare them); a day after creation is far past
// max_wait, as for a callback retried over hours.
constexpr uint64_t kCreated = 1'800'000'000'000;
constexpr uint64_t kNow = kCreated + 24ULL * 3600 * 1000;
constexpr uint64_t kMaxWait = 60'000;
constexpr uint64_t kTtl = 600'000;

// A fresh redis-server, the loop and one client for one test (tests/support/redis_rig.h),
// with the dead-letter stream's consumer group created.
class Rig : public fg::test::RedisRig {
 public:
  Rig() : RedisRig("dead-letter-test") {
    raw({"XGROUP", "CREATE", keys.stream(kRoute), q::kGroup, "0", "MKSTREAM"});
  }

  int64_t num(std::vector<std::string> argv) {
    Reply r = raw(std::move(argv));
    if (r.type == Reply::Type::kInteger) return r.integer;
    return r.type == Reply::Type::kString ? std::stoll(r.str) : -999;
  }
  std::string field(const std::string& id, const char* name) {
    Reply r = raw({"HGET", keys.ticket(id), name});
    return r.type == Reply::Type::kString ? r.str : "<nil>";
  }
  int64_t depth() {
    return num({"GET", keys.enq(kRoute)}) - (raw({"GET", keys.taken(kRoute)}).type == Reply::Type::kNil
                                                  ? 0
                                                  : num({"GET", keys.taken(kRoute)}));
  }

  // Stores a ticket (optionally with an idempotency record) like the gateway does.
  std::string add(const std::string& idem = "", const std::string& route = kRoute) {
    q::NewTicket t;
    t.id = q::new_ticket_id(route);
    t.route = route;
    t.created_ms = kCreated;
    t.method = "POST";
    t.target = "/pay/notify?o=" + t.id.substr(0, 4);
    t.header_lines = "Content-Type: application/json\r\n";
    t.body = "{\"paid\":true}";
    t.forward_key = t.id;
    if (!idem.empty()) {
      t.idem_key = keys.prefix + "i:" + idem;
      t.idem_owner = "owner-" + idem;
      raw({"SET", t.idem_key, "i" + t.idem_owner + "\nfp\n0", "PX", "30000"});
    }
    auto res = wait_for<q::EnqueueResult>([&](auto cb) {
      q::enqueue(client(), scripts, keys, t, 1000, kTtl, 0, [cb](q::EnqueueResult& r) { cb(r); });
    });
    REQUIRE(res.kind == q::EnqueueResult::Kind::kOk);
    return t.id;
  }

  // The next new stream entry of the route: (entry id, ticket id), or empty.
  std::pair<std::string, std::string> next_entry(const std::string& route = kRoute) {
    Reply r = raw({"XREADGROUP", "GROUP", q::kGroup, "test", "COUNT", "1", "STREAMS", keys.stream(route), ">"});
    if (r.type != Reply::Type::kArray || r.elements.empty()) return {};
    const Reply& entry = r.elements[0].elements[1].elements[0];
    return {entry.elements[0].str, entry.elements[1].elements[1].str};
  }

  // Reads the next entry and starts its delivery; returns the entry id.
  // `now` defaults to just after creation; a day later (kNow) only a ticket that is
  // owed a delivery is still started rather than expired.
  std::string take(const std::string& expect_ticket, int64_t expect_attempts = 1, uint64_t now = kCreated + 1000,
                   int64_t expect_requeued = 0) {
    auto [entry, ticket] = next_entry();
    REQUIRE(ticket == expect_ticket);
    auto d = wait_for<q::Delivery>([&](auto cb) {
      q::start(client(), scripts, keys, kRoute, entry, ticket, now, kMaxWait, [cb](q::Delivery& del) { cb(del); });
    });
    REQUIRE(d.kind == q::Delivery::Kind::kGo);
    CHECK(d.attempts == expect_attempts);
    CHECK(d.requeued_ms == expect_requeued);
    return entry;
  }

  q::MoveResult park(const std::string& entry, const std::string& id, uint64_t due, const char* reason = "timeout",
                     const q::Fence& fence = {}) {
    return wait_for<q::MoveResult>(
        [&](auto cb) { q::park(client(), retry, keys, kRoute, entry, id, reason, kNow, due, cb, fence); });
  }
  q::MoveResult bury(const std::string& entry, const std::string& id, uint64_t now = kNow,
                     const char* reason = "connect", const q::Fence& fence = {}) {
    return wait_for<q::MoveResult>(
        [&](auto cb) { q::bury(client(), retry, keys, kRoute, entry, id, reason, now, cb, fence); });
  }
  // Fire and forget: a PING after it is answered after it ran.
  void count_retry(const std::string& entry, const std::string& id, const std::string& consumer,
                   const q::Fence& fence) {
    q::count_retry(client(), scripts, keys, kRoute, entry, consumer, id, fence);
    raw({"PING"});
  }
  void keep_claimed(const std::string& entry, const std::string& consumer, const q::Fence& fence) {
    q::keep_claimed(client(), scripts, keys, kRoute, entry, consumer, fence);
    raw({"PING"});
  }
  q::Promoted promote(uint64_t now, uint64_t max = 100, const q::Fence& fence = {}) {
    return wait_for<q::Promoted>([&](auto cb) { q::promote(client(), retry, keys, kRoute, now, max, cb, fence); });
  }
  q::DeadPage list(uint64_t offset = 0, uint64_t count = 100) {
    return wait_for<q::DeadPage>(
        [&](auto cb) { q::list_dead(client(), retry, keys, kRoute, offset, count, [cb](q::DeadPage& p) { cb(p); }); });
  }
  std::pair<bool, int64_t> count() {
    return wait_for<std::pair<bool, int64_t>>(
        [&](auto cb) { q::count_dead(client(), keys, kRoute, [cb](bool ok, int64_t n) { cb({ok, n}); }); });
  }
  q::Redelivered redeliver(const std::string& id, const std::string& route = kRoute) {
    return wait_for<q::Redelivered>([&](auto cb) { q::redeliver(client(), retry, keys, route, id, kNow, cb); });
  }
  q::Redelivered redeliver_all(uint64_t max) {
    return wait_for<q::Redelivered>([&](auto cb) { q::redeliver_all(client(), retry, keys, kRoute, kNow, max, cb); });
  }
  q::TicketView poll(const std::string& id) {
    return wait_for<q::TicketView>(
        [&](auto cb) { q::poll(client(), scripts, keys, id, [cb](q::TicketView& v) { cb(v); }); });
  }
  bool expire(const std::string& id) {
    return wait_for<bool>([&](auto cb) { q::expire(client(), scripts, keys, id, kNow, kTtl, cb); });
  }
  q::CancelResult cancel(const std::string& id) {
    return wait_for<q::CancelResult>([&](auto cb) {
      q::cancel(client(), scripts, keys, id, kNow, kTtl, [cb](q::CancelResult r, const std::string&) { cb(r); });
    });
  }
  bool finish_done(const std::string& entry, const std::string& id, const char* state = "done") {
    return wait_for<q::Written>([&](auto cb) {
      q::finish(client(), scripts, keys, kRoute, entry, id, state, "resp", "", kNow, kTtl, true, kTtl, cb);
    }) == q::Written::kOk;
  }

  q::Keys keys{"fgdl:"};
  q::Scripts scripts;
  q::RetryScripts retry;
};

// ---- the schedule (pure) ----

TEST_CASE("RetrySchedule: one delay per failed attempt, then exhausted", "[queue]") {
  q::RetrySchedule s;
  s.delays_ms = {1000, 60000, 3600000};
  s.jitter = q::RetrySchedule::Jitter::kNone;
  CHECK(s.next_delay_ms(1, 0.5) == 1000);
  CHECK(s.next_delay_ms(2, 0.5) == 60000);
  CHECK(s.next_delay_ms(3, 0.5) == 3600000);
  CHECK(s.next_delay_ms(0, 0.5) == 1000);
  CHECK(s.next_delay_ms(9, 0.5) == 3600000);
  CHECK_FALSE(s.exhausted(3));
  CHECK(s.exhausted(4));
  CHECK(s.total_ms() == 3661000);
  q::RetrySchedule empty;
  CHECK(empty.exhausted(1));
  CHECK(empty.next_delay_ms(1, 0.5) == 0);
}

TEST_CASE("RetrySchedule: full and equal jitter stay within their ranges", "[queue]") {
  q::RetrySchedule s;
  s.delays_ms = {10000};
  s.jitter = q::RetrySchedule::Jitter::kFull;
  CHECK(s.next_delay_ms(1, 0.0) == 0);
  CHECK(s.next_delay_ms(1, 0.25) == 2500);
  CHECK(s.next_delay_ms(1, 0.999999) <= 10000);
  CHECK(s.next_delay_ms(1, 7.0) == 10000);   // clamped
  CHECK(s.next_delay_ms(1, -1.0) == 0);      // clamped
  s.jitter = q::RetrySchedule::Jitter::kEqual;
  CHECK(s.next_delay_ms(1, 0.0) == 5000);
  CHECK(s.next_delay_ms(1, 0.5) == 7500);
  CHECK(s.next_delay_ms(1, 1.0) == 10000);
  s.delays_ms = {10001};  // odd: the fixed half rounds up, never below half
  CHECK(s.next_delay_ms(1, 0.0) == 5001);
  CHECK(s.next_delay_ms(1, 1.0) == 10001);
}

TEST_CASE("the store_and_forward default retries for about a day", "[queue]") {
  q::RetrySchedule s = q::default_store_and_forward_schedule();
  REQUIRE(s.delays_ms.size() == 9);
  CHECK(s.delays_ms.front() == 15000);
  CHECK(s.delays_ms.back() == 15ULL * 3600 * 1000);
  CHECK(s.total_ms() == (15 + 60 + 240 + 600 + 600 + 3600 + 7200 + 21600 + 54000) * 1000ULL);
  CHECK(s.jitter == q::RetrySchedule::Jitter::kEqual);
  CHECK(s.exhausted(10));
  CHECK_FALSE(s.exhausted(9));
}

TEST_CASE("retry_schedule validation names each problem", "[queue]") {
  q::RetryScheduleInput in;
  in.route_queued = true;
  in.delays = {"15s", "1m", "4m"};
  CHECK(q::validate_retry_schedule(in).empty());
  auto ok = q::parse_retry_schedule(in);
  REQUIRE(ok.is_ok());
  CHECK(ok->delays_ms == std::vector<uint64_t>{15000, 60000, 240000});
  CHECK(ok->jitter == q::RetrySchedule::Jitter::kEqual);

  in.jitter = "none";
  REQUIRE(q::parse_retry_schedule(in).is_ok());
  CHECK(q::parse_retry_schedule(in)->jitter == q::RetrySchedule::Jitter::kNone);

  in.delays = {"15s", "0s", "8d", "soon"};
  in.jitter = "random";
  auto errors = q::validate_retry_schedule(in);
  REQUIRE(errors.size() == 4);
  CHECK(errors[0] == "retry_schedule[1]: \"0s\" is shorter than the minimum of 100ms");
  CHECK(errors[1] == "retry_schedule[2]: \"8d\" is longer than the maximum of 7d");
  CHECK(errors[2].rfind("retry_schedule[3]: ", 0) == 0);
  CHECK(errors[3] == "retry_jitter: \"random\" is not one of \"none\", \"full\", \"equal\"");
  CHECK_FALSE(q::parse_retry_schedule(in).is_ok());
  CHECK(q::parse_retry_schedule(in).message() == errors[0]);

  q::RetryScheduleInput live;
  live.delays = {"1s"};
  live.route_queued = false;
  REQUIRE(q::validate_retry_schedule(live).size() == 1);
  CHECK(q::validate_retry_schedule(live)[0].rfind("retry_schedule: only queued routes", 0) == 0);

  q::RetryScheduleInput none;
  none.route_queued = true;
  CHECK(q::validate_retry_schedule(none) == std::vector<std::string>{"retry_schedule: must list at least one delay"});

  q::RetryScheduleInput many;
  many.route_queued = true;
  many.delays.assign(65, "1s");
  CHECK(q::validate_retry_schedule(many) ==
        std::vector<std::string>{"retry_schedule: 65 steps, at most 64 are allowed"});
  many.delays.assign(5, "7d");
  CHECK(q::validate_retry_schedule(many) ==
        std::vector<std::string>{"retry_schedule: the delays add up to more than 30d"});
}

// ---- parking and promotion ----

TEST_CASE("park takes a delivery out of the stream; promote queues it again only when due, earliest first",
          "[queue]") {
  Rig rig;
  std::string a = rig.add(), b = rig.add(), c = rig.add();
  CHECK(rig.depth() == 3);
  std::string ea = rig.take(a), eb = rig.take(b), ec = rig.take(c);
  CHECK(rig.depth() == 0);

  CHECK(rig.park(ea, a, kNow + 300) == q::MoveResult::kMoved);
  CHECK(rig.park(eb, b, kNow + 100) == q::MoveResult::kMoved);
  CHECK(rig.park(ec, c, kNow + 200) == q::MoveResult::kMoved);
  // The entries are finished (acknowledged and deleted), the tickets wait in the set.
  CHECK(rig.num({"XLEN", rig.keys.stream(kRoute)}) == 0);
  CHECK(rig.raw({"XPENDING", rig.keys.stream(kRoute), q::kGroup}).elements[0].integer == 0);
  CHECK(rig.num({"ZCARD", q::retry_set_key(rig.keys, kRoute)}) == 3);
  CHECK(rig.field(a, "st") == "retry");
  CHECK(rig.field(a, "due") == std::to_string(kNow + 300));
  CHECK(rig.field(a, "rs") == "timeout");
  CHECK(rig.num({"PTTL", rig.keys.ticket(a)}) == -1);  // owed: never expires while parked
  CHECK(rig.depth() == 0);

  // Nothing is due yet: nothing is delivered.
  auto p = rig.promote(kNow + 50);
  REQUIRE(p.ok);
  CHECK(p.moved == 0);
  CHECK(p.next_due_ms == static_cast<int64_t>(kNow + 100));
  CHECK(rig.next_entry().first.empty());

  // b and c are due, in due order; a stays.
  p = rig.promote(kNow + 250);
  REQUIRE(p.ok);
  CHECK(p.moved == 2);
  CHECK(p.next_due_ms == static_cast<int64_t>(kNow + 300));
  CHECK(rig.depth() == 2);
  CHECK(rig.num({"XLEN", rig.keys.stream(kRoute)}) == 2);
  CHECK(rig.field(b, "st") == "queued");
  CHECK(rig.field(b, "seq") == "4");  // new sequences after the three enqueues
  CHECK(rig.field(c, "seq") == "5");
  CHECK(rig.field(b, "due") == "<nil>");
  // Positions from the counters: b first, c behind it.
  auto vb = rig.poll(b), vc = rig.poll(c);
  CHECK(vb.kind == q::TicketView::Kind::kQueued);
  CHECK(vb.seq - vb.taken - 1 == 0);
  CHECK(vc.seq - vc.taken - 1 == 1);

  CHECK(rig.take(b, 2, kNow, kNow + 250) != "");
  CHECK(rig.take(c, 2, kNow, kNow + 250) != "");
  CHECK(rig.depth() == 0);

  p = rig.promote(kNow + 300, 1);
  REQUIRE(p.ok);
  CHECK(p.moved == 1);
  CHECK(p.next_due_ms == -1);
  CHECK(rig.depth() == 1);
  CHECK(rig.take(a, 2, kNow, kNow + 300) != "");
  CHECK(rig.depth() == 0);
  CHECK(rig.num({"ZCARD", q::retry_set_key(rig.keys, kRoute)}) == 0);
  CHECK(rig.finish());
}

TEST_CASE("promote moves at most `max` tickets per call", "[queue]") {
  Rig rig;
  std::vector<std::string> ids;
  for (int i = 0; i < 5; i++) ids.push_back(rig.add());
  for (size_t i = 0; i < ids.size(); i++) REQUIRE(rig.park(rig.take(ids[i]), ids[i], kNow + i) == q::MoveResult::kMoved);
  auto p = rig.promote(kNow + 10, 2);
  CHECK(p.moved == 2);
  CHECK(p.next_due_ms == static_cast<int64_t>(kNow + 2));
  CHECK(rig.next_entry().second == ids[0]);
  CHECK(rig.next_entry().second == ids[1]);
  CHECK(rig.next_entry().second.empty());
  CHECK(rig.promote(kNow + 10, 10).moved == 3);
  CHECK(rig.finish());
}

TEST_CASE("a parked ticket polls like one in processing, with its state, due time and reason", "[queue]") {
  Rig rig;
  std::string id = rig.add();
  std::string entry = rig.take(id);
  REQUIRE(rig.park(entry, id, kNow + 15000, "upstream_status_503") == q::MoveResult::kMoved);
  auto v = rig.poll(id);
  CHECK(v.kind == q::TicketView::Kind::kProcessing);
  CHECK(v.state == "retry");
  CHECK(v.due_ms == static_cast<int64_t>(kNow + 15000));
  CHECK(v.reason == "upstream_status_503");
  CHECK(v.attempts == 1);
  CHECK(v.route == kRoute);
  CHECK(v.requeued_ms == 0);

  // Back in the queue, a day after it was created: it is owed a delivery, so neither
  // max_wait (at start or lazily at a poll) nor a cancel applies to it any more.
  REQUIRE(rig.promote(kNow + 15000).moved == 1);
  v = rig.poll(id);
  CHECK(v.kind == q::TicketView::Kind::kQueued);
  CHECK(v.state == "queued");
  CHECK(v.requeued_ms == static_cast<int64_t>(kNow + 15000));
  CHECK(v.due_ms == 0);
  CHECK_FALSE(rig.expire(id));
  CHECK(rig.cancel(id) == q::CancelResult::kTooLate);
  CHECK(rig.field(id, "st") == "queued");
  CHECK(rig.take(id, 2, kNow, kNow + 15000) != "");
  CHECK(rig.finish());
}

// ---- dead letters ----

TEST_CASE("an exhausted ticket becomes a dead letter: kept without expiry, body and idempotency record too",
          "[queue]") {
  Rig rig;
  std::string id = rig.add("k1");
  std::string idem = rig.keys.prefix + "i:k1";
  std::string entry = rig.take(id);
  REQUIRE(rig.bury(entry, id) == q::MoveResult::kMoved);
  CHECK(rig.field(id, "st") == "dead");
  CHECK(rig.field(id, "rs") == "connect");
  CHECK(rig.field(id, "b") == "{\"paid\":true}");
  CHECK(rig.num({"PTTL", rig.keys.ticket(id)}) == -1);
  CHECK(rig.num({"XLEN", rig.keys.stream(kRoute)}) == 0);
  CHECK(rig.raw({"XPENDING", rig.keys.stream(kRoute), q::kGroup}).elements[0].integer == 0);
  // A repeated callback with the same key still finds this ticket (and is not queued
  // a second time), however long the ticket stays dead.
  CHECK(rig.raw({"GET", idem}).str == "towner-k1\nfp\n" + id);  // parked as the ticket
  CHECK(rig.num({"PTTL", idem}) == -1);
  CHECK(rig.field(id, "ik") == idem);

  auto v = rig.poll(id);
  CHECK(v.kind == q::TicketView::Kind::kProcessing);
  CHECK(v.state == "dead");

  auto n = rig.count();
  CHECK(n.first);
  CHECK(n.second == 1);
  auto page = rig.list();
  REQUIRE(page.ok);
  CHECK(page.total == 1);
  REQUIRE(page.items.size() == 1);
  CHECK(page.items[0].id == id);
  CHECK(page.items[0].created_ms == static_cast<int64_t>(kCreated));
  CHECK(page.items[0].dead_ms == static_cast<int64_t>(kNow));
  CHECK(page.items[0].attempts == 1);
  CHECK(page.items[0].reason == "connect");
  CHECK(page.items[0].method == "POST");
  CHECK(page.items[0].target == "/pay/notify?o=" + id.substr(0, 4));
  CHECK(rig.finish());
}

TEST_CASE("a parked ticket keeps its idempotency record until it is finished", "[queue]") {
  Rig rig;
  std::string id = rig.add("k2");
  std::string idem = rig.keys.prefix + "i:k2";
  REQUIRE(rig.park(rig.take(id), id, kNow + 1) == q::MoveResult::kMoved);
  CHECK(rig.num({"PTTL", idem}) == -1);
  CHECK(rig.raw({"GET", idem}).str == "towner-k2\nfp\n" + id);  // parked as the ticket
  REQUIRE(rig.promote(kNow + 1).moved == 1);
  std::string entry = rig.take(id, 2, kNow, kNow + 1);
  REQUIRE(rig.finish_done(entry, id));
  // finish() stores the answer and gives both their normal lifetime again.
  CHECK(rig.raw({"GET", idem}).str.substr(0, 4) == "dfp\n");
  CHECK(rig.num({"PTTL", idem}) > 0);
  CHECK(rig.num({"PTTL", rig.keys.ticket(id)}) > 0);
  CHECK(rig.finish());
}

TEST_CASE("dead letters are listed oldest first, page by page", "[queue]") {
  Rig rig;
  std::vector<std::string> ids;
  for (int i = 0; i < 3; i++) ids.push_back(rig.add());
  for (size_t i = 0; i < ids.size(); i++) REQUIRE(rig.bury(rig.take(ids[i]), ids[i], kNow + 10 - i) == q::MoveResult::kMoved);
  auto page = rig.list(1, 1);
  REQUIRE(page.ok);
  CHECK(page.total == 3);
  REQUIRE(page.items.size() == 1);
  CHECK(page.items[0].id == ids[1]);
  page = rig.list(0, 10);
  REQUIRE(page.items.size() == 3);
  CHECK(page.items[0].id == ids[2]);
  CHECK(page.items[2].id == ids[0]);
  page = rig.list(3, 10);
  CHECK(page.ok);
  CHECK(page.total == 3);
  CHECK(page.items.empty());
  CHECK(rig.finish());
}

TEST_CASE("redeliver queues a dead letter again once; a second call is a no-op", "[queue]") {
  Rig rig;
  std::string id = rig.add("k3");
  REQUIRE(rig.bury(rig.take(id), id) == q::MoveResult::kMoved);
  CHECK(rig.depth() == 0);

  auto r = rig.redeliver(id);
  REQUIRE(r.ok);
  CHECK(r.moved == 1);
  CHECK(r.remaining == 0);
  CHECK(rig.field(id, "st") == "queued");
  CHECK(rig.field(id, "a") == "0");
  CHECK(rig.field(id, "rd") == "1");
  CHECK(rig.field(id, "seq") == "2");
  CHECK(rig.depth() == 1);
  CHECK(rig.count().second == 0);
  CHECK(rig.raw({"GET", rig.keys.prefix + "i:k3"}).str == "towner-k3\nfp\n" + id);  // still parked as the ticket

  r = rig.redeliver(id);
  REQUIRE(r.ok);
  CHECK(r.moved == 0);
  CHECK(rig.depth() == 1);
  CHECK(rig.num({"XLEN", rig.keys.stream(kRoute)}) == 1);
  CHECK(rig.field(id, "rd") == "1");

  // The attempts start again from 1, and max_wait does not expire it.
  CHECK(rig.take(id, 1, kNow, kNow) != "");
  CHECK(rig.depth() == 0);
  CHECK(rig.finish());
}

TEST_CASE("redeliver_all moves a route's dead letters in bounded batches; other routes' ids move nothing",
          "[queue]") {
  Rig rig;
  std::vector<std::string> ids;
  for (int i = 0; i < 3; i++) ids.push_back(rig.add());
  for (auto& id : ids) REQUIRE(rig.bury(rig.take(id), id) == q::MoveResult::kMoved);
  CHECK(rig.redeliver(ids[0], "other").moved == 0);
  CHECK(rig.field(ids[0], "st") == "dead");

  auto r = rig.redeliver_all(2);
  REQUIRE(r.ok);
  CHECK(r.moved == 2);
  CHECK(r.remaining == 1);
  r = rig.redeliver_all(2);
  CHECK(r.moved == 1);
  CHECK(r.remaining == 0);
  r = rig.redeliver_all(2);
  REQUIRE(r.ok);
  CHECK(r.moved == 0);
  CHECK(rig.depth() == 3);
  for (auto& id : ids) CHECK(rig.field(id, "st") == "queued");
  CHECK(rig.finish());
}

// ---- fencing (one dispatcher per route in the cluster) ----

// The route's fence (the key of its dispatch lease, in the route's hash slot) set to
// `current`; the deposed leader holds current - 1.
struct Leaders {
  Leaders(Rig& rig, uint64_t current) : old_leader{fence_key, current - 1}, new_leader{fence_key, current} {
    rig.raw({"SET", fence_key, std::to_string(current)});
  }
  std::string fence_key = "fg:leader:{" + std::string(kRoute) + "}:dispatch:fence";
  q::Fence old_leader, new_leader;
};

TEST_CASE("a deposed dispatcher's fenced park and bury are refused; the leader's go through", "[queue]") {
  Rig rig;
  Leaders leaders(rig, 5);
  const std::string& fence_key = leaders.fence_key;
  const q::Fence& old_leader = leaders.old_leader;
  const q::Fence& new_leader = leaders.new_leader;
  std::string id = rig.add();
  std::string entry = rig.take(id);
  CHECK(rig.park(entry, id, kNow + 5, "timeout", old_leader) == q::MoveResult::kFenced);
  CHECK(rig.bury(entry, id, kNow, "connect", old_leader) == q::MoveResult::kFenced);
  // Nothing changed: still processing, entry pending, both sets empty.
  CHECK(rig.field(id, "st") == "processing");
  CHECK(rig.raw({"XPENDING", rig.keys.stream(kRoute), q::kGroup}).elements[0].integer == 1);
  CHECK(rig.num({"ZCARD", q::retry_set_key(rig.keys, kRoute)}) == 0);
  CHECK(rig.count().second == 0);
  CHECK(rig.park(entry, id, kNow + 5, "timeout", new_leader) == q::MoveResult::kMoved);
  CHECK(rig.field(id, "st") == "retry");
  CHECK(rig.raw({"GET", fence_key}).str == "5");
  // A newer token raises the fence.
  std::string id2 = rig.add();
  std::string entry2 = rig.take(id2);
  CHECK(rig.bury(entry2, id2, kNow, "connect", q::Fence{fence_key, 6}) == q::MoveResult::kMoved);
  CHECK(rig.raw({"GET", fence_key}).str == "6");
  CHECK(rig.count().second == 1);
}

TEST_CASE("a deposed dispatcher's fenced promote, retry count and claim are refused; the leader's go through",
          "[queue]") {
  Rig rig;
  Leaders leaders(rig, 8);
  std::string id = rig.add();
  std::string entry = rig.take(id);
  REQUIRE(rig.field(id, "a") == "1");
  auto count_retry = [&](const q::Fence& fence) { rig.count_retry(entry, id, "other-consumer", fence); };
  auto owner = [&] {
    Reply p = rig.raw({"XPENDING", rig.keys.stream(kRoute), q::kGroup, "-", "+", "10"});
    REQUIRE(p.elements.size() == 1);
    return p.elements[0].elements[1].str;
  };
  std::string first_owner = owner();
  count_retry(leaders.old_leader);
  CHECK(rig.field(id, "a") == "1");
  CHECK(owner() == first_owner);
  count_retry(leaders.new_leader);
  CHECK(rig.field(id, "a") == "2");
  CHECK(owner() == "other-consumer");
  // Unfenced (a single dispatcher without a lease) as before.
  count_retry({});
  CHECK(rig.field(id, "a") == "3");
  // Keeping the entry claimed: the deposed leader cannot take it back.
  rig.keep_claimed(entry, "deposed", leaders.old_leader);
  CHECK(owner() == "other-consumer");
  rig.keep_claimed(entry, "leader", leaders.new_leader);
  CHECK(owner() == "leader");
  rig.keep_claimed(entry, "single", {});
  CHECK(owner() == "single");
  CHECK(rig.field(id, "a") == "3");

  REQUIRE(rig.park(entry, id, kNow + 5, "timeout", leaders.new_leader) == q::MoveResult::kMoved);
  q::Promoted p = rig.promote(kNow + 10, 100, leaders.old_leader);
  CHECK_FALSE(p.ok);
  CHECK(p.fenced);
  CHECK(rig.field(id, "st") == "retry");
  CHECK(rig.num({"ZCARD", q::retry_set_key(rig.keys, kRoute)}) == 1);
  p = rig.promote(kNow + 10, 100, leaders.new_leader);
  CHECK(p.ok);
  CHECK_FALSE(p.fenced);
  CHECK(p.moved == 1);
  CHECK(rig.field(id, "st") == "queued");
  CHECK(rig.num({"ZCARD", q::retry_set_key(rig.keys, kRoute)}) == 0);
  CHECK(rig.raw({"GET", leaders.fence_key}).str == "8");
}

// ---- wrong states ----

TEST_CASE("park and bury never undo a final state, a parked ticket or a taken-over delivery", "[queue]") {
  Rig rig;
  SECTION("a late park or bury of a ticket already done") {
    std::string id = rig.add();
    std::string entry = rig.take(id);
    REQUIRE(rig.finish_done(entry, id));
    CHECK(rig.park(entry, id, kNow + 5) == q::MoveResult::kLate);
    CHECK(rig.bury(entry, id) == q::MoveResult::kLate);
    CHECK(rig.field(id, "st") == "done");
    CHECK(rig.num({"PTTL", rig.keys.ticket(id)}) > 0);
    CHECK(rig.num({"ZCARD", q::retry_set_key(rig.keys, kRoute)}) == 0);
    CHECK(rig.count().second == 0);
  }
  SECTION("parking twice keeps the first") {
    std::string id = rig.add();
    std::string entry = rig.take(id);
    REQUIRE(rig.park(entry, id, kNow + 5) == q::MoveResult::kMoved);
    CHECK(rig.park(entry, id, kNow + 99) == q::MoveResult::kLate);
    CHECK(rig.bury(entry, id) == q::MoveResult::kLate);
    CHECK(rig.field(id, "st") == "retry");
    CHECK(rig.num({"ZSCORE", q::retry_set_key(rig.keys, kRoute), id}) == static_cast<int64_t>(kNow + 5));
  }
  SECTION("a delivery whose entry was taken over and finished elsewhere") {
    std::string id = rig.add();
    std::string entry = rig.take(id);
    // Another consumer reclaimed the entry, parked the ticket, it came back and is
    // being delivered again under a new entry: the old delivery's late word is ignored.
    REQUIRE(rig.park(entry, id, kNow) == q::MoveResult::kMoved);
    REQUIRE(rig.promote(kNow).moved == 1);
    std::string again = rig.take(id, 2, kNow, kNow);
    CHECK(rig.park(entry, id, kNow + 7) == q::MoveResult::kLate);
    CHECK(rig.bury(entry, id) == q::MoveResult::kLate);
    CHECK(rig.field(id, "st") == "processing");
    CHECK(rig.raw({"XPENDING", rig.keys.stream(kRoute), q::kGroup}).elements[0].integer == 1);
    CHECK(rig.park(again, id, kNow + 7) == q::MoveResult::kMoved);
  }
  SECTION("a late finish: a failure never gives up a parked or dead ticket, the shop's answer ends it") {
    std::string p = rig.add(), d = rig.add();
    std::string ep = rig.take(p), ed = rig.take(d);
    REQUIRE(rig.park(ep, p, kNow + 5) == q::MoveResult::kMoved);
    REQUIRE(rig.bury(ed, d) == q::MoveResult::kMoved);
    REQUIRE(rig.finish_done(ep, p, "failed"));
    REQUIRE(rig.finish_done(ed, d, "failed"));
    CHECK(rig.field(p, "st") == "retry");
    CHECK(rig.field(d, "st") == "dead");
    CHECK(rig.num({"PTTL", rig.keys.ticket(d)}) == -1);
    REQUIRE(rig.finish_done(ep, p));
    REQUIRE(rig.finish_done(ed, d));
    CHECK(rig.field(p, "st") == "done");
    CHECK(rig.field(d, "st") == "done");
    CHECK(rig.num({"ZCARD", q::retry_set_key(rig.keys, kRoute)}) == 0);
    CHECK(rig.count().second == 0);
    CHECK(rig.list().total == 0);
  }
  SECTION("an unknown ticket") {
    std::string id = rig.add();
    std::string entry = rig.take(id);
    rig.raw({"DEL", rig.keys.ticket(id)});
    CHECK(rig.park(entry, id, kNow) == q::MoveResult::kUnknown);
    CHECK(rig.num({"EXISTS", rig.keys.ticket(id)}) == 0);
    CHECK(rig.num({"XLEN", rig.keys.stream(kRoute)}) == 0);
    CHECK(rig.num({"ZCARD", q::retry_set_key(rig.keys, kRoute)}) == 0);
  }
  CHECK(rig.finish());
}

TEST_CASE("promote and redeliver skip members whose ticket moved on", "[queue]") {
  Rig rig;
  std::string done = rig.add();
  std::string entry = rig.take(done);
  REQUIRE(rig.finish_done(entry, done));
  std::string parked = rig.add();
  REQUIRE(rig.park(rig.take(parked), parked, kNow) == q::MoveResult::kMoved);
  // Stray members (a done ticket; a parked one in the dead-letter set) move nothing.
  rig.raw({"ZADD", q::retry_set_key(rig.keys, kRoute), std::to_string(kNow), done});
  rig.raw({"ZADD", q::dead_set_key(rig.keys, kRoute), std::to_string(kNow), done});
  rig.raw({"ZADD", q::dead_set_key(rig.keys, kRoute), std::to_string(kNow), parked});
  CHECK(rig.redeliver(done).moved == 0);
  CHECK(rig.redeliver(parked).moved == 0);
  CHECK(rig.field(parked, "st") == "retry");
  auto p = rig.promote(kNow);
  CHECK(p.moved == 1);
  CHECK(rig.field(done, "st") == "done");
  CHECK(rig.field(parked, "st") == "queued");
  CHECK(rig.depth() == 1);
  CHECK(rig.num({"ZCARD", q::retry_set_key(rig.keys, kRoute)}) == 0);
  CHECK(rig.finish());
}

// ---- Redis refusing writes ----

TEST_CASE("under maxmemory every write comes back as a failure and changes nothing", "[queue]") {
  Rig rig;
  std::string id = rig.add("k4");
  std::string entry = rig.take(id);
  std::string dead = rig.add();
  REQUIRE(rig.bury(rig.take(dead), dead) == q::MoveResult::kMoved);
  std::string parked = rig.add();
  REQUIRE(rig.park(rig.take(parked), parked, kNow) == q::MoveResult::kMoved);

  REQUIRE(rig.raw({"CONFIG", "SET", "maxmemory", "1"}).type == Reply::Type::kStatus);
  CHECK(rig.park(entry, id, kNow + 5) == q::MoveResult::kUnavailable);
  CHECK(rig.bury(entry, id) == q::MoveResult::kUnavailable);
  CHECK_FALSE(rig.promote(kNow).ok);
  CHECK_FALSE(rig.redeliver(dead).ok);
  CHECK_FALSE(rig.redeliver_all(10).ok);
  // Reading still works: an operator can look at the dead letters during the incident.
  auto page = rig.list();
  CHECK(page.ok);
  CHECK(page.total == 1);
  CHECK(rig.count() == std::make_pair(true, int64_t{1}));
  REQUIRE(rig.raw({"CONFIG", "SET", "maxmemory", "0"}).type == Reply::Type::kStatus);

  CHECK(rig.field(id, "st") == "processing");
  CHECK(rig.num({"PTTL", rig.keys.ticket(id)}) > 0);
  CHECK(rig.raw({"XPENDING", rig.keys.stream(kRoute), q::kGroup}).elements[0].integer == 1);
  CHECK(rig.field(dead, "st") == "dead");
  CHECK(rig.field(parked, "st") == "retry");
  CHECK(rig.depth() == 0);
  // Once Redis accepts writes again the same calls succeed.
  CHECK(rig.park(entry, id, kNow + 5) == q::MoveResult::kMoved);
  CHECK(rig.promote(kNow).moved == 1);
  CHECK(rig.redeliver(dead).moved == 1);
  CHECK(rig.finish());
}

}  // namespace
