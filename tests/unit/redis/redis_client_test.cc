// Tests for fg::redis: URL parsing, and the async client against a real redis-server
// (started per test by tests/support/redis_server). Every loop ends closed and empty.
#include "redis/redis_client.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tests/support/loop_fixture.h"
#include "tests/support/redis_server.h"

namespace {

using fg::redis::Client;
using fg::redis::Failure;
using fg::redis::Reply;
using fg::redis::Script;
using fg::test::RedisServer;

uint64_t now_ms() { return uv_hrtime() / 1000000; }

// One client on the harness loop with what on_state reported.
struct Conn {
  std::unique_ptr<Client> client;
  int ups = 0;
  int downs = 0;
  bool up = false;
};

// The fixture loop plus its clients. shutdown() closes every client and then the loop
// (which must close empty); the destructor does the same when a REQUIRE threw halfway,
// so one failure never aborts the whole run.
struct Harness : fg::test::LoopFixture {
  std::deque<Conn> conns;
  bool shut = false;

  ~Harness() {
    if (!shut) shutdown();
  }

  Conn& add(Client::Options o) {
    conns.emplace_back();
    Conn& c = conns.back();
    o.on_state = [&c](bool up) {
      c.up = up;
      (up ? c.ups : c.downs)++;
    };
    c.client = std::make_unique<Client>(&loop, std::move(o));
    return c;
  }

  bool shutdown() {
    shut = true;
    bool ok = true;
    auto closed = std::make_shared<int>(0);
    for (Conn& c : conns) c.client->close([closed] { ++*closed; });
    int want = static_cast<int>(conns.size());
    if (!run_until([&] { return *closed == want; }, 5000)) {
      // Leak rather than abort in ~Client: the failure is reported by the caller.
      for (Conn& c : conns) (void)c.client.release();
      ok = false;
    }
    conns.clear();
    return close() && ok;
  }
};

struct Outcome {
  int calls = 0;
  Failure failure = Failure::kNone;
  Reply reply;
  uint64_t at_ms = 0;
};
using OutcomePtr = std::shared_ptr<Outcome>;

fg::redis::Callback record(const OutcomePtr& out) {
  return [out](Failure f, Reply& r) {
    ++out->calls;
    out->failure = f;
    out->reply = std::move(r);
    out->at_ms = now_ms();
  };
}

OutcomePtr exec(Harness& h, Conn& c, std::vector<std::string> argv, uint64_t timeout_ms = 3000) {
  auto out = std::make_shared<Outcome>();
  c.client->command(std::move(argv), record(out));
  h.run_until([&] { return out->calls > 0; }, timeout_ms);
  return out;
}

Client::Options options_for(const std::string& url) {
  auto ep = fg::redis::parse_url(url);
  INFO(url << ": " << ep.message());
  REQUIRE(ep.is_ok());
  Client::Options o;
  o.endpoint = ep.value();
  o.name = "test";
  o.command_timeout_ms = 2000;
  o.connect_timeout_ms = 500;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 200;
  return o;
}

#define REQUIRE_SERVER(srv)   \
  do {                        \
    INFO((srv).error());      \
    REQUIRE((srv).ok());      \
  } while (0)

bool is_status(const Reply& r, const char* s) { return r.type == Reply::Type::kStatus && r.str == s; }

}  // namespace

TEST_CASE("parse_url accepts the documented forms", "[redis]") {
  struct Row {
    const char* url;
    bool unix_socket;
    const char* host;
    int port;
    const char* path;
    const char* password;
    int db;
  };
  const Row rows[] = {
      {"redis://127.0.0.1:6379/0", false, "127.0.0.1", 6379, "", "", 0},
      {"redis://localhost", false, "localhost", 6379, "", "", 0},
      {"redis://redis.internal:6380/", false, "redis.internal", 6380, "", "", 0},
      {"redis://:s3cret@10.0.0.5:6380/2", false, "10.0.0.5", 6380, "", "s3cret", 2},
      {"redis://default:pw@h/1", false, "h", 6379, "", "pw", 1},
      {"redis://pw@h", false, "h", 6379, "", "pw", 0},
      {"redis://:p%40ss%3Aw@h:7", false, "h", 7, "", "p@ss:w", 0},
      {"redis://[::1]:7000/3", false, "::1", 7000, "", "", 3},
      {"redis://[::1]", false, "::1", 6379, "", "", 0},
      {"REDIS://H:65535/15", false, "H", 65535, "", "", 15},
      {"unix:///tmp/redis.sock", true, "", 0, "/tmp/redis.sock", "", 0},
      {"unix:///var/run/redis/r.sock?db=4", true, "", 0, "/var/run/redis/r.sock", "", 4},
  };
  for (const Row& row : rows) {
    INFO(row.url);
    auto r = fg::redis::parse_url(row.url);
    INFO(r.message());
    REQUIRE(r.is_ok());
    CHECK(r->unix_socket == row.unix_socket);
    CHECK(r->host == row.host);
    CHECK(r->port == row.port);
    CHECK(r->path == row.path);
    CHECK(r->password == row.password);
    CHECK(r->db == row.db);
  }
}

TEST_CASE("parse_url rejects everything else", "[redis]") {
  const char* bad[] = {
      "",
      "127.0.0.1:6379",
      "http://h:6379",
      "rediss://h:6379",
      "redis://",
      "redis://:pw@",
      "redis://h:",
      "redis://h:0",
      "redis://h:65536",
      "redis://h:12a",
      "redis://h:-1",
      "redis://h/x",
      "redis://h/-1",
      "redis://h/1/2",
      "redis://h/99999999999",
      "redis://h?db=1",
      "redis://user:pw@h",
      "redis://:@h",
      "redis://:%zz@h",
      "redis://:%4@h",
      "redis://[::1",
      "redis://[::1]x",
      "unix://",
      "unix://relative.sock",
      "unix:///",
      "unix:///tmp/",
      "unix:///tmp/s?db=x",
      "unix:///tmp/s?db=",
      "unix:///tmp/s?timeout=1",
  };
  for (const char* url : bad) {
    INFO(url);
    auto r = fg::redis::parse_url(url);
    CHECK_FALSE(r.is_ok());
    CHECK_FALSE(r.message().empty());
  }
}

