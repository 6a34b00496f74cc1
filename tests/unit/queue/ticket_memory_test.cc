// The worker's ticket memory without Redis: what it keeps, what a published change
// drops, how positions follow the route's published progress, races between a read
// and a change, the lost channel, expiry and the size bounds.
#include "queue/ticket_memory.h"

#include <catch2/catch.hpp>

#include <string>

#include "queue/ticket_service.h"

namespace {

using fg::queue::TicketMemory;
using fg::queue::TicketView;
using K = TicketView::Kind;

TicketView queued(std::string route, int64_t seq, int64_t taken) {
  TicketView v;
  v.kind = K::kQueued;
  v.state = "queued";
  v.route = std::move(route);
  v.seq = seq;
  v.taken = taken;
  v.created_ms = 1000;
  return v;
}

TicketView done(std::string response) {
  TicketView v;
  v.kind = K::kDone;
  v.state = "done";
  v.route = "orders";
  v.response = std::move(response);
  v.attempts = 1;
  return v;
}

// A read of `id` answered with `v` (nothing published in between).
void read(TicketMemory& m, const std::string& id, const TicketView& v, int64_t ttl_ms, uint64_t now_ms) {
  m.begin_read(id);
  m.end_read(id, v, ttl_ms, now_ms);
}

}  // namespace

TEST_CASE("a ticket read once is answered from memory until its state changes", "[queue]") {
  TicketMemory m;
  m.set_live(true);
  TicketView out;
  CHECK_FALSE(m.find("t1", 0, &out));  // never seen: read Redis
  read(m, "t1", queued("orders", 10, 4), 60000, 100);
  REQUIRE(m.find("t1", 200, &out));
  CHECK(out.kind == K::kQueued);
  CHECK(fg::queue::position(out) == 5);
  // Another ticket's change leaves it alone; its own change drops it.
  m.changed("t2");
  CHECK(m.find("t1", 200, &out));
  m.changed("t1");
  CHECK_FALSE(m.find("t1", 200, &out));
  CHECK(m.size() == 0);
}

TEST_CASE("positions follow the route's published progress without a read", "[queue]") {
  TicketMemory m;
  m.set_live(true);
  read(m, "t1", queued("orders", 10, 4), 60000, 0);
  read(m, "t9", queued("other", 3, 0), 60000, 0);
  TicketView out;
  // Tickets ahead of t1 are dispatched or cancelled: each change carries the counter.
  m.changed("a1 orders 5");
  m.changed("a2 orders 7");
  REQUIRE(m.find("t1", 1, &out));
  CHECK(out.taken == 7);
  CHECK(fg::queue::position(out) == 2);
  // Messages of another route move only that route; an older value never moves back.
  m.changed("a3 orders 6");
  m.changed("b1 other 1");
  REQUIRE(m.find("t1", 1, &out));
  CHECK(fg::queue::position(out) == 2);
  REQUIRE(m.find("t9", 1, &out));
  CHECK(fg::queue::position(out) == 1);
  CHECK(m.taken("orders") == 7);
  // A counter read later than the messages wins too.
  read(m, "t2", queued("orders", 20, 12), 60000, 2);
  REQUIRE(m.find("t2", 2, &out));
  CHECK(fg::queue::position(out) == 7);
  // Malformed progress is ignored (the ticket part still counts as a change).
  m.changed("t2 orders x12");
  CHECK(m.taken("orders") == 7);
  CHECK_FALSE(m.find("t2", 2, &out));
}

TEST_CASE("a change published while a read is in flight keeps that read out of memory", "[queue]") {
  TicketMemory m;
  m.set_live(true);
  TicketView out;
  m.begin_read("t1");
  m.changed("t1 orders 3");  // e.g. cancelled after Redis answered, before the answer arrived
  // The read was overtaken: its caller must not wait on it (the notification passed).
  CHECK(m.end_read("t1", queued("orders", 4, 2), 60000, 0));
  CHECK_FALSE(m.find("t1", 0, &out));
  // Two reads at once: a change during either keeps both out.
  m.begin_read("t1");
  m.begin_read("t1");
  CHECK_FALSE(m.end_read("t1", queued("orders", 4, 3), 60000, 0));
  CHECK(m.find("t1", 0, &out));
  m.changed("t1");
  CHECK(m.end_read("t1", queued("orders", 4, 3), 60000, 0));
  CHECK_FALSE(m.find("t1", 0, &out));
  // A change of another ticket does not overtake this read.
  m.begin_read("t2");
  m.changed("t3 orders 3");
  CHECK_FALSE(m.end_read("t2", queued("orders", 4, 3), 60000, 0));
  CHECK(m.find("t2", 0, &out));
  m.forget("t2");
  // A read without begin_read is not trusted.
  m.end_read("t5", queued("orders", 9, 3), 60000, 0);
  CHECK_FALSE(m.find("t5", 0, &out));
  // Unknown and unavailable answers are never kept.
  TicketView unknown;
  unknown.kind = K::kUnknown;
  read(m, "t6", unknown, -2, 0);
  TicketView down;
  read(m, "t7", down, -1, 0);
  CHECK(m.size() == 0);
}

