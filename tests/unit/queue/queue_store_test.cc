// Tests for fg::queue (SPEC §6): the enqueue/start/finish/poll/cancel/expire scripts
// against a real redis-server (started per test by tests/support/redis_server), driven
// through the async client on a uv loop, plus ticket ids. Every loop ends closed and
// empty.
#include "queue/queue_store.h"

#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/loop_fixture.h"
#include "tests/support/redis_server.h"

namespace {

namespace q = fg::queue;
using fg::redis::Client;
using fg::redis::Failure;
using fg::redis::Reply;
using fg::test::RedisServer;

// Wall-clock-like times handed to the scripts (they only compare them).
constexpr uint64_t kT0 = 1'700'000'000'000;
constexpr uint64_t kMaxWait = 60'000;
constexpr uint64_t kHashTtl = 600'000;
constexpr uint64_t kTicketTtl = 300'000;
constexpr uint64_t kIdemTtl = 900'000;
constexpr uint64_t kUnlimitedDepth = 1'000'000;

// A stream entry read through the consumer group.
struct Entry {
  std::string id;
  std::string ticket;
};

// One loop, one command client and optionally one subscriber on the ticket channel,
// against a fresh redis-server. shutdown() closes the clients, drains the loop and
// reports whether uv_loop_close() succeeded; the destructor does the same when a
// REQUIRE threw halfway.
struct Fixture : fg::test::LoopFixture {
  RedisServer srv;
  std::unique_ptr<Client> c;
  std::unique_ptr<Client> sub;
  bool up = false;
  bool shut = false;
  q::Scripts scripts;
  q::Keys keys{"fgt:"};
  std::vector<std::pair<std::string, std::string>> messages;  // (channel, payload)
  int resubscribed = 0;

  ~Fixture() {
    if (!shut) shutdown();
  }

  Client::Options options() {
    auto ep = fg::redis::parse_url(srv.url());
    INFO(srv.url() << ": " << ep.message());
    REQUIRE(ep.is_ok());
    Client::Options o;
    o.endpoint = ep.value();
    o.name = "queue-test";
    o.command_timeout_ms = 2000;
    o.connect_timeout_ms = 500;
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 200;
    return o;
  }

  void connect() {
    INFO(srv.error());
    REQUIRE(srv.ok());
    Client::Options o = options();
    o.on_state = [this](bool u) { up = u; };
    c = std::make_unique<Client>(&loop, std::move(o));
    c->start();
    REQUIRE(run_until([&] { return up; }, 3000));
  }

  // A second client subscribed to the ticket channel.
  void listen() {
    sub = std::make_unique<Client>(&loop, options());
    sub->subscribe(
        {keys.channel()},
        [this](std::string_view ch, std::string_view payload) {
          messages.emplace_back(std::string(ch), std::string(payload));
        },
        [this] { ++resubscribed; });
    sub->start();
    REQUIRE(run_until([&] { return resubscribed == 1; }, 3000));
  }

  bool shutdown() {
    shut = true;
    bool ok = true;
    auto closed = std::make_shared<int>(0);
    int want = 0;
    for (auto* cl : {c.get(), sub.get()}) {
      if (cl == nullptr) continue;
      ++want;
      cl->close([closed] { ++*closed; });
    }
    if (!run_until([&] { return *closed == want; }, 5000)) {
      // Leak rather than abort in ~Client: the failure is reported by the caller.
      (void)c.release();
      (void)sub.release();
      ok = false;
    }
    c.reset();
    sub.reset();
    return close() && ok;
  }

  // Starts an asynchronous call with a completion callback and runs the loop until the
  // callback ran; returns what it was given.
  template <class T, class Launch>
  T await(Launch&& launch) {
    auto out = std::make_shared<std::optional<T>>();
    launch([out](auto&& v) { out->emplace(std::move(v)); });
    REQUIRE(run_until([&] { return out->has_value(); }, 3000));
    return std::move(**out);
  }

  Reply cmd(std::vector<std::string> argv) {
    INFO(argv[0]);
    auto failure = std::make_shared<Failure>(Failure::kNone);
    Reply r = await<Reply>([&](auto cb) {
      c->command(std::move(argv), [failure, cb](Failure f, Reply& rep) {
        *failure = f;
        cb(rep);
      });
    });
    REQUIRE(*failure == Failure::kNone);
    INFO(r.str);
    REQUIRE_FALSE(r.is_error());
    return r;
  }
  int64_t integer(std::vector<std::string> argv) {
    Reply r = cmd(std::move(argv));
    REQUIRE(r.type == Reply::Type::kInteger);
    return r.integer;
  }
  std::optional<std::string> get(const std::string& key) {
    Reply r = cmd({"GET", key});
    if (r.type == Reply::Type::kNil) return std::nullopt;
    return r.str;
  }
  std::map<std::string, std::string> hgetall(const std::string& key) {
    Reply r = cmd({"HGETALL", key});
    REQUIRE(r.type == Reply::Type::kArray);
    REQUIRE(r.elements.size() % 2 == 0);
    std::map<std::string, std::string> out;
    for (size_t i = 0; i + 1 < r.elements.size(); i += 2) out[r.elements[i].str] = r.elements[i + 1].str;
    return out;
  }
  bool exists(const std::string& key) { return integer({"EXISTS", key}) == 1; }
  int64_t pttl(const std::string& key) { return integer({"PTTL", key}); }
  int64_t counter(const std::string& key) {
    auto v = get(key);
    return v ? std::stoll(*v) : 0;
  }
  int64_t xlen(const std::string& route) { return integer({"XLEN", keys.stream(route)}); }
  int64_t pending(const std::string& route) {
    Reply r = cmd({"XPENDING", keys.stream(route), q::kGroup});
    REQUIRE(r.type == Reply::Type::kArray);
    REQUIRE_FALSE(r.elements.empty());
    return r.elements[0].integer;
  }
  // The consumer holding a pending entry and its idle time ("" when not pending).
  std::pair<std::string, int64_t> pending_owner(const std::string& route, const std::string& entry) {
    Reply r = cmd({"XPENDING", keys.stream(route), q::kGroup, entry, entry, "1"});
    REQUIRE(r.type == Reply::Type::kArray);
    if (r.elements.empty()) return {"", 0};
    REQUIRE(r.elements[0].elements.size() == 4);
    return {r.elements[0].elements[1].str, r.elements[0].elements[2].integer};
  }
  void create_group(const std::string& route) {
    Reply r = cmd({"XGROUP", "CREATE", keys.stream(route), q::kGroup, "0", "MKSTREAM"});
    REQUIRE(r.str == "OK");
  }
  // XREADGROUP ... > : the entries never delivered to any consumer of the group.
  std::vector<Entry> read_group(const std::string& route, const std::string& consumer = "w1") {
    Reply r = cmd({"XREADGROUP", "GROUP", q::kGroup, consumer, "COUNT", "100", "STREAMS", keys.stream(route), ">"});
    std::vector<Entry> out;
    if (r.type == Reply::Type::kNil) return out;
    REQUIRE(r.type == Reply::Type::kArray);
    REQUIRE(r.elements.size() == 1);
    const Reply& stream = r.elements[0];
    REQUIRE(stream.elements.size() == 2);
    CHECK(stream.elements[0].str == keys.stream(route));
    for (const Reply& e : stream.elements[1].elements) {
      REQUIRE(e.elements.size() == 2);
      REQUIRE(e.elements[1].elements.size() == 2);
      CHECK(e.elements[1].elements[0].str == "t");
      out.push_back({e.elements[0].str, e.elements[1].elements[1].str});
    }
    return out;
  }
  // A pending idempotency record owned by `owner`, as the idempotency store claims it.
  void make_idem(const std::string& key, const std::string& owner) {
    REQUIRE(cmd({"SET", key, "i" + owner + "\nfingerprint\n0", "PX", "5000"}).str == "OK");
  }
  // The idempotency record (layout in idempotency/store.cc) as fields: s state, o
  // owner, f fingerprint, tk ticket, r response. Empty when there is none.
  std::map<std::string, std::string> idem_record(const std::string& key) {
    std::map<std::string, std::string> out;
    std::optional<std::string> v = get(key);
    if (!v || v->empty()) return out;
    std::string rest = v->substr(1);
    auto cut = [&rest] {
      size_t n = rest.find('\n');
      std::string head = rest.substr(0, n);
      rest = n == std::string::npos ? std::string() : rest.substr(n + 1);
      return head;
    };
    switch ((*v)[0]) {
      case 'i':
      case 't':
        out["s"] = "inflight";
        out["o"] = cut();
        out["f"] = cut();
        if ((*v)[0] == 't') out["tk"] = rest;
        break;
      case 'd':
        out["s"] = "done";
        out["f"] = cut();
        out["r"] = rest;
        break;
      case 'u':
        out["s"] = "unstored";
        out["f"] = rest;
        break;
    }
    return out;
  }
  // Waits until the subscriber saw `n` messages in all.
  bool seen(size_t n) {
    return run_until([&] { return messages.size() >= n; }, 3000) && messages.size() == n;
  }