TEST_CASE("client round-trips SET, GET and INCR", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& c = h.add(options_for(srv.url()));
  CHECK_FALSE(c.client->connected());
  c.client->start();
  REQUIRE(h.run_until([&] { return c.up; }, 3000));
  CHECK(c.client->connected());
  CHECK(c.ups == 1);

  CHECK(is_status(exec(h, c, {"SET", "greeting", "hello"})->reply, "OK"));
  auto get = exec(h, c, {"GET", "greeting"});
  CHECK(get->failure == Failure::kNone);
  CHECK(get->reply.type == Reply::Type::kString);
  CHECK(get->reply.str == "hello");
  CHECK(exec(h, c, {"INCR", "n"})->reply.integer == 1);
  auto incr = exec(h, c, {"INCRBY", "n", "41"});
  CHECK(incr->reply.type == Reply::Type::kInteger);
  CHECK(incr->reply.integer == 42);
  CHECK(exec(h, c, {"GET", "missing"})->reply.type == Reply::Type::kNil);
  auto err = exec(h, c, {"INCR", "greeting"});
  CHECK(err->failure == Failure::kNone);
  CHECK(err->reply.is_error());
  CHECK(err->reply.str.rfind("ERR", 0) == 0);
  auto arr = exec(h, c, {"MGET", "greeting", "missing", "n"});
  REQUIRE(arr->reply.type == Reply::Type::kArray);
  REQUIRE(arr->reply.elements.size() == 3);
  CHECK(arr->reply.elements[0].str == "hello");
  CHECK(arr->reply.elements[1].type == Reply::Type::kNil);
  CHECK(arr->reply.elements[2].str == "42");
  CHECK(c.client->timeouts() == 0);
  CHECK(c.client->reconnects() == 0);
  REQUIRE(h.shutdown());
}

TEST_CASE("client connects over a unix socket and a resolved host name", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& u = h.add(options_for(std::string("unix://") + srv.socket_path() + "?db=5"));
  Conn& n = h.add(options_for(std::string("redis://localhost:") + std::to_string(srv.port())));
  u.client->start();
  n.client->start();
  REQUIRE(h.run_until([&] { return u.up && n.up; }, 3000));
  auto info = exec(h, u, {"CLIENT", "INFO"});
  REQUIRE(info->reply.type == Reply::Type::kString);
  CHECK(info->reply.str.find(" db=5 ") != std::string::npos);
  CHECK(exec(h, n, {"PING"})->reply.str == "PONG");
  REQUIRE(h.shutdown());
}

TEST_CASE("1000 pipelined commands are answered in order", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& c = h.add(options_for(srv.url()));
  c.client->start();
  REQUIRE(h.run_until([&] { return c.up; }, 3000));

  constexpr int kCount = 1000;
  std::vector<int64_t> values;
  std::vector<int> order;
  int failures = 0;
  for (int i = 0; i < kCount; ++i) {
    c.client->command({"INCR", "counter"}, [&, i](Failure f, Reply& r) {
      if (f != Failure::kNone || r.type != Reply::Type::kInteger) ++failures;
      values.push_back(r.integer);
      order.push_back(i);
    });
  }
  REQUIRE(h.run_until([&] { return values.size() == kCount; }, 5000));
  CHECK(failures == 0);
  bool in_order = true;
  for (int i = 0; i < kCount; ++i) in_order = in_order && values[i] == i + 1 && order[i] == i;
  CHECK(in_order);
  REQUIRE(h.shutdown());
}

TEST_CASE("values and keys are binary-safe", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& c = h.add(options_for(srv.url()));
  c.client->start();
  REQUIRE(h.run_until([&] { return c.up; }, 3000));

  std::string key("k\0ey\r\n", 6);
  std::string small("a\0b\r\n$3\r\n\xff\x00", 12);
  std::string big(200 * 1024, '\0');
  std::mt19937 rng(7);
  for (char& ch : big) ch = static_cast<char>(rng());
  CHECK(is_status(exec(h, c, {"SET", key, small})->reply, "OK"));
  CHECK(is_status(exec(h, c, {"SET", "big", big})->reply, "OK"));
  auto a = exec(h, c, {"GET", key});
  CHECK(a->reply.type == Reply::Type::kString);
  CHECK(a->reply.str.size() == small.size());
  CHECK(a->reply.str == small);
  auto b = exec(h, c, {"GET", "big"});
  CHECK(b->reply.str.size() == big.size());
  CHECK(b->reply.str == big);
  CHECK(exec(h, c, {"STRLEN", key})->reply.integer == 12);
  REQUIRE(h.shutdown());
}

TEST_CASE("AUTH with the right password connects, a wrong one never does", "[redis]") {
  RedisServer::Options so;
  so.requirepass = "open sesame";
  RedisServer srv(so);
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& good = h.add(options_for(std::string("redis://:open%20sesame@127.0.0.1:") + std::to_string(srv.port()) + "/2"));
  Conn& bad = h.add(options_for(std::string("redis://:wrong@127.0.0.1:") + std::to_string(srv.port())));
  Conn& none = h.add(options_for(std::string("redis://127.0.0.1:") + std::to_string(srv.port())));
  good.client->start();
  bad.client->start();
  none.client->start();
  REQUIRE(h.run_until([&] { return good.up; }, 3000));
  CHECK(is_status(exec(h, good, {"SET", "k", "v"})->reply, "OK"));
  CHECK(exec(h, good, {"GET", "k"})->reply.str == "v");

  // Several attempts with backoff; none of them may count as up.
  h.run_for(500);
  CHECK(bad.ups == 0);
  CHECK(none.ups == 0);
  CHECK_FALSE(bad.client->connected());
  CHECK(bad.client->reconnects() >= 2);
  auto refused = exec(h, bad, {"GET", "k"});
  CHECK(refused->calls == 1);
  CHECK(refused->failure == Failure::kDisconnected);
  REQUIRE(h.shutdown());
}