TEST_CASE("without the change channel nothing is answered or kept", "[queue]") {
  TicketMemory m;
  TicketView out;
  read(m, "t1", queued("orders", 4, 2), 60000, 0);  // not live yet
  CHECK_FALSE(m.find("t1", 0, &out));
  m.set_live(true);
  read(m, "t1", queued("orders", 4, 2), 60000, 0);
  m.changed("x orders 3");
  CHECK(m.find("t1", 0, &out));
  // Lost: everything is forgotten, progress too, and a read in flight is not kept.
  m.begin_read("t2");
  m.set_live(false);
  CHECK_FALSE(m.find("t1", 0, &out));
  m.set_live(true);
  m.end_read("t2", queued("orders", 8, 2), 60000, 0);
  CHECK_FALSE(m.find("t2", 0, &out));
  CHECK(m.size() == 0);
  CHECK(m.taken("orders") == 0);
}

TEST_CASE("a waiting ticket is read again after kMaxAgeMs; a final one lives as long as its hash", "[queue]") {
  TicketMemory m;
  m.set_live(true);
  TicketView out;
  read(m, "q", queued("orders", 4, 2), 600000, 1000);
  CHECK(m.find("q", 1000 + TicketMemory::kMaxAgeMs - 1, &out));
  CHECK_FALSE(m.find("q", 1000 + TicketMemory::kMaxAgeMs, &out));
  std::string stored = "HTTP answer bytes\r\n\0 and more";
  read(m, "d", done(stored), 30000, 1000);
  REQUIRE(m.find("d", 30999, &out));
  CHECK(out.response == stored);  // byte for byte what Redis held
  CHECK_FALSE(m.find("d", 31000, &out));  // its hash expired in Redis: 404 from there
  // A final state with no remaining lifetime is not kept.
  read(m, "d0", done("x"), 0, 1000);
  CHECK_FALSE(m.find("d0", 1000, &out));
  // A lazy expiry drops the ticket at once.
  read(m, "q2", queued("orders", 5, 2), 600000, 1000);
  m.forget("q2");
  CHECK_FALSE(m.find("q2", 1000, &out));
}

TEST_CASE("memory is bounded by entries and bytes, least recently used out first", "[queue]") {
  TicketMemory m;
  m.set_live(true);
  TicketView out;
  // Too large to keep.
  read(m, "big", done(std::string(TicketMemory::kMaxEntryBytes, 'x')), 60000, 0);
  CHECK_FALSE(m.find("big", 0, &out));
  // Fill to the byte bound with answers of 200 KiB: the oldest unused ones go.
  std::string body(200 << 10, 'y');
  size_t fit = TicketMemory::kMaxBytes / (body.size() + 200);
  for (size_t i = 0; i < fit + 20; i++) {
    read(m, "d" + std::to_string(i), done(body), 60000, 0);
    REQUIRE(m.find("d0", 0, &out));  // d0 in use: kept, while d1 is the oldest unused
  }
  CHECK(m.bytes() <= TicketMemory::kMaxBytes);
  CHECK(m.find("d0", 0, &out));
  CHECK_FALSE(m.find("d1", 0, &out));
  CHECK(m.find("d" + std::to_string(fit + 19), 0, &out));
  // The entry bound.
  TicketMemory n;
  n.set_live(true);
  for (size_t i = 0; i < TicketMemory::kMaxEntries + 10; i++) read(n, "q" + std::to_string(i), queued("r", 1, 0), 60000, 0);
  CHECK(n.size() == TicketMemory::kMaxEntries);
  CHECK_FALSE(n.find("q0", 0, &out));
  CHECK(n.find("q" + std::to_string(TicketMemory::kMaxEntries + 9), 0, &out));
}