  q::EnqueueResult enqueue(const q::NewTicket& t, uint64_t max_depth = kUnlimitedDepth, uint64_t client_max = 0) {
    return await<q::EnqueueResult>(
        [&](auto cb) { q::enqueue(*c, scripts, keys, t, max_depth, kHashTtl, client_max, cb); });
  }
  q::Delivery start(const Entry& e, const std::string& route, uint64_t now, uint64_t max_wait = kMaxWait,
                    const q::Fence& fence = {}) {
    return await<q::Delivery>(
        [&](auto cb) { q::start(*c, scripts, keys, route, e.id, e.ticket, now, max_wait, cb, false, fence); });
  }
  q::Written finish_as(const Entry& e, const std::string& route, const std::string& state,
                       const std::string& response, const std::string& reason, bool store_idem,
                       uint64_t now = kT0 + 5000, const q::Fence& fence = {}) {
    return await<q::Written>([&](auto cb) {
      q::finish(*c, scripts, keys, route, e.id, e.ticket, state, response, reason, now, kTicketTtl, store_idem,
                kIdemTtl, cb, fence);
    });
  }
  bool finish(const Entry& e, const std::string& route, const std::string& state, const std::string& response,
              const std::string& reason, bool store_idem, uint64_t now = kT0 + 5000) {
    return finish_as(e, route, state, response, reason, store_idem, now) == q::Written::kOk;
  }
  q::TicketView poll(const std::string& id) {
    return await<q::TicketView>([&](auto cb) { q::poll(*c, scripts, keys, id, cb); });
  }
  q::CancelResult cancel(const std::string& id, uint64_t now = kT0 + 1000) {
    return await<q::CancelResult>([&](auto cb) {
      q::cancel(*c, scripts, keys, id, now, kTicketTtl, [cb](q::CancelResult r, const std::string&) { cb(r); });
    });
  }
  // expire() and count_retry() take no callback: a PING behind them on the same
  // connection is answered after them.
  void expire(const std::string& id, uint64_t now = kT0 + kMaxWait + 1) {
    q::expire(*c, scripts, keys, id, now, kTicketTtl);
    REQUIRE(cmd({"PING"}).str == "PONG");
  }
  void count_retry(const Entry& e, const std::string& route, const std::string& consumer = "w1") {
    q::count_retry(*c, scripts, keys, route, e.id, consumer, e.ticket);
    REQUIRE(cmd({"PING"}).str == "PONG");
  }
};

q::NewTicket make_ticket(const std::string& route, uint64_t created = kT0) {
  q::NewTicket t;
  t.id = q::new_ticket_id(route);
  t.route = route;
  t.created_ms = created;
  t.method = "POST";
  t.target = "/api/orders?src=q";
  t.header_lines = "Host: shop.internal\r\nContent-Type: application/json\r\n";
  t.body = R"({"sku":"A-1","qty":2})";
  t.forward_key = t.id;
  return t;
}

// Enqueues and reads the ticket's entry through the group (the route's group exists).
Entry park(Fixture& f, const q::NewTicket& t) {
  auto r = f.enqueue(t);
  REQUIRE(r.kind == q::EnqueueResult::Kind::kOk);
  auto entries = f.read_group(t.route);
  REQUIRE(entries.size() == 1);
  REQUIRE(entries[0].ticket == t.id);
  return entries[0];
}

// Enqueued, read and started: the ticket is processing.
Entry dispatch(Fixture& f, const q::NewTicket& t) {
  Entry e = park(f, t);
  auto d = f.start(e, t.route, kT0 + 100);
  REQUIRE(d.kind == q::Delivery::Kind::kGo);
  return e;
}

}  // namespace

// ---------------------------------------------------------------------------
// enqueue