TEST_CASE("SELECT isolates databases", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& db3 = h.add(options_for(srv.url(3)));
  Conn& db0 = h.add(options_for(srv.url()));
  db3.client->start();
  db0.client->start();
  REQUIRE(h.run_until([&] { return db3.up && db0.up; }, 3000));
  CHECK(is_status(exec(h, db3, {"SET", "only-in-3", "x"})->reply, "OK"));
  CHECK(exec(h, db0, {"GET", "only-in-3"})->reply.type == Reply::Type::kNil);
  CHECK(exec(h, db3, {"GET", "only-in-3"})->reply.str == "x");
  CHECK(exec(h, db0, {"DBSIZE"})->reply.integer == 0);
  CHECK(exec(h, db3, {"DBSIZE"})->reply.integer == 1);
  REQUIRE(h.shutdown());
}

namespace {

OutcomePtr run_eval(Harness& h, Conn& c, Script* s, std::vector<std::string> keys, std::vector<std::string> args) {
  auto out = std::make_shared<Outcome>();
  c.client->eval(s, std::move(keys), std::move(args), record(out));
  h.run_until([&] { return out->calls > 0; }, 3000);
  return out;
}

}  // namespace

TEST_CASE("eval loads the script and returns an array", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& c = h.add(options_for(srv.url()));
  c.client->start();
  REQUIRE(h.run_until([&] { return c.up; }, 3000));

  Script script{"redis.call('SET', KEYS[1], ARGV[1]) "
                "return {KEYS[1], redis.call('GET', KEYS[1]), tonumber(ARGV[2]) + 1, false}",
                ""};
  auto r = run_eval(h, c, &script, {"lua-key"}, {"lua-value", "41"});
  REQUIRE(r->calls == 1);
  CHECK(r->failure == Failure::kNone);
  REQUIRE(r->reply.type == Reply::Type::kArray);
  REQUIRE(r->reply.elements.size() == 4);
  CHECK(r->reply.elements[0].str == "lua-key");
  CHECK(r->reply.elements[1].str == "lua-value");
  CHECK(r->reply.elements[2].type == Reply::Type::kInteger);
  CHECK(r->reply.elements[2].integer == 42);
  CHECK(r->reply.elements[3].type == Reply::Type::kNil);
  CHECK(script.sha.size() == 40);

  // Now by EVALSHA alone; and many in a pipeline.
  std::string sha = script.sha;
  int answered = 0;
  for (int i = 0; i < 100; ++i) {
    std::string key = "k";
    key.append(std::to_string(i));
    c.client->eval(&script, {key}, {"v", std::to_string(i)}, [&, i](Failure f, Reply& rep) {
      if (f == Failure::kNone && rep.type == Reply::Type::kArray && rep.elements.size() == 4 &&
          rep.elements[2].integer == i + 1) {
        ++answered;
      }
    });
  }
  REQUIRE(h.run_until([&] { return answered == 100; }, 3000));
  CHECK(script.sha == sha);

  Script broken{"return {", ""};
  auto e = run_eval(h, c, &broken, {}, {});
  CHECK(e->calls == 1);
  CHECK(e->failure == Failure::kNone);
  CHECK(e->reply.is_error());
  h.run_for(20);
  CHECK(e->calls == 1);
  REQUIRE(h.shutdown());
}

TEST_CASE("eval recovers from NOSCRIPT after SCRIPT FLUSH", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& c = h.add(options_for(srv.url()));
  c.client->start();
  REQUIRE(h.run_until([&] { return c.up; }, 3000));

  Script script{"return tonumber(ARGV[1]) * 2", ""};
  CHECK(run_eval(h, c, &script, {}, {"21"})->reply.integer == 42);
  REQUIRE(script.sha.size() == 40);
  CHECK(is_status(exec(h, c, {"SCRIPT", "FLUSH"})->reply, "OK"));
  auto exists = exec(h, c, {"SCRIPT", "EXISTS", script.sha});
  REQUIRE(exists->reply.elements.size() == 1);
  CHECK(exists->reply.elements[0].integer == 0);

  // Two evals in flight both hit NOSCRIPT and both retry.
  auto a = std::make_shared<Outcome>();
  auto b = std::make_shared<Outcome>();
  c.client->eval(&script, {}, {"5"}, record(a));
  c.client->eval(&script, {}, {"6"}, record(b));
  REQUIRE(h.run_until([&] { return a->calls && b->calls; }, 3000));
  CHECK(a->failure == Failure::kNone);
  CHECK(a->reply.integer == 10);
  CHECK(b->reply.integer == 12);

  // A stale sha (e.g. from another server) is corrected the same way.
  Script stale{"return 'fresh'", std::string(40, '0')};
  auto s = run_eval(h, c, &stale, {}, {});
  CHECK(s->reply.str == "fresh");
  CHECK(stale.sha != std::string(40, '0'));
  h.run_for(20);
  CHECK(a->calls == 1);
  CHECK(b->calls == 1);
  CHECK(s->calls == 1);
  REQUIRE(h.shutdown());
}

TEST_CASE("the string_view overloads send the same commands, keep eval arguments for NOSCRIPT", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& c = h.add(options_for(srv.url()));
  c.client->start();
  REQUIRE(h.run_until([&] { return c.up; }, 3000));

  // Binary-safe, and the views may die right after the call.
  auto set = std::make_shared<Outcome>();
  {
    std::string key = "view-key";
    std::string value("a\0b\r\n", 5);
    std::string_view argv[] = {"SET", key, value};
    c.client->command_view(argv, record(set));
  }
  REQUIRE(h.run_until([&] { return set->calls == 1; }, 3000));
  CHECK(is_status(set->reply, "OK"));
  CHECK(exec(h, c, {"GET", "view-key"})->reply.str == std::string("a\0b\r\n", 5));

  Script script{"return {KEYS[1], ARGV[1], ARGV[2], #KEYS, #ARGV}", ""};
  auto first = std::make_shared<Outcome>();
  {
    std::string key = "k1";
    std::string_view keys[] = {key};
    std::string_view args[] = {"x", ""};
    c.client->eval_view(&script, keys, args, record(first));
  }
  REQUIRE(h.run_until([&] { return first->calls == 1; }, 3000));
  REQUIRE(first->reply.elements.size() == 5);
  CHECK(first->reply.elements[0].str == "k1");
  CHECK(first->reply.elements[1].str == "x");
  CHECK(first->reply.elements[2].str == "");
  CHECK(first->reply.elements[3].integer == 1);
  CHECK(first->reply.elements[4].integer == 2);

  // After SCRIPT FLUSH the EVALSHA is sent again from the kept copy.
  CHECK(is_status(exec(h, c, {"SCRIPT", "FLUSH"})->reply, "OK"));
  auto again = std::make_shared<Outcome>();
  {
    std::string key = "k2";
    std::string arg = "y";
    std::string_view keys[] = {key};
    std::string_view args[] = {arg, "z"};
    c.client->eval_view(&script, keys, args, record(again));
    key.assign("zz");
    arg.assign("zz");
  }
  REQUIRE(h.run_until([&] { return again->calls == 1; }, 3000));
  REQUIRE(again->reply.elements.size() == 5);
  CHECK(again->reply.elements[0].str == "k2");
  CHECK(again->reply.elements[1].str == "y");
  CHECK(again->reply.elements[2].str == "z");

  // More arguments than the inline table holds go the vector way.
  std::vector<std::string> many;
  for (int i = 0; i < 20; ++i) many.push_back("m" + std::to_string(i));
  std::vector<std::string_view> views{"RPUSH", "view-list"};
  for (const auto& m : many) views.push_back(m);
  auto push = std::make_shared<Outcome>();
  c.client->command_view(views, record(push));
  REQUIRE(h.run_until([&] { return push->calls == 1; }, 3000));
  CHECK(push->reply.integer == 20);
  REQUIRE(h.shutdown());
}

TEST_CASE("a stopped server times commands out, then the client reconnects", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Client::Options o = options_for(srv.url());
  o.command_timeout_ms = 100;
  o.connect_timeout_ms = 200;
  Conn& c = h.add(o);
  c.client->start();
  REQUIRE(h.run_until([&] { return c.up; }, 3000));
  CHECK(is_status(exec(h, c, {"SET", "k", "before"})->reply, "OK"));

  REQUIRE(srv.pause());
  std::vector<OutcomePtr> outs;
  uint64_t t0 = now_ms();
  for (int i = 0; i < 3; ++i) {
    outs.push_back(std::make_shared<Outcome>());
    c.client->command({"GET", "k"}, record(outs.back()));
  }
  REQUIRE(h.run_until([&] { return outs[2]->calls > 0; }, 2000));
  for (const OutcomePtr& out : outs) {
    CHECK(out->calls == 1);
    CHECK(out->failure == Failure::kTimeout);
    CHECK(out->reply.type == Reply::Type::kNil);
    CHECK(out->at_ms - t0 >= 95);
    CHECK(out->at_ms - t0 <= 180);
  }
  CHECK(c.client->timeouts() == 1);
  CHECK(c.downs == 1);
  CHECK_FALSE(c.client->connected());

  // Attempts while stopped connect at the TCP level but never get their PING answered.
  h.run_for(300);
  CHECK(c.ups == 1);
  REQUIRE(srv.resume());
  REQUIRE(h.run_until([&] { return c.up; }, 3000));
  CHECK(c.ups == 2);
  CHECK(c.client->reconnects() >= 1);
  auto after = exec(h, c, {"GET", "k"});
  CHECK(after->failure == Failure::kNone);
  CHECK(after->reply.str == "before");
  CHECK(c.client->timeouts() == 1);
  for (const OutcomePtr& out : outs) CHECK(out->calls == 1);
  REQUIRE(h.shutdown());
}

TEST_CASE("a killed server fails commands in flight and the client reconnects after a restart", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Client::Options o = options_for(srv.url());
  o.command_timeout_ms = 5000;
  Conn& c = h.add(o);
  c.client->start();
  REQUIRE(h.run_until([&] { return c.up; }, 3000));

  // BLPOP is certainly still in flight when the server dies.
  auto blocked = std::make_shared<Outcome>();
  c.client->command({"BLPOP", "empty-list", "10"}, record(blocked));
  h.run_for(50);
  REQUIRE(blocked->calls == 0);
  uint64_t t0 = now_ms();
  REQUIRE(srv.kill());
  REQUIRE(h.run_until([&] { return blocked->calls > 0; }, 2000));
  CHECK(blocked->failure == Failure::kDisconnected);
  CHECK(blocked->at_ms - t0 < 1000);
  CHECK(c.downs == 1);
  CHECK_FALSE(c.client->connected());

  h.run_for(200);  // a few refused attempts
  REQUIRE(srv.restart());
  REQUIRE(h.run_until([&] { return c.up; }, 5000));
  CHECK(c.ups == 2);
  CHECK(c.downs == 1);
  CHECK(c.client->reconnects() >= 1);
  CHECK(c.client->timeouts() == 0);
  CHECK(is_status(exec(h, c, {"SET", "k", "after"})->reply, "OK"));
  CHECK(blocked->calls == 1);
  REQUIRE(h.shutdown());
}