TEST_CASE("enqueue writes the ticket hash and a stream entry; seq and depth count up", "[queue]") {
  Fixture f;
  f.connect();

  std::vector<q::NewTicket> ts;
  for (int i = 0; i < 3; ++i) {
    ts.push_back(make_ticket("checkout", kT0 + static_cast<uint64_t>(i)));
    auto r = f.enqueue(ts.back());
    REQUIRE(r.kind == q::EnqueueResult::Kind::kOk);
    CHECK(r.seq == i + 1);
    CHECK(r.depth == i + 1);
  }
  CHECK(f.counter(f.keys.enq("checkout")) == 3);
  CHECK(f.counter(f.keys.taken("checkout")) == 0);

  // The hash holds everything needed to deliver and report the ticket; the client key
  // and the idempotency record only when there is one (here none).
  const q::NewTicket& t = ts[1];  // the second ticket, checked field by field
  auto h = f.hgetall(f.keys.ticket(t.id));
  std::map<std::string, std::string> want = {
      {"r", "checkout"},   {"st", "queued"},         {"seq", "2"},         {"c", std::to_string(kT0 + 1)},
      {"m", t.method},     {"u", t.target},          {"h", t.header_lines}, {"b", t.body},
      {"fk", t.forward_key}, {"a", "0"},
  };
  CHECK(h == want);
  int64_t ttl = f.pttl(f.keys.ticket(t.id));
  CHECK(ttl > 0);
  CHECK(ttl <= static_cast<int64_t>(kHashTtl));

  // One entry per ticket, in order, each naming its ticket.
  CHECK(f.xlen("checkout") == 3);
  Reply range = f.cmd({"XRANGE", f.keys.stream("checkout"), "-", "+"});
  REQUIRE(range.elements.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    const Reply& fields = range.elements[i].elements[1];
    REQUIRE(fields.elements.size() == 2);
    CHECK(fields.elements[0].str == "t");
    CHECK(fields.elements[1].str == ts[i].id);
  }

  // Routes have their own counters and streams.
  auto other = f.enqueue(make_ticket("signup"));
  REQUIRE(other.kind == q::EnqueueResult::Kind::kOk);
  CHECK(other.seq == 1);
  CHECK(other.depth == 1);
  CHECK(f.xlen("signup") == 1);
  CHECK(f.xlen("checkout") == 3);
  REQUIRE(f.shutdown());
}

TEST_CASE("enqueue stores binary-safe bodies and headers unchanged", "[queue]") {
  Fixture f;
  f.connect();
  f.create_group("upload");
  q::NewTicket t = make_ticket("upload");
  t.body = std::string("\0\r\n\xff\x01 tail", 10);
  t.header_lines = std::string("X-Bin: a\0b\r\n", 12);
  t.forward_key = "client-key-42";
  Entry e = park(f, t);
  auto h = f.hgetall(f.keys.ticket(t.id));
  CHECK(h["b"] == t.body);
  CHECK(h["h"] == t.header_lines);
  auto d = f.start(e, "upload", kT0 + 10);
  REQUIRE(d.kind == q::Delivery::Kind::kGo);
  CHECK(d.body == t.body);
  CHECK(d.header_lines == t.header_lines);
  CHECK(d.forward_key == "client-key-42");
  REQUIRE(f.shutdown());
}

TEST_CASE("enqueue at max_depth answers kFull and writes nothing", "[queue]") {
  Fixture f;
  f.connect();
  f.create_group("checkout");

  auto a = make_ticket("checkout");
  auto b = make_ticket("checkout");
  REQUIRE(f.enqueue(a, 2).kind == q::EnqueueResult::Kind::kOk);
  REQUIRE(f.enqueue(b, 2).kind == q::EnqueueResult::Kind::kOk);

  auto c = make_ticket("checkout");
  f.make_idem("fgt:i:full", "owner-full");
  int64_t keys_before = f.integer({"DBSIZE"});
  c.idem_key = "fgt:i:full";
  c.idem_owner = "owner-full";
  auto full = f.enqueue(c, 2);
  CHECK(full.kind == q::EnqueueResult::Kind::kFull);
  CHECK(full.depth == 2);
  CHECK(f.integer({"DBSIZE"}) == keys_before);
  CHECK_FALSE(f.exists(f.keys.ticket(c.id)));
  CHECK(f.xlen("checkout") == 2);
  CHECK(f.counter(f.keys.enq("checkout")) == 2);
  CHECK(f.idem_record("fgt:i:full").count("tk") == 0);

  // A smaller limit than the current depth is full too.
  auto smaller = f.enqueue(c, 1);
  CHECK(smaller.kind == q::EnqueueResult::Kind::kFull);
  CHECK(smaller.depth == 2);

  // Taking one out of the queued state (dispatch) makes room for exactly one.
  auto entries = f.read_group("checkout");
  REQUIRE(entries.size() == 2);
  REQUIRE(f.start(entries[0], "checkout", kT0 + 10).kind == q::Delivery::Kind::kGo);
  auto ok = f.enqueue(c, 2);
  CHECK(ok.kind == q::EnqueueResult::Kind::kOk);
  CHECK(ok.seq == 3);
  CHECK(ok.depth == 2);
  CHECK(f.enqueue(make_ticket("checkout"), 2).kind == q::EnqueueResult::Kind::kFull);

  // So does a cancellation.
  REQUIRE(f.cancel(b.id) == q::CancelResult::kCancelled);
  auto after_cancel = f.enqueue(make_ticket("checkout"), 2);
  CHECK(after_cancel.kind == q::EnqueueResult::Kind::kOk);
  CHECK(after_cancel.seq == 4);
  CHECK(after_cancel.depth == 2);
  REQUIRE(f.shutdown());
}