TEST_CASE("commands while down fail fast, never inside the call", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Client::Options o = options_for(srv.url());
  o.command_timeout_ms = 2000;
  Conn& c = h.add(o);

  // Not started yet: down.
  bool returned = false;
  bool reentrant = false;
  auto early = std::make_shared<Outcome>();
  c.client->command({"PING"}, [&, early](Failure f, Reply& r) {
    reentrant = !returned;
    record(early)(f, r);
  });
  returned = true;
  CHECK(early->calls == 0);
  h.run_until([&] { return early->calls > 0; }, 1000);
  CHECK(early->calls == 1);
  CHECK(early->failure == Failure::kDisconnected);
  CHECK_FALSE(reentrant);

  c.client->start();
  REQUIRE(h.run_until([&] { return c.up; }, 3000));
  REQUIRE(srv.kill());
  REQUIRE(h.run_until([&] { return c.downs == 1; }, 2000));

  // Both kinds of call, and a caller that retries from its callback.
  Script script{"return 1", ""};
  auto cmd = std::make_shared<Outcome>();
  auto ev = std::make_shared<Outcome>();
  int retries = 0;
  std::function<void(Failure, Reply&)> retry = [&](Failure f, Reply&) {
    if (f == Failure::kDisconnected && ++retries < 5) c.client->command({"PING"}, retry);
  };
  uint64_t t0 = now_ms();
  returned = false;
  c.client->command({"GET", "k"}, [&, cmd](Failure f, Reply& r) {
    reentrant = reentrant || !returned;
    record(cmd)(f, r);
  });
  c.client->eval(&script, {}, {}, record(ev));
  c.client->command({"PING"}, retry);
  returned = true;
  REQUIRE(h.run_until([&] { return cmd->calls && ev->calls && retries == 5; }, 1000));
  CHECK_FALSE(reentrant);
  CHECK(cmd->failure == Failure::kDisconnected);
  CHECK(ev->failure == Failure::kDisconnected);
  CHECK(cmd->at_ms - t0 < 100);
  CHECK(ev->at_ms - t0 < 100);
  CHECK(c.client->timeouts() == 0);
  REQUIRE(h.shutdown());
}

TEST_CASE("close fails pending commands once and the loop closes cleanly", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& c = h.add(options_for(srv.url()));
  c.client->start();
  REQUIRE(h.run_until([&] { return c.up; }, 3000));
  REQUIRE(srv.pause());

  std::vector<int> calls(50, 0);
  int disconnected = 0;
  for (int i = 0; i < 50; ++i) {
    c.client->command({"INCR", "n"}, [&, i](Failure f, Reply&) {
      ++calls[i];
      if (f == Failure::kDisconnected) ++disconnected;
    });
  }
  Script script{"return 1", ""};
  auto ev = std::make_shared<Outcome>();
  c.client->eval(&script, {}, {}, record(ev));
  h.run_for(20);  // written, unanswered

  int closed = 0;
  c.client->close([&] { ++closed; });
  CHECK(disconnected == 50);
  CHECK(ev->calls == 1);
  CHECK(ev->failure == Failure::kDisconnected);
  c.client->close([&] { closed += 10; });  // idempotent; its on_closed runs too
  auto late = std::make_shared<Outcome>();
  c.client->command({"PING"}, record(late));
  CHECK(late->calls == 1);
  CHECK(late->failure == Failure::kDisconnected);
  CHECK_FALSE(c.client->connected());

  REQUIRE(h.run_until([&] { return closed > 0; }, 2000));
  h.run_for(20);
  CHECK(closed == 11);
  bool once = true;
  for (int n : calls) once = once && n == 1;
  CHECK(once);
  CHECK(ev->calls == 1);
  REQUIRE(srv.resume());
  REQUIRE(h.shutdown());
}

TEST_CASE("close from inside a reply callback and while connecting", "[redis]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& c = h.add(options_for(srv.url()));
  c.client->start();
  REQUIRE(h.run_until([&] { return c.up; }, 3000));

  // The first reply closes the client; the nine behind it are failed by that close().
  std::vector<int> calls(10, 0);
  std::vector<Failure> failures(10, Failure::kNone);
  int closed = 0;
  for (int i = 0; i < 10; ++i) {
    c.client->command({"INCR", "n"}, [&, i](Failure f, Reply&) {
      ++calls[i];
      failures[i] = f;
      if (i == 0) c.client->close([&] { ++closed; });
    });
  }
  REQUIRE(h.run_until([&] { return closed > 0; }, 3000));
  CHECK(failures[0] == Failure::kNone);
  for (int i = 0; i < 10; ++i) CHECK(calls[i] == 1);
  for (int i = 1; i < 10; ++i) CHECK(failures[i] == Failure::kDisconnected);

  // Closed while the handshake waits on a stopped server, and one never started.
  REQUIRE(srv.pause());
  Conn& pending = h.add(options_for(srv.url()));
  pending.client->start();
  h.run_for(30);
  Conn& idle = h.add(options_for(srv.url()));
  (void)idle;
  // on_state(true) closing the client from inside the handshake reply.
  REQUIRE(srv.resume());
  Client::Options o = options_for(srv.url());
  Client* self_closing = nullptr;
  int self_closed = 0;
  o.on_state = [&](bool up) {
    if (up) self_closing->close([&] { ++self_closed; });
  };
  auto sc = std::make_unique<Client>(&h.loop, o);
  self_closing = sc.get();
  sc->start();
  REQUIRE(h.run_until([&] { return self_closed == 1; }, 3000));
  sc.reset();
  REQUIRE(h.shutdown());
}

// ---------------------------------------------------------------------------------
// Publish/subscribe

namespace {

// What a subscriber saw, in order.
struct Inbox {
  std::vector<std::pair<std::string, std::string>> messages;
  int resubscribed = 0;

  std::function<void(std::string_view, std::string_view)> on_message() {
    return [this](std::string_view ch, std::string_view payload) {
      messages.emplace_back(std::string(ch), std::string(payload));
    };
  }
  std::function<void()> on_resubscribed() {
    return [this] { ++resubscribed; };
  }
};

int64_t publish(Harness& h, Conn& pub, const std::string& channel, const std::string& payload) {
  auto r = exec(h, pub, {"PUBLISH", channel, payload});
  INFO("PUBLISH " << channel);
  REQUIRE(r->calls == 1);
  REQUIRE(r->failure == Failure::kNone);
  REQUIRE(r->reply.type == Reply::Type::kInteger);
  return r->reply.integer;
}

}  // namespace