TEST_CASE("client_max_tickets caps the tickets one client key holds queued", "[queue]") {
  Fixture f;
  f.connect();
  f.create_group("checkout");
  const uint64_t kMax = 2;
  auto for_client = [](const std::string& key) {
    auto t = make_ticket("checkout");
    t.client_key = key;
    return t;
  };

  auto a = for_client("ip:10.0.0.1");
  auto b = for_client("ip:10.0.0.1");
  REQUIRE(f.enqueue(a, kUnlimitedDepth, kMax).kind == q::EnqueueResult::Kind::kOk);
  REQUIRE(f.enqueue(b, kUnlimitedDepth, kMax).kind == q::EnqueueResult::Kind::kOk);
  CHECK(f.hgetall(f.keys.ticket(a.id))["ck"] == "ip:10.0.0.1");
  std::string cset = f.keys.client_set("checkout", "ip:10.0.0.1");
  CHECK(f.integer({"SCARD", cset}) == 2);
  int64_t cttl = f.pttl(cset);
  CHECK(cttl > 0);
  CHECK(cttl <= static_cast<int64_t>(kHashTtl));

  auto c = for_client("ip:10.0.0.1");
  auto too_many = f.enqueue(c, kUnlimitedDepth, kMax);
  CHECK(too_many.kind == q::EnqueueResult::Kind::kTooMany);
  CHECK_FALSE(f.exists(f.keys.ticket(c.id)));
  CHECK(f.xlen("checkout") == 2);
  CHECK(f.counter(f.keys.enq("checkout")) == 2);

  // Another client key is counted separately; without a limit nobody is counted.
  CHECK(f.enqueue(for_client("ip:10.0.0.2"), kUnlimitedDepth, kMax).kind == q::EnqueueResult::Kind::kOk);
  CHECK(f.enqueue(for_client("ip:10.0.0.1"), kUnlimitedDepth, 0).kind == q::EnqueueResult::Kind::kOk);
  CHECK(f.enqueue(c, kUnlimitedDepth, kMax).kind == q::EnqueueResult::Kind::kTooMany);

  // A cancelled ticket frees its slot.
  REQUIRE(f.cancel(a.id) == q::CancelResult::kCancelled);
  auto c_ok = f.enqueue(c, kUnlimitedDepth, kMax);
  CHECK(c_ok.kind == q::EnqueueResult::Kind::kOk);
  CHECK(f.enqueue(for_client("ip:10.0.0.1"), kUnlimitedDepth, kMax).kind == q::EnqueueResult::Kind::kTooMany);

  // So does a finished one (b: read, started, finished done).
  std::vector<Entry> entries = f.read_group("checkout");
  const Entry* eb = nullptr;
  for (const Entry& e : entries)
    if (e.ticket == b.id) eb = &e;
  REQUIRE(eb != nullptr);
  REQUIRE(f.start(*eb, "checkout", kT0 + 10).kind == q::Delivery::Kind::kGo);
  REQUIRE(f.finish(*eb, "checkout", "done", "HTTP/1.1 201 Created\r\n\r\n", "", false));
  auto d = for_client("ip:10.0.0.1");
  CHECK(f.enqueue(d, kUnlimitedDepth, kMax).kind == q::EnqueueResult::Kind::kOk);
  CHECK(f.enqueue(for_client("ip:10.0.0.1"), kUnlimitedDepth, kMax).kind == q::EnqueueResult::Kind::kTooMany);
  // The set is cleaned of tickets that left the queued state.
  Reply members = f.cmd({"SMEMBERS", cset});
  std::set<std::string> ms;
  for (const Reply& m : members.elements) ms.insert(m.str);
  CHECK(ms == std::set<std::string>{c.id, d.id});
  REQUIRE(f.shutdown());
}

TEST_CASE("enqueue links the idempotency record to the ticket when the owner matches", "[queue]") {
  Fixture f;
  f.connect();

  auto t = make_ticket("checkout");
  t.idem_key = "fgt:i:checkout:K1";
  t.idem_owner = "owner-1";
  t.forward_key = "K1";
  f.make_idem(t.idem_key, "owner-1");
  REQUIRE(f.enqueue(t).kind == q::EnqueueResult::Kind::kOk);
  auto rec = f.idem_record(t.idem_key);
  CHECK(rec["tk"] == t.id);
  CHECK(rec["o"] == "owner-1");
  CHECK(rec["s"] == "inflight");
  // The record lives as long as the ticket may wait.
  CHECK(f.pttl(t.idem_key) > 5000);
  auto h = f.hgetall(f.keys.ticket(t.id));
  CHECK(h["ik"] == t.idem_key);
  CHECK(h["io"] == "owner-1");
  CHECK(h["fk"] == "K1");

  // A record claimed by someone else (a later owner) is left alone.
  auto u = make_ticket("checkout");
  u.idem_key = "fgt:i:checkout:K2";
  u.idem_owner = "owner-2";
  f.make_idem(u.idem_key, "someone-else");
  REQUIRE(f.enqueue(u).kind == q::EnqueueResult::Kind::kOk);
  CHECK(f.idem_record(u.idem_key).count("tk") == 0);
  CHECK(f.pttl(u.idem_key) <= 5000);

  // A vanished record is not recreated.
  auto v = make_ticket("checkout");
  v.idem_key = "fgt:i:checkout:K3";
  v.idem_owner = "owner-3";
  REQUIRE(f.enqueue(v).kind == q::EnqueueResult::Kind::kOk);
  CHECK_FALSE(f.exists(v.idem_key));
  REQUIRE(f.shutdown());
}

// ---------------------------------------------------------------------------
// start