TEST_CASE("a subscriber receives messages published by another client", "[redis][pubsub]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Client::Options so = options_for(srv.url());
  so.command_timeout_ms = 100;  // messages have no deadline; only the confirmation has
  Conn& sub = h.add(so);
  Conn& psub = h.add(so);
  Conn& pub = h.add(options_for(srv.url()));

  // Subscribed before start(); the duplicate is subscribed once.
  const std::string bin_channel("t\0ck\r\n\xff", 7);
  Inbox in;
  sub.client->subscribe({"tickets:1", bin_channel, "tickets:3", "tickets:1"}, in.on_message(), in.on_resubscribed());
  CHECK_FALSE(sub.client->subscribed());
  sub.client->start();
  psub.client->start();
  pub.client->start();
  REQUIRE(h.run_until([&] { return in.resubscribed == 1 && psub.up && pub.up; }, 3000));
  CHECK(sub.client->subscribed());
  CHECK_FALSE(psub.client->subscribed());
  CHECK_FALSE(pub.client->subscribed());

  // Subscribed after start(), while up, by pattern.
  Inbox pin;
  psub.client->psubscribe({"tickets:*"}, pin.on_message(), pin.on_resubscribed());
  REQUIRE(h.run_until([&] { return pin.resubscribed == 1; }, 3000));
  CHECK(psub.client->subscribed());

  // Idle for several command timeouts: nothing times out, nothing reconnects.
  h.run_for(350);
  CHECK(sub.client->timeouts() == 0);
  CHECK(sub.client->reconnects() == 0);
  CHECK(psub.client->timeouts() == 0);
  CHECK(sub.client->subscribed());

  std::string small("a\0b\r\n$3\r\n\xff\x00", 12);
  std::string big(100 * 1024, '\0');
  std::mt19937 rng(11);
  for (char& ch : big) ch = static_cast<char>(rng());
  CHECK(publish(h, pub, "tickets:1", "first") == 2);
  CHECK(publish(h, pub, bin_channel, small) == 1);
  CHECK(publish(h, pub, "tickets:3", big) == 2);
  CHECK(publish(h, pub, "tickets:2", "only the pattern") == 1);
  CHECK(publish(h, pub, "elsewhere", "nobody") == 0);
  CHECK(publish(h, pub, "tickets:1", "") == 2);
  REQUIRE(h.run_until([&] { return in.messages.size() == 4 && pin.messages.size() == 4; }, 3000));
  h.run_for(30);

  REQUIRE(in.messages.size() == 4);
  CHECK(in.messages[0] == std::make_pair(std::string("tickets:1"), std::string("first")));
  CHECK(in.messages[1].first == bin_channel);
  CHECK(in.messages[1].second == small);
  CHECK(in.messages[2].first == "tickets:3");
  CHECK(in.messages[2].second.size() == big.size());
  CHECK(in.messages[2].second == big);
  CHECK(in.messages[3] == std::make_pair(std::string("tickets:1"), std::string()));
  REQUIRE(pin.messages.size() == 4);
  CHECK(pin.messages[0].first == "tickets:1");
  CHECK(pin.messages[1].first == "tickets:3");
  CHECK(pin.messages[1].second == big);
  CHECK(pin.messages[2] == std::make_pair(std::string("tickets:2"), std::string("only the pattern")));
  CHECK(pin.messages[3].first == "tickets:1");
  CHECK(in.resubscribed == 1);
  CHECK(pin.resubscribed == 1);

  // A second subscribe() is ignored.
  Inbox other;
  sub.client->subscribe({"tickets:9"}, other.on_message(), other.on_resubscribed());
  CHECK(publish(h, pub, "tickets:9", "x") == 1);  // the pattern subscriber only
  h.run_for(30);
  CHECK(other.messages.empty());
  CHECK(other.resubscribed == 0);
  CHECK(sub.client->timeouts() == 0);
  REQUIRE(h.shutdown());
}

TEST_CASE("a subscriber survives a server restart and subscribes again", "[redis][pubsub]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& sub = h.add(options_for(srv.url()));
  Conn& pub = h.add(options_for(srv.url()));
  Inbox in;
  sub.client->start();
  pub.client->start();
  sub.client->subscribe({"wake:a", "wake:b"}, in.on_message(), in.on_resubscribed());
  REQUIRE(h.run_until([&] { return in.resubscribed == 1 && pub.up; }, 3000));
  CHECK(publish(h, pub, "wake:a", "before") == 1);
  REQUIRE(h.run_until([&] { return in.messages.size() == 1; }, 3000));

  REQUIRE(srv.kill());
  REQUIRE(h.run_until([&] { return sub.downs == 1 && pub.downs == 1; }, 2000));
  CHECK_FALSE(sub.client->subscribed());
  CHECK_FALSE(sub.client->connected());
  h.run_for(200);  // a few refused attempts
  CHECK(in.resubscribed == 1);

  REQUIRE(srv.restart());
  REQUIRE(h.run_until([&] { return in.resubscribed == 2 && pub.up; }, 5000));
  CHECK(sub.client->subscribed());
  CHECK(sub.ups == 2);
  CHECK(sub.client->reconnects() >= 1);
  CHECK(sub.client->timeouts() == 0);
  CHECK(publish(h, pub, "wake:b", "after") == 1);
  CHECK(publish(h, pub, "wake:a", "again") == 1);
  REQUIRE(h.run_until([&] { return in.messages.size() == 3; }, 3000));
  CHECK(in.messages[0].second == "before");
  CHECK(in.messages[1] == std::make_pair(std::string("wake:b"), std::string("after")));
  CHECK(in.messages[2] == std::make_pair(std::string("wake:a"), std::string("again")));
  h.run_for(20);
  CHECK(in.messages.size() == 3);
  CHECK(in.resubscribed == 2);
  REQUIRE(h.shutdown());
}

TEST_CASE("an unconfirmed SUBSCRIBE times out and is sent again after reconnecting", "[redis][pubsub]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Client::Options so = options_for(srv.url());
  so.command_timeout_ms = 100;
  so.connect_timeout_ms = 200;
  Conn& sub = h.add(so);
  Conn& pub = h.add(options_for(srv.url()));
  sub.client->start();
  pub.client->start();
  REQUIRE(h.run_until([&] { return sub.up && pub.up; }, 3000));

  // Up but stopped: the confirmation never comes.
  REQUIRE(srv.pause());
  Inbox in;
  uint64_t t0 = now_ms();
  sub.client->subscribe({"late"}, in.on_message(), in.on_resubscribed());
  REQUIRE(h.run_until([&] { return sub.downs == 1; }, 2000));
  CHECK(now_ms() - t0 >= 95);
  CHECK(now_ms() - t0 <= 250);
  CHECK(sub.client->timeouts() == 1);
  CHECK(in.resubscribed == 0);
  CHECK_FALSE(sub.client->subscribed());

  REQUIRE(srv.resume());
  REQUIRE(h.run_until([&] { return in.resubscribed == 1 && pub.up; }, 5000));
  CHECK(sub.client->subscribed());
  CHECK(sub.client->timeouts() == 1);
  CHECK(publish(h, pub, "late", "made it") == 1);
  REQUIRE(h.run_until([&] { return in.messages.size() == 1; }, 3000));
  CHECK(in.messages[0].second == "made it");
  REQUIRE(h.shutdown());
}

TEST_CASE("a SUBSCRIBE refused by an ACL is retried until it is allowed", "[redis][pubsub]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Client::Options so = options_for(srv.url());
  so.command_timeout_ms = 100;
  Conn& sub = h.add(so);
  Conn& admin = h.add(options_for(srv.url()));
  admin.client->start();
  REQUIRE(h.run_until([&] { return admin.up; }, 3000));
  CHECK(is_status(exec(h, admin, {"ACL", "SETUSER", "default", "resetchannels"})->reply, "OK"));

  Inbox in;
  sub.client->subscribe({"guarded"}, in.on_message(), in.on_resubscribed());
  sub.client->start();
  REQUIRE(h.run_until([&] { return sub.downs >= 2; }, 3000));
  CHECK(in.resubscribed == 0);
  CHECK_FALSE(sub.client->subscribed());
  // The backoff keeps growing although every attempt gets through the handshake: with
  // 20..200 ms it allows about 10 attempts in 600 ms, staying at 20 ms about 50.
  int downs = sub.downs;
  h.run_for(600);
  CHECK(sub.downs - downs < 25);
  CHECK(in.resubscribed == 0);

  CHECK(is_status(exec(h, admin, {"ACL", "SETUSER", "default", "allchannels"})->reply, "OK"));
  REQUIRE(h.run_until([&] { return in.resubscribed == 1; }, 3000));
  CHECK(publish(h, admin, "guarded", "open") == 1);
  REQUIRE(h.run_until([&] { return in.messages.size() == 1; }, 3000));
  REQUIRE(h.shutdown());
}

TEST_CASE("closing a subscriber is clean", "[redis][pubsub]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& pub = h.add(options_for(srv.url()));
  pub.client->start();
  REQUIRE(h.run_until([&] { return pub.up; }, 3000));

  SECTION("from inside on_message, with more messages already buffered") {
    Client::Options so = options_for(srv.url());
    Client* self = nullptr;
    int received = 0;
    int resubscribed = 0;
    int closed = 0;
    auto token = std::make_shared<int>(0);
    long token_uses_at_close = -1;
    std::weak_ptr<int> weak = token;
    auto sc = std::make_unique<Client>(&h.loop, so);
    self = sc.get();
    self->subscribe(
        {"burst"},
        [&, token](std::string_view, std::string_view) {
          if (++received == 10) {
            self->close([&] {
              ++closed;
              token_uses_at_close = weak.use_count();
            });
          }
        },
        [&] { ++resubscribed; });
    token.reset();
    self->start();
    REQUIRE(h.run_until([&] { return resubscribed == 1; }, 3000));
    // A pipeline: the subscriber reads many messages in one go.
    int answered = 0;
    for (int i = 0; i < 100; ++i) {
      pub.client->command({"PUBLISH", "burst", std::to_string(i)}, [&](Failure, Reply&) { ++answered; });
    }
    REQUIRE(h.run_until([&] { return closed == 1 && answered == 100; }, 3000));
    h.run_for(30);
    CHECK(received == 10);
    CHECK(resubscribed == 1);
    CHECK(closed == 1);
    CHECK(token_uses_at_close == 0);  // the handlers were released before on_closed
    CHECK_FALSE(self->subscribed());
    sc.reset();
  }

  SECTION("with messages in flight, and with the confirmation pending") {
    Inbox in;
    Conn& sub = h.add(options_for(srv.url()));
    sub.client->subscribe({"ch"}, in.on_message(), in.on_resubscribed());
    sub.client->start();
    REQUIRE(h.run_until([&] { return in.resubscribed == 1; }, 3000));
    int answered = 0;
    for (int i = 0; i < 20; ++i) {
      pub.client->command({"PUBLISH", "ch", "m"}, [&](Failure, Reply&) { ++answered; });
    }
    REQUIRE(h.run_until([&] { return answered == 20; }, 3000));
    // Published and not yet read by the subscriber (same loop: nothing ran since).
    size_t seen = in.messages.size();
    int closed = 0;
    sub.client->close([&] { ++closed; });
    REQUIRE(h.run_until([&] { return closed == 1; }, 3000));
    h.run_for(30);
    CHECK(in.messages.size() == seen);
    CHECK(in.resubscribed == 1);

    // Closed once up, while its SUBSCRIBE is unanswered.
    Inbox in2;
    Conn& sub2 = h.add(options_for(srv.url()));
    sub2.client->subscribe({"ch"}, in2.on_message(), in2.on_resubscribed());
    sub2.client->start();
    REQUIRE(h.run_until([&] { return sub2.up; }, 3000));
    sub2.client->close();
    CHECK_FALSE(sub2.client->subscribed());
    // The SUBSCRIBE may have left with the turn that connected (commands are written
    // at the end of their loop turn), so the server can count the subscriber until it
    // reads the close; it must stop counting it, and nothing may be delivered.
    int64_t receivers = -1;
    for (int i = 0; i < 100 && receivers != 0; ++i) {
      receivers = publish(h, pub, "ch", "late");
      if (receivers != 0) h.run_for(10);
    }
    CHECK(receivers == 0);
    h.run_for(30);
    CHECK(in2.resubscribed == 0);
    CHECK(in2.messages.empty());
    // subscribe() after close() does nothing.
    sub2.client->subscribe({"ch"}, in2.on_message(), in2.on_resubscribed());
    h.run_for(20);
    CHECK(in2.resubscribed == 0);
  }
  REQUIRE(h.shutdown());
}