TEST_CASE("start moves a queued ticket to processing and returns what to send", "[queue]") {
  Fixture f;
  f.connect();
  f.listen();
  f.create_group("checkout");
  auto t = make_ticket("checkout", kT0);
  t.forward_key = "client-key-7";
  Entry e = park(f, t);
  CHECK(f.pending("checkout") == 1);

  auto d = f.start(e, "checkout", kT0 + 250);
  REQUIRE(d.kind == q::Delivery::Kind::kGo);
  CHECK(d.attempts == 1);
  CHECK(d.method == t.method);
  CHECK(d.target == t.target);
  CHECK(d.header_lines == t.header_lines);
  CHECK(d.body == t.body);
  CHECK(d.forward_key == "client-key-7");
  CHECK(d.created_ms == static_cast<int64_t>(kT0));

  auto h = f.hgetall(f.keys.ticket(t.id));
  CHECK(h["st"] == "processing");
  CHECK(h["a"] == "1");
  CHECK(h["d"] == std::to_string(kT0 + 250));
  CHECK(f.counter(f.keys.taken("checkout")) == 1);
  // Not acknowledged until finished: a dead worker's entry is reclaimed.
  CHECK(f.pending("checkout") == 1);
  CHECK(f.xlen("checkout") == 1);
  REQUIRE(f.seen(1));
  // The change carries the route's progress (the taken counter after it).
  CHECK(f.messages[0] == std::make_pair(f.keys.channel(), t.id + " checkout 1"));

  // Reclaimed by another worker and started again: one more attempt, same counter.
  Reply claimed = f.cmd({"XCLAIM", f.keys.stream("checkout"), q::kGroup, "w2", "0", e.id});
  REQUIRE(claimed.elements.size() == 1);
  auto again = f.start(e, "checkout", kT0 + 40'000);
  REQUIRE(again.kind == q::Delivery::Kind::kGo);
  CHECK(again.attempts == 2);
  CHECK(again.body == t.body);
  CHECK(f.counter(f.keys.taken("checkout")) == 1);
  CHECK(f.hgetall(f.keys.ticket(t.id))["st"] == "processing");
  CHECK(f.pending("checkout") == 1);

  // A processing ticket is past max_wait's reach (it was dispatched in time).
  auto late = f.start(e, "checkout", kT0 + 10 * kMaxWait);
  CHECK(late.kind == q::Delivery::Kind::kGo);
  CHECK(late.attempts == 3);

  // count_retry adds attempts too, and claims the entry for the retrying worker.
  CHECK(f.pending_owner("checkout", e.id).first == "w2");
  f.count_retry(e, "checkout", "w3");
  CHECK(f.hgetall(f.keys.ticket(t.id))["a"] == "4");
  auto owner = f.pending_owner("checkout", e.id);
  CHECK(owner.first == "w3");
  CHECK(owner.second < 1000);
  CHECK(f.pending("checkout") == 1);
  CHECK(f.hgetall(f.keys.ticket(t.id))["st"] == "processing");
  REQUIRE(f.shutdown());
}

TEST_CASE("a dispatcher's fenced start and finish are refused once a newer token exists", "[queue]") {
  Fixture f;
  f.connect();
  f.create_group("checkout");
  const std::string fence_key = "fg:leader:{dispatch:checkout}:fence";
  q::Fence old_leader{fence_key, 4};
  q::Fence new_leader{fence_key, 5};
  auto t = make_ticket("checkout", kT0);
  Entry e = park(f, t);

  // The first holder starts the delivery; its token becomes the fence.
  REQUIRE(f.start(e, "checkout", kT0 + 10, kMaxWait, old_leader).kind == q::Delivery::Kind::kGo);
  CHECK(f.cmd({"GET", fence_key}).str == "4");
  CHECK(f.hgetall(f.keys.ticket(t.id))["a"] == "1");
  // A new holder takes over (its start raises the fence) ...
  REQUIRE(f.start(e, "checkout", kT0 + 20, kMaxWait, new_leader).kind == q::Delivery::Kind::kGo);
  CHECK(f.cmd({"GET", fence_key}).str == "5");
  CHECK(f.hgetall(f.keys.ticket(t.id))["a"] == "2");
  // ... and the old one's late writes change nothing.
  CHECK(f.start(e, "checkout", kT0 + 30, kMaxWait, old_leader).kind == q::Delivery::Kind::kFenced);
  CHECK(f.hgetall(f.keys.ticket(t.id))["a"] == "2");
  CHECK(f.finish_as(e, "checkout", "done", "late", "", false, kT0 + 40, old_leader) == q::Written::kFenced);
  CHECK(f.hgetall(f.keys.ticket(t.id))["st"] == "processing");
  CHECK(f.pending("checkout") == 1);
  // The current holder's finish goes through; unfenced calls (token 0) are not checked.
  CHECK(f.finish_as(e, "checkout", "done", "answer", "", false, kT0 + 50, new_leader) == q::Written::kOk);
  CHECK(f.hgetall(f.keys.ticket(t.id))["st"] == "done");
  CHECK(f.pending("checkout") == 0);
}

TEST_CASE("start skips cancelled, finished and vanished tickets and acknowledges their entries", "[queue]") {
  Fixture f;
  f.connect();
  f.create_group("checkout");

  SECTION("cancelled") {
    auto t = make_ticket("checkout");
    Entry e = park(f, t);
    REQUIRE(f.cancel(t.id) == q::CancelResult::kCancelled);
    CHECK(f.counter(f.keys.taken("checkout")) == 1);
    auto d = f.start(e, "checkout", kT0 + 10);
    CHECK(d.kind == q::Delivery::Kind::kSkip);
    CHECK(f.pending("checkout") == 0);
    CHECK(f.xlen("checkout") == 0);
    CHECK(f.counter(f.keys.taken("checkout")) == 1);
    auto h = f.hgetall(f.keys.ticket(t.id));
    CHECK(h["st"] == "cancelled");
    CHECK(h["a"] == "0");
  }
  SECTION("done") {
    auto t = make_ticket("checkout");
    Entry e = dispatch(f, t);
    // Finished without its entry (as after a lost reply), then found again.
    Entry no_entry{"", t.id};
    REQUIRE(f.finish(no_entry, "checkout", "done", "HTTP/1.1 200 OK\r\n\r\n", "", false));
    CHECK(f.pending("checkout") == 1);
    auto d = f.start(e, "checkout", kT0 + 10);
    CHECK(d.kind == q::Delivery::Kind::kSkip);
    CHECK(f.pending("checkout") == 0);
    CHECK(f.xlen("checkout") == 0);
    CHECK(f.counter(f.keys.taken("checkout")) == 1);
    CHECK(f.hgetall(f.keys.ticket(t.id))["a"] == "1");
  }
  SECTION("vanished") {
    auto t = make_ticket("checkout");
    Entry e = park(f, t);
    REQUIRE(f.integer({"DEL", f.keys.ticket(t.id)}) == 1);
    auto d = f.start(e, "checkout", kT0 + 10);
    CHECK(d.kind == q::Delivery::Kind::kSkip);
    CHECK(f.pending("checkout") == 0);
    CHECK(f.xlen("checkout") == 0);
    CHECK_FALSE(f.exists(f.keys.ticket(t.id)));
  }
  REQUIRE(f.shutdown());
}

TEST_CASE("start after max_wait fails the ticket as expired", "[queue]") {
  Fixture f;
  f.connect();
  f.listen();
  f.create_group("checkout");

  // Exactly max_wait old is still in time.
  auto in_time = make_ticket("checkout", kT0);
  Entry e0 = park(f, in_time);
  CHECK(f.start(e0, "checkout", kT0 + 5000, 5000).kind == q::Delivery::Kind::kGo);

  auto t = make_ticket("checkout", kT0);
  t.idem_key = "fgt:i:checkout:late";
  t.idem_owner = "owner-late";
  f.make_idem(t.idem_key, "owner-late");
  Entry e = park(f, t);
  REQUIRE(f.exists(t.idem_key));
  size_t before = f.messages.size();
  auto d = f.start(e, "checkout", kT0 + 5001, 5000);
  CHECK(d.kind == q::Delivery::Kind::kExpired);
  auto h = f.hgetall(f.keys.ticket(t.id));
  CHECK(h["st"] == "failed");
  CHECK(h["rs"] == "expired");
  CHECK(h["fin"] == std::to_string(kT0 + 5001));
  CHECK(h["a"] == "0");
  CHECK(h.count("b") == 0);
  int64_t ttl = f.pttl(f.keys.ticket(t.id));
  CHECK(ttl > 0);
  CHECK(ttl <= 3'600'000);
  CHECK_FALSE(f.exists(t.idem_key));  // the key may be used again
  CHECK(f.counter(f.keys.taken("checkout")) == 2);
  // Only the in-time ticket's entry is left, still pending.
  CHECK(f.xlen("checkout") == 1);
  CHECK(f.pending("checkout") == 1);
  REQUIRE(f.seen(before + 1));
  CHECK(f.messages.back().second == t.id + " checkout 2");

  auto v = f.poll(t.id);
  CHECK(v.kind == q::TicketView::Kind::kFailed);
  CHECK(v.reason == "expired");

  // An idempotency record that changed owner in the meantime is not deleted.
  auto u = make_ticket("checkout", kT0);
  u.idem_key = "fgt:i:checkout:late2";
  u.idem_owner = "owner-a";
  f.make_idem(u.idem_key, "owner-a");
  Entry eu = park(f, u);
  f.make_idem(u.idem_key, "owner-b");
  CHECK(f.start(eu, "checkout", kT0 + 5001, 5000).kind == q::Delivery::Kind::kExpired);
  CHECK(f.idem_record(u.idem_key)["o"] == "owner-b");
  REQUIRE(f.shutdown());
}

// ---------------------------------------------------------------------------
// finish

TEST_CASE("finish done stores the response, answers the idempotency record and publishes", "[queue]") {
  Fixture f;
  f.connect();
  f.listen();
  f.create_group("checkout");
  auto t = make_ticket("checkout");
  t.idem_key = "fgt:i:checkout:K1";
  t.idem_owner = "owner-1";
  t.forward_key = "K1";
  f.make_idem(t.idem_key, "owner-1");
  Entry e = dispatch(f, t);
  REQUIRE(f.seen(1));  // the start
  CHECK(f.idem_record(t.idem_key)["tk"] == t.id);

  const std::string resp = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
  CHECK(f.finish(e, "checkout", "done", resp, "", true, kT0 + 700));

  auto h = f.hgetall(f.keys.ticket(t.id));
  CHECK(h["st"] == "done");
  CHECK(h["resp"] == resp);
  CHECK(h["fin"] == std::to_string(kT0 + 700));
  CHECK(h.count("b") == 0);
  int64_t ttl = f.pttl(f.keys.ticket(t.id));
  CHECK(ttl > 0);
  CHECK(ttl <= static_cast<int64_t>(kTicketTtl));

  auto rec = f.idem_record(t.idem_key);
  CHECK(rec["s"] == "done");
  CHECK(rec["r"] == resp);
  CHECK(rec["f"] == "fingerprint");
  CHECK(rec.count("tk") == 0);
  int64_t ittl = f.pttl(t.idem_key);
  CHECK(ittl > static_cast<int64_t>(kTicketTtl));
  CHECK(ittl <= static_cast<int64_t>(kIdemTtl));

  CHECK(f.pending("checkout") == 0);
  CHECK(f.xlen("checkout") == 0);
  REQUIRE(f.seen(2));
  CHECK(f.messages[1] == std::make_pair(f.keys.channel(), t.id));

  auto v = f.poll(t.id);
  CHECK(v.kind == q::TicketView::Kind::kDone);
  CHECK(v.response == resp);
  CHECK(v.attempts == 1);
  // The hash's remaining lifetime comes with the read (how long memory may keep it).
  CHECK(v.ttl_ms > 0);
  CHECK(v.ttl_ms <= static_cast<int64_t>(kTicketTtl));
  REQUIRE(f.shutdown());
}

TEST_CASE("an idempotency record of another type does not fail enqueue or finish", "[queue]") {
  // A hash written by an older version: not this attempt's claim, left alone.
  Fixture f;
  f.connect();
  f.listen();
  f.create_group("checkout");
  auto t = make_ticket("checkout");
  t.idem_key = "fgt:i:checkout:H1";
  t.idem_owner = "owner-h";
  f.integer({"HSET", t.idem_key, "o", "owner-h", "s", "inflight"});
  Entry e = dispatch(f, t);
  CHECK(f.hgetall(f.keys.ticket(t.id))["st"] == "processing");
  CHECK(f.finish(e, "checkout", "done", "resp", "", true, kT0 + 700));
  CHECK(f.hgetall(f.keys.ticket(t.id))["st"] == "done");
  CHECK(f.pending("checkout") == 0);
  CHECK(f.hgetall(t.idem_key)["s"] == "inflight");
  REQUIRE(f.shutdown());
}

TEST_CASE("finish failed releases the idempotency record", "[queue]") {
  Fixture f;
  f.connect();
  f.listen();
  f.create_group("checkout");
  auto t = make_ticket("checkout");
  t.idem_key = "fgt:i:checkout:F1";
  t.idem_owner = "owner-f";
  f.make_idem(t.idem_key, "owner-f");
  Entry e = dispatch(f, t);
  f.count_retry(e, "checkout");
  f.count_retry(e, "checkout");
  const std::string resp = "HTTP/1.1 503 Service Unavailable\r\n\r\n";
  CHECK(f.finish(e, "checkout", "failed", resp, "upstream_status", false));

  CHECK_FALSE(f.exists(t.idem_key));
  auto h = f.hgetall(f.keys.ticket(t.id));
  CHECK(h["st"] == "failed");
  CHECK(h["rs"] == "upstream_status");
  CHECK(h["a"] == "3");
  CHECK(f.pending("checkout") == 0);
  CHECK(f.xlen("checkout") == 0);
  REQUIRE(f.seen(2));
  CHECK(f.messages[1].second == t.id);

  auto v = f.poll(t.id);
  CHECK(v.kind == q::TicketView::Kind::kFailed);
  CHECK(v.reason == "upstream_status");
  CHECK(v.attempts == 3);
  CHECK(v.response == resp);

  // Someone else's record survives a failure.
  auto u = make_ticket("checkout");
  u.idem_key = "fgt:i:checkout:F2";
  u.idem_owner = "owner-u";
  f.make_idem(u.idem_key, "owner-u");
  Entry eu = dispatch(f, u);
  f.make_idem(u.idem_key, "owner-other");
  CHECK(f.finish(eu, "checkout", "failed", "", "timeout", false));
  CHECK(f.idem_record(u.idem_key)["o"] == "owner-other");
  CHECK(f.idem_record(u.idem_key)["s"] == "inflight");
  REQUIRE(f.shutdown());
}

// A slow delivery reclaimed by a second worker: both attempts finish. The first final
// state stands; a later failure must neither turn the ticket failed nor release the
// stored idempotency answer (a client retry would then be processed again).
TEST_CASE("a late finish from a reclaimed delivery does not undo a done ticket", "[queue]") {
  Fixture f;
  f.connect();
  f.create_group("checkout");
  auto t = make_ticket("checkout");
  t.idem_key = "fgt:i:checkout:R1";
  t.idem_owner = "owner-r";
  f.make_idem(t.idem_key, "owner-r");
  Entry e = dispatch(f, t);  // worker w1, attempt 1
  f.cmd({"XCLAIM", f.keys.stream("checkout"), q::kGroup, "w2", "0", e.id});
  REQUIRE(f.start(e, "checkout", kT0 + 40'000).attempts == 2);  // worker w2

  const std::string resp = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
  REQUIRE(f.finish(e, "checkout", "done", resp, "", true, kT0 + 41'000));     // w1
  REQUIRE(f.finish(e, "checkout", "failed", "", "upstream_timeout", false));  // w2

  auto v = f.poll(t.id);
  CHECK(v.kind == q::TicketView::Kind::kDone);
  CHECK(v.response == resp);
  auto rec = f.idem_record(t.idem_key);
  CHECK(rec["s"] == "done");
  CHECK(rec["r"] == resp);
  CHECK(f.pending("checkout") == 0);
  CHECK(f.xlen("checkout") == 0);
  REQUIRE(f.shutdown());
}

TEST_CASE("finish of a vanished ticket acknowledges its entry and creates nothing", "[queue]") {
  Fixture f;
  f.connect();
  f.create_group("checkout");
  auto t = make_ticket("checkout");
  Entry e = dispatch(f, t);
  REQUIRE(f.integer({"DEL", f.keys.ticket(t.id)}) == 1);
  CHECK(f.finish(e, "checkout", "done", "HTTP/1.1 200 OK\r\n\r\n", "", true));
  CHECK_FALSE(f.exists(f.keys.ticket(t.id)));
  CHECK(f.pending("checkout") == 0);
  CHECK(f.xlen("checkout") == 0);
  CHECK(f.poll(t.id).kind == q::TicketView::Kind::kUnknown);
  REQUIRE(f.shutdown());
}

// ---------------------------------------------------------------------------
// poll

TEST_CASE("poll reports every state", "[queue]") {
  Fixture f;
  f.connect();
  f.create_group("checkout");

  auto a = make_ticket("checkout", kT0);
  auto b = make_ticket("checkout", kT0 + 1);
  auto c = make_ticket("checkout", kT0 + 2);
  for (auto* t : {&a, &b, &c}) REQUIRE(f.enqueue(*t).kind == q::EnqueueResult::Kind::kOk);

  auto v = f.poll(c.id);
  CHECK(v.kind == q::TicketView::Kind::kQueued);
  CHECK(v.route == "checkout");
  CHECK(v.seq == 3);
  CHECK(v.taken == 0);
  CHECK(v.created_ms == static_cast<int64_t>(kT0 + 2));
  CHECK(v.attempts == 0);
  CHECK(v.reason.empty());
  CHECK(v.response.empty());

  // a dispatched: c moves up (position = seq - taken).
  auto entries = f.read_group("checkout");
  REQUIRE(entries.size() == 3);
  REQUIRE(entries[0].ticket == a.id);
  REQUIRE(f.start(entries[0], "checkout", kT0 + 10).kind == q::Delivery::Kind::kGo);
  v = f.poll(c.id);
  CHECK(v.kind == q::TicketView::Kind::kQueued);
  CHECK(v.seq == 3);
  CHECK(v.taken == 1);

  v = f.poll(a.id);
  CHECK(v.kind == q::TicketView::Kind::kProcessing);
  CHECK(v.route == "checkout");
  CHECK(v.seq == 1);
  CHECK(v.attempts == 1);
  CHECK(v.taken == 0);

  REQUIRE(f.finish(entries[0], "checkout", "done", "HTTP/1.1 200 OK\r\n\r\nhi", "", false));
  v = f.poll(a.id);
  CHECK(v.kind == q::TicketView::Kind::kDone);
  CHECK(v.response == "HTTP/1.1 200 OK\r\n\r\nhi");
  CHECK(v.attempts == 1);

  REQUIRE(f.start(entries[1], "checkout", kT0 + 20).kind == q::Delivery::Kind::kGo);
  f.count_retry(entries[1], "checkout");
  REQUIRE(f.finish(entries[1], "checkout", "failed", "", "upstream_timeout", false));
  v = f.poll(b.id);
  CHECK(v.kind == q::TicketView::Kind::kFailed);
  CHECK(v.reason == "upstream_timeout");
  CHECK(v.attempts == 2);
  CHECK(v.response.empty());

  REQUIRE(f.cancel(c.id) == q::CancelResult::kCancelled);
  v = f.poll(c.id);
  CHECK(v.kind == q::TicketView::Kind::kCancelled);

  v = f.poll(q::new_ticket_id("checkout"));
  CHECK(v.kind == q::TicketView::Kind::kUnknown);
  CHECK(v.route.empty());
  CHECK(v.seq == 0);
  REQUIRE(f.shutdown());
}

// ---------------------------------------------------------------------------
// cancel and expire

TEST_CASE("cancel takes a queued ticket out once; later it is too late", "[queue]") {
  Fixture f;
  f.connect();
  f.listen();
  f.create_group("checkout");

  auto t = make_ticket("checkout");
  t.idem_key = "fgt:i:checkout:C1";
  t.idem_owner = "owner-c";
  f.make_idem(t.idem_key, "owner-c");
  REQUIRE(f.enqueue(t).kind == q::EnqueueResult::Kind::kOk);

  CHECK(f.cancel(t.id, kT0 + 900) == q::CancelResult::kCancelled);
  auto h = f.hgetall(f.keys.ticket(t.id));
  CHECK(h["st"] == "cancelled");
  CHECK(h["fin"] == std::to_string(kT0 + 900));
  CHECK(h.count("b") == 0);
  int64_t ttl = f.pttl(f.keys.ticket(t.id));
  CHECK(ttl > 0);
  CHECK(ttl <= static_cast<int64_t>(kTicketTtl));
  CHECK(f.counter(f.keys.taken("checkout")) == 1);
  CHECK_FALSE(f.exists(t.idem_key));
  REQUIRE(f.seen(1));
  CHECK(f.messages[0] == std::make_pair(f.keys.channel(), t.id + " checkout 1"));

  CHECK(f.cancel(t.id) == q::CancelResult::kTooLate);
  CHECK(f.counter(f.keys.taken("checkout")) == 1);
  CHECK(f.hgetall(f.keys.ticket(t.id))["st"] == "cancelled");

  // Processing and done tickets are too late as well, and left as they are.
  f.create_group("signup");
  auto p = make_ticket("signup");
  Entry ep = dispatch(f, p);
  CHECK(f.cancel(p.id) == q::CancelResult::kTooLate);
  CHECK(f.hgetall(f.keys.ticket(p.id))["st"] == "processing");
  REQUIRE(f.finish(ep, "signup", "done", "HTTP/1.1 200 OK\r\n\r\n", "", false));
  CHECK(f.cancel(p.id) == q::CancelResult::kTooLate);
  CHECK(f.hgetall(f.keys.ticket(p.id))["st"] == "done");
  CHECK(f.counter(f.keys.taken("signup")) == 1);
  CHECK(f.counter(f.keys.taken("checkout")) == 1);

  std::string unknown = q::new_ticket_id("checkout");
  CHECK(f.cancel(unknown) == q::CancelResult::kUnknown);
  CHECK_FALSE(f.exists(f.keys.ticket(unknown)));
  REQUIRE(f.shutdown());
}

TEST_CASE("expire (lazy) acts only on queued tickets", "[queue]") {
  Fixture f;
  f.connect();
  f.create_group("checkout");

  auto t = make_ticket("checkout");
  t.idem_key = "fgt:i:checkout:E1";
  t.idem_owner = "owner-e";
  f.make_idem(t.idem_key, "owner-e");
  REQUIRE(f.enqueue(t).kind == q::EnqueueResult::Kind::kOk);
  f.expire(t.id, kT0 + kMaxWait + 1);
  auto h = f.hgetall(f.keys.ticket(t.id));
  CHECK(h["st"] == "failed");
  CHECK(h["rs"] == "expired");
  CHECK(h["fin"] == std::to_string(kT0 + kMaxWait + 1));
  CHECK(h.count("b") == 0);
  CHECK(f.counter(f.keys.taken("checkout")) == 1);
  CHECK_FALSE(f.exists(t.idem_key));
  auto v = f.poll(t.id);
  CHECK(v.kind == q::TicketView::Kind::kFailed);
  CHECK(v.reason == "expired");

  // A second expiry changes nothing.
  f.expire(t.id);
  CHECK(f.counter(f.keys.taken("checkout")) == 1);

  // Its stream entry, read later, is skipped and acknowledged without counting again.
  auto entries = f.read_group("checkout");
  REQUIRE(entries.size() == 1);
  CHECK(f.start(entries[0], "checkout", kT0 + kMaxWait + 2).kind == q::Delivery::Kind::kSkip);
  CHECK(f.pending("checkout") == 0);
  CHECK(f.xlen("checkout") == 0);
  CHECK(f.counter(f.keys.taken("checkout")) == 1);

  // Processing and done tickets are left alone.
  auto p = make_ticket("checkout");
  Entry ep = dispatch(f, p);
  f.expire(p.id);
  auto hp = f.hgetall(f.keys.ticket(p.id));
  CHECK(hp["st"] == "processing");
  CHECK(hp.count("rs") == 0);
  CHECK(hp.count("b") == 1);
  CHECK(f.counter(f.keys.taken("checkout")) == 2);
  REQUIRE(f.finish(ep, "checkout", "done", "HTTP/1.1 200 OK\r\n\r\n", "", false));
  f.expire(p.id);
  auto hd = f.hgetall(f.keys.ticket(p.id));
  CHECK(hd["st"] == "done");
  CHECK(hd["rs"].empty());
  CHECK(f.counter(f.keys.taken("checkout")) == 2);

  // An unknown id creates nothing.
  std::string unknown = q::new_ticket_id("checkout");
  f.expire(unknown);
  CHECK_FALSE(f.exists(f.keys.ticket(unknown)));
  REQUIRE(f.shutdown());
}

// ---------------------------------------------------------------------------
// ticket ids

TEST_CASE("new_ticket_id makes 22 URL-safe characters, all different, then the route", "[queue]") {
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::set<std::string> ids;
  std::vector<std::set<char>> per_position(22);
  for (int i = 0; i < 10'000; ++i) {
    std::string id = q::new_ticket_id("v2.orders");
    INFO(id);
    REQUIRE(id.size() == 32);
    REQUIRE(id.substr(22) == ".v2.orders");
    REQUIRE(id.substr(0, 22).find_first_not_of(alphabet) == std::string::npos);
    REQUIRE(q::valid_ticket_id(id));
    REQUIRE(q::ticket_route(id) == "v2.orders");
    for (size_t p = 0; p < 22; ++p) per_position[p].insert(id[p]);
    ids.insert(std::move(id));
  }
  CHECK(ids.size() == 10'000);
  // 128 random bits: the first 21 characters carry 6 bits each, the last one 2.
  for (size_t p = 0; p < 21; ++p) {
    INFO("position " << p);
    CHECK(per_position[p].size() == 64);
  }
  CHECK(per_position[21] == std::set<char>{'A', 'Q', 'g', 'w'});
}

TEST_CASE("valid_ticket_id rejects wrong lengths and characters", "[queue]") {
  CHECK(q::valid_ticket_id(std::string(22, 'A') + ".orders"));
  CHECK(q::valid_ticket_id(std::string(22, '-') + ".o"));
  CHECK(q::valid_ticket_id(std::string(22, '_') + ".v1.checkout-EU_2"));
  CHECK(q::valid_ticket_id("abcdefghijklmnopqrstuv.orders"));
  CHECK(q::valid_ticket_id("0123456789ABCDEFGHIJ-_.orders"));
  CHECK(q::ticket_route("0123456789ABCDEFGHIJ-_.orders") == "orders");

  CHECK_FALSE(q::valid_ticket_id(""));
  // The route is part of the id: a bare 22-character id (the layout before hash tags)
  // names no route, hence no key.
  CHECK_FALSE(q::valid_ticket_id(std::string(22, 'A')));
  CHECK(q::ticket_route(std::string(22, 'A')).empty());
  CHECK_FALSE(q::valid_ticket_id(std::string(22, 'A') + "."));
  CHECK_FALSE(q::valid_ticket_id(std::string(21, 'A') + ".orders"));
  CHECK_FALSE(q::valid_ticket_id(std::string(23, 'A') + ".orders"));
  CHECK_FALSE(q::valid_ticket_id(std::string(44, 'A')));
  CHECK_FALSE(q::valid_ticket_id(std::string(22, 'A') + "." + std::string(201, 'r')));
  std::string base = std::string(22, 'a') + ".orders";
  for (char bad : std::string("+/= %?#&\"'\\<>\r\n\t:;,~!@$*()[]{}") + std::string(1, '\0') + "\x7f\x80\xc3\xff") {
    INFO("byte " << static_cast<int>(static_cast<unsigned char>(bad)));
    for (size_t at : {size_t{10}, size_t{22}, size_t{25}}) {
      std::string id = base;
      id[at] = bad;
      CHECK_FALSE(q::valid_ticket_id(id));
    }
  }
  // A '.' among the random characters.
  CHECK_FALSE(q::valid_ticket_id(std::string(10, 'a') + "." + std::string(11, 'a') + ".orders"));
  // A 22-byte string of 21 characters (a two-byte UTF-8 letter).
  CHECK_FALSE(q::valid_ticket_id(std::string(20, 'a') + "\xc3\xa9.orders"));
  // Key-injection attempts never pass.
  CHECK_FALSE(q::valid_ticket_id("../../fgt:q:checkout:s"));
  CHECK_FALSE(q::valid_ticket_id("abcdefghijk*mnopqrstuv"));
}