TEST_CASE("command() and eval() on a subscriber fail with kDisconnected", "[redis][pubsub]") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  Harness h;
  Conn& sub = h.add(options_for(srv.url()));
  Inbox in;
  sub.client->subscribe({"ch"}, in.on_message(), in.on_resubscribed());
  sub.client->start();
  REQUIRE(h.run_until([&] { return in.resubscribed == 1; }, 3000));

  bool returned = false;
  bool reentrant = false;
  auto cmd = std::make_shared<Outcome>();
  auto pub = std::make_shared<Outcome>();
  auto ev = std::make_shared<Outcome>();
  Script script{"return 1", ""};
  sub.client->command({"GET", "k"}, [&, cmd](Failure f, Reply& r) {
    reentrant = !returned;
    record(cmd)(f, r);
  });
  sub.client->command({"PUBLISH", "ch", "self"}, record(pub));
  sub.client->eval(&script, {}, {}, record(ev));
  returned = true;
  CHECK(cmd->calls == 0);
  REQUIRE(h.run_until([&] { return cmd->calls && pub->calls && ev->calls; }, 1000));
  CHECK_FALSE(reentrant);
  CHECK(cmd->failure == Failure::kDisconnected);
  CHECK(pub->failure == Failure::kDisconnected);
  CHECK(ev->failure == Failure::kDisconnected);
  CHECK(script.sha.empty());
  // The subscription is unaffected.
  h.run_for(20);
  CHECK(sub.client->subscribed());
  CHECK(sub.downs == 0);
  CHECK(in.messages.empty());
  CHECK(cmd->calls == 1);
  REQUIRE(h.shutdown());
}

// Commands are written at the end of their loop turn. One issued by a timer on an
// otherwise idle loop must still leave before the loop blocks in epoll: nothing else
// would wake it before the command's deadline, and the command would time out.
TEST_CASE("a command issued by a timer on an idle loop is sent at once") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  Client::Options o = options_for(srv.url());
  o.command_timeout_ms = 5000;
  auto client = std::make_unique<Client>(&loop, o);
  client->start();
  for (int i = 0; i < 500 && !client->connected(); ++i) uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(2);
  REQUIRE(client->connected());

  struct State {
    Client* client;
    uint64_t sent_ms = 0;
    uint64_t answered_ms = 0;
    Failure failure = Failure::kDisconnected;
  } st{client.get()};
  uv_timer_t timer;
  uv_timer_init(&loop, &timer);
  timer.data = &st;
  uv_timer_start(
      &timer,
      [](uv_timer_t* t) {
        State* s = static_cast<State*>(t->data);
        s->sent_ms = uv_now(t->loop);
        s->client->command({"PING"}, [s, loop = t->loop](Failure f, Reply&) {
          s->failure = f;
          s->answered_ms = uv_now(loop);
          uv_stop(loop);
        });
      },
      10, 0);
  // Only the client's own handles and this timer keep the loop alive: the loop blocks
  // in epoll until the reply comes (or, if the PING was not sent, until its deadline).
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(st.failure == Failure::kNone);
  CHECK(st.answered_ms - st.sent_ms < 1000);

  bool closed = false;
  client->close([&closed] { closed = true; });
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  for (int i = 0; i < 500 && !closed; ++i) uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(2);
  REQUIRE(closed);
  client.reset();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

// A deadline counts from when the command is issued, not from the loop's cached time:
// a caller that kept the loop from running for longer than the command timeout (as a
// test thread does between steps) must still get the answer.
TEST_CASE("a command issued after the loop sat still gets its whole timeout") {
  RedisServer srv;
  REQUIRE_SERVER(srv);
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  Client::Options o = options_for(srv.url());
  o.command_timeout_ms = 200;
  auto client = std::make_unique<Client>(&loop, o);
  client->start();
  for (int i = 0; i < 500 && !client->connected(); ++i) uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(2);
  REQUIRE(client->connected());

  uv_sleep(400);  // the loop's cached time is now 400 ms behind the clock
  Failure failure = Failure::kDisconnected;
  bool answered = false;
  client->command({"PING"}, [&](Failure f, Reply&) {
    failure = f;
    answered = true;
  });
  for (int i = 0; i < 500 && !answered; ++i) uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(1);
  REQUIRE(answered);
  CHECK(failure == Failure::kNone);
  CHECK(client->timeouts() == 0);

  bool closed = false;
  client->close([&closed] { closed = true; });
  for (int i = 0; i < 500 && !closed; ++i) uv_run(&loop, UV_RUN_NOWAIT), uv_sleep(2);
  REQUIRE(closed);
  client.reset();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}
