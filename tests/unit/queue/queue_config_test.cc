// Queued routes: mode, queue, ack, client_max_tickets, on_failure_webhook,
// server.tickets_path and the queue-related [pressure]/[redis] settings.
#include <catch2/catch.hpp>

#include <string>

#include "tests/unit/config/config_test_support.h"
#include "floodgate/config.h"

using fg::Overflow;
using namespace fg::config_test;
using Catch::Contains;
using Catch::StartsWith;

TEST_CASE("queued routes parse", "[config][queue]") {
  SECTION("overflow = \"queue\" with every queue key") {
    auto cfg = load_ok(queue_route(
        "queue = { max_depth = 5000, max_wait = \"2m\", processing_timeout = \"45s\", ticket_ttl = \"2h\", "
        "concurrency = 16 }\nclient_max_tickets = 3\nclient_key = \"header:X-User-Id\"\n"
        "on_failure_webhook = \"http://127.0.0.1:8081/api/compensate\"\n"));
    const auto& r = cfg->routes.at(0);
    CHECK(r.overflow == Overflow::kQueue);
    CHECK_FALSE(r.store_and_forward);
    CHECK(r.queued());
    CHECK(r.queue.max_depth == 5000);
    CHECK(r.queue.max_wait_ms == 2 * 60 * 1000);
    CHECK(r.queue.processing_timeout_ms == 45000);
    CHECK(r.queue.ticket_ttl_ms == 2 * 3600 * 1000);
    CHECK(r.queue.concurrency == 16);
    CHECK(r.client_max_tickets == 3);
    // client_key counts tickets too, so client_max_tickets is enough for it.
    CHECK(r.client_key.by_header);
    CHECK(r.client_key.header == "X-User-Id");
    CHECK(r.client_rate == 0);
    CHECK(r.on_failure_webhook == "http://127.0.0.1:8081/api/compensate");
  }
  SECTION("queue defaults") {
    auto cfg = load_ok(queue_route(""));
    const auto& r = cfg->routes.at(0);
    CHECK(r.queued());
    CHECK(r.queue.max_depth == 200000);
    CHECK(r.queue.max_wait_ms == 10 * 60 * 1000);
    CHECK(r.queue.processing_timeout_ms == 30000);
    CHECK(r.queue.ticket_ttl_ms == 3600 * 1000);
    CHECK(r.queue.concurrency == 64);
    CHECK(r.client_max_tickets == 0);
    CHECK(r.on_failure_webhook.empty());
    CHECK(r.ack.status == 200);
  }
  SECTION("queue as a sub-table") {
    auto cfg = load_ok(route_with("rate = 10\noverflow = \"queue\"\n\n[routes.queue]\nmax_depth = 7\n") + "[redis]\n");
    CHECK(cfg->routes.at(0).queue.max_depth == 7);
    CHECK(cfg->routes.at(0).queue.max_wait_ms == 10 * 60 * 1000);
  }
  SECTION("store_and_forward with ack") {
    auto cfg = load_ok(sf_route(
        "ack = { status = 202, body = \"OK\", content_type = \"text/plain; charset=utf-8\" }\n"
        "idempotency = { key = [\"form:out_trade_no\"] }\nqueue = { max_depth = 10 }\n"
        "client_max_tickets = 1\non_failure_webhook = \"http://hooks.internal/refund\"\n"));
    const auto& r = cfg->routes.at(0);
    CHECK(r.store_and_forward);
    CHECK(r.queued());
    CHECK(r.overflow == Overflow::kReject);  // no rate needed: every request is queued
    CHECK(r.rate == 0);
    CHECK(r.ack.status == 202);
    CHECK(r.ack.body == "OK");
    CHECK(r.ack.content_type == "text/plain; charset=utf-8");
    CHECK(r.queue.max_depth == 10);
    CHECK(r.client_max_tickets == 1);
    CHECK(r.on_failure_webhook == "http://hooks.internal:80/refund");
    CHECK(r.idempotency.enabled);
  }
  SECTION("store_and_forward defaults") {
    auto cfg = load_ok(sf_route(""));
    const auto& r = cfg->routes.at(0);
    CHECK(r.store_and_forward);
    CHECK(r.ack.status == 200);
    CHECK(r.ack.body == "success");
    CHECK(r.ack.content_type == "text/plain");
    CHECK(r.queue.max_depth == 200000);
  }
  SECTION("store_and_forward with a rate, and an empty ack body") {
    auto cfg = load_ok(sf_route("rate = 50\noverflow = \"queue\"\nack = { status = 204, body = \"\" }\n"));
    const auto& r = cfg->routes.at(0);
    CHECK(r.store_and_forward);
    CHECK(r.rate == 50);
    CHECK(r.ack.status == 204);
    CHECK(r.ack.body.empty());
  }
  SECTION("mode = \"forward\" is the default") {
    auto cfg = load_ok(route_with("mode = \"forward\"\n"));
    CHECK_FALSE(cfg->routes.at(0).store_and_forward);
    CHECK_FALSE(cfg->routes.at(0).queued());
  }
  SECTION("bounds are inclusive") {
    auto lo = load_ok(fast_queue_route(
        "queue = { max_depth = 1, max_wait = \"1ms\", processing_timeout = \"100ms\", ticket_ttl = \"1s\", "
        "concurrency = 1 }\nclient_max_tickets = 1\n"));
    const auto& q = lo->routes.at(0).queue;
    CHECK(q.max_depth == 1);
    CHECK(q.max_wait_ms == 1);
    CHECK(q.processing_timeout_ms == 100);
    CHECK(q.ticket_ttl_ms == 1000);
    CHECK(q.concurrency == 1);
    auto hi = load_ok(queue_route(
        "queue = { max_depth = 100000000, max_wait = \"7d\", processing_timeout = \"1d\", ticket_ttl = \"30d\", "
        "concurrency = 10000 }\n"));
    const auto& h = hi->routes.at(0).queue;
    CHECK(h.max_depth == 100000000);
    CHECK(h.max_wait_ms == 7ULL * 24 * 3600 * 1000);
    CHECK(h.processing_timeout_ms == 24ULL * 3600 * 1000);
    CHECK(h.ticket_ttl_ms == 30ULL * 24 * 3600 * 1000);
    CHECK(h.concurrency == 10000);
  }
}

TEST_CASE("queued routes need a [redis] table", "[config][queue]") {
  CHECK(load_error(route_with("rate = 10\noverflow = \"queue\"\n")) ==
        "test.toml:12:12: routes[0].overflow: the ticket queue lives in Redis: add a [redis] table "
        "(url = \"redis://host:port/db\")");
  CHECK(load_error(route_with("mode = \"store_and_forward\"\n")) ==
        "test.toml:11:8: routes[0].mode: the ticket queue lives in Redis: add a [redis] table "
        "(url = \"redis://host:port/db\")");
  // Together with the idempotency table of the same route: both are named.
  const std::string msg =
      load_error(route_with("mode = \"store_and_forward\"\nidempotency = {}\nqueue = { max_depth = 5 }\n"));
  CHECK_THAT(msg, Contains("test.toml:12:15: routes[0].idempotency: idempotency keys live in Redis"));
  CHECK_THAT(msg, Contains("\ntest.toml:11:8: routes[0].mode: the ticket queue lives in Redis"));
  // A route of the file that is broken otherwise still gets the message.
  const std::string two = load_error(with_routes(
      "[[routes]]\nname = \"a\"\nmatch = { path = \"/a\" }\nupstream = \"nope\"\nrate = 5\noverflow = \"queue\"\n"));
  CHECK_THAT(two, Contains("test.toml:10:12: routes[0].upstream: unknown upstream \"nope\""));
  CHECK_THAT(two, Contains("\ntest.toml:12:12: routes[0].overflow: the ticket queue lives in Redis"));
}

TEST_CASE("mode and overflow of queued routes are validated", "[config][queue]") {
  CHECK(load_error(route_with("mode = \"queue\"\n")) ==
        "test.toml:11:8: routes[0].mode: expected \"forward\" or \"store_and_forward\", got \"queue\"");
  CHECK(load_error(route_with("mode = true\n")) == "test.toml:11:8: routes[0].mode: expected a string, got boolean");
  CHECK(load_error(sf_route("rate = 10\noverflow = \"reject\"\n")) ==
        "test.toml:13:12: routes[0].overflow: a store_and_forward route queues every request; overflow = "
        "\"reject\" would never apply (leave overflow out)");
  CHECK_THAT(load_error(sf_route("rate = 10\noverflow = \"degrade\"\n")),
             StartsWith("test.toml:13:12: routes[0].overflow: a store_and_forward route queues every request"));
  // overflow = "queue" still needs a rate; its queue settings are not reported on top.
  CHECK(load_error(route_with("overflow = \"queue\"\nqueue = { max_depth = 5 }\nclient_max_tickets = 2\n") +
                   "[redis]\n") ==
        "test.toml:11:12: routes[0].overflow: only valid together with rate (overflow decides what happens beyond "
        "the route budget)");
}

TEST_CASE("queue keys only on queued routes", "[config][queue]") {
  const std::string only =
      "only valid on a queued route (overflow = \"queue\", on_unavailable = \"queue\" or "
      "mode = \"store_and_forward\")";
  CHECK(load_error(route_with("queue = { max_depth = 5 }\n")) == "test.toml:11:9: routes[0].queue: " + only);
  CHECK(load_error(route_with("rate = 10\noverflow = \"reject\"\nqueue = { max_depth = 5 }\n")) ==
        "test.toml:13:9: routes[0].queue: " + only);
  CHECK(load_error(route_with("client_max_tickets = 3\n")) == "test.toml:11:22: routes[0].client_max_tickets: " + only);
  CHECK(load_error(route_with("on_failure_webhook = \"http://127.0.0.1:8081/hook\"\n")) ==
        "test.toml:11:22: routes[0].on_failure_webhook: " + only);
  CHECK(load_error(route_with("mode = \"forward\"\nqueue = {}\n")) == "test.toml:12:9: routes[0].queue: " + only);
  SECTION("ack needs store_and_forward") {
    CHECK(load_error(route_with("ack = { status = 200 }\n")) ==
          "test.toml:11:7: routes[0].ack: only valid together with mode = \"store_and_forward\"");
    CHECK(load_error(queue_route("ack = { body = \"ok\" }\n")) ==
          "test.toml:13:7: routes[0].ack: only valid together with mode = \"store_and_forward\"");
  }
  SECTION("every misplaced key is reported") {
    const std::string msg = load_error(route_with(
        "ack = {}\nqueue = {}\nclient_max_tickets = 1\non_failure_webhook = \"http://h/\"\n"));
    CHECK_THAT(msg, Contains("test.toml:11:7: routes[0].ack:"));
    CHECK_THAT(msg, Contains("\ntest.toml:12:9: routes[0].queue:"));
    CHECK_THAT(msg, Contains("\ntest.toml:13:22: routes[0].client_max_tickets:"));
    CHECK_THAT(msg, Contains("\ntest.toml:14:22: routes[0].on_failure_webhook:"));
  }
}

TEST_CASE("queue settings are type- and range-checked", "[config][queue]") {
  SECTION("max_depth") {
    CHECK(load_error(queue_route("queue = { max_depth = 0 }\n")) ==
          "test.toml:13:23: routes[0].queue.max_depth: must be between 1 and 100000000, got 0");
    CHECK(load_error(queue_route("queue = { max_depth = 100000001 }\n")) ==
          "test.toml:13:23: routes[0].queue.max_depth: must be between 1 and 100000000, got 100000001");
    CHECK(load_error(queue_route("queue = { max_depth = \"200k\" }\n")) ==
          "test.toml:13:23: routes[0].queue.max_depth: expected an integer, got string");
  }
  SECTION("max_wait") {
    CHECK(load_error(queue_route("queue = { max_wait = \"8d\" }\n")) ==
          "test.toml:13:22: routes[0].queue.max_wait: must be between 1ms and 7d, got \"8d\"");
    CHECK(load_error(queue_route("queue = { max_wait = \"0s\" }\n")) ==
          "test.toml:13:22: routes[0].queue.max_wait: must be between 1ms and 7d, got \"0s\"");
    CHECK(load_error(queue_route("queue = { max_wait = 600 }\n")) ==
          "test.toml:13:22: routes[0].queue.max_wait: expected a duration string such as \"10s\", got integer");
  }
  SECTION("processing_timeout") {
    CHECK(load_error(fast_queue_route("queue = { processing_timeout = \"99ms\" }\n")) ==
          "test.toml:15:32: routes[0].queue.processing_timeout: must be between 100ms and 1d, got \"99ms\"");
    CHECK(load_error(queue_route("queue = { processing_timeout = \"25h\" }\n")) ==
          "test.toml:13:32: routes[0].queue.processing_timeout: must be between 100ms and 1d, got \"25h\"");
  }
  SECTION("processing_timeout must outlast one delivery attempt") {
    // Default upstream: connect_timeout 1s + timeout 5s.
    CHECK(load_error(queue_route("queue = { processing_timeout = \"6s\" }\n")) ==
          "test.toml:13:32: routes[0].queue.processing_timeout: must be longer than one delivery attempt, "
          "upstreams.shop connect_timeout + timeout (6s); a delivery still waiting for the shop would be reclaimed "
          "and sent again");
    CHECK(load_ok(queue_route("queue = { processing_timeout = \"6001ms\" }\n"))->routes[0].queue.processing_timeout_ms ==
          6001);
    // The default processing_timeout (30s) against a slow upstream.
    const std::string slow = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[upstreams.shop]\nservers = [\"127.0.0.1:8081\"]\n"
                             "timeout = \"30s\"\n\n[[routes]]\nname = \"r\"\nmatch = { prefix = \"/\" }\n"
                             "upstream = \"shop\"\nmode = \"store_and_forward\"\n";
    CHECK_THAT(load_error(slow + "\n[redis]\n"),
               StartsWith("test.toml:8:1: routes[0].queue.processing_timeout: (default 30s) must be longer than one "
                          "delivery attempt, upstreams.shop connect_timeout + timeout (31s)"));
    CHECK_THAT(load_error(slow + "queue = { max_depth = 5 }\n\n[redis]\n"),
               StartsWith("test.toml:13:9: routes[0].queue.processing_timeout: (default 30s) must be longer"));
    CHECK(load_ok(slow + "queue = { processing_timeout = \"32s\" }\n\n[redis]\n")->routes[0].queue.processing_timeout_ms ==
          32000);
  }
  SECTION("ticket_ttl") {
    CHECK(load_error(queue_route("queue = { ticket_ttl = \"31d\" }\n")) ==
          "test.toml:13:24: routes[0].queue.ticket_ttl: must be between 1s and 30d, got \"31d\"");
    CHECK(load_error(queue_route("queue = { ticket_ttl = \"500ms\" }\n")) ==
          "test.toml:13:24: routes[0].queue.ticket_ttl: must be between 1s and 30d, got \"500ms\"");
  }
  SECTION("concurrency") {
    CHECK(load_error(queue_route("queue = { concurrency = 0 }\n")) ==
          "test.toml:13:25: routes[0].queue.concurrency: must be between 1 and 10000, got 0");
    CHECK(load_error(queue_route("queue = { concurrency = 10001 }\n")) ==
          "test.toml:13:25: routes[0].queue.concurrency: must be between 1 and 10000, got 10001");
  }
  SECTION("unknown keys and the table itself") {
    CHECK(load_error(queue_route("queue = { max_dept = 5 }\n")) ==
          "test.toml:13:11: routes[0].queue.max_dept: unknown key (did you mean \"max_depth\"?)");
    CHECK(load_error(queue_route("queue = 5000\n")) == "test.toml:13:9: routes[0].queue: expected a table, got integer");
  }
  SECTION("client_max_tickets") {
    CHECK(load_error(queue_route("client_max_tickets = 0\n")) ==
          "test.toml:13:22: routes[0].client_max_tickets: must be at least 1, got 0");
    CHECK(load_error(queue_route("client_max_tickets = \"3\"\n")) ==
          "test.toml:13:22: routes[0].client_max_tickets: expected an integer, got string");
  }
  SECTION("every problem is reported") {
    const std::string msg = load_error(
        queue_route("queue = { max_depth = 0, max_wait = \"forever\", concurrency = -1 }\nclient_max_tickets = -2\n"));
    CHECK_THAT(msg, Contains("routes[0].queue.max_depth: must be between"));
    CHECK_THAT(msg, Contains("\ntest.toml:13:37: routes[0].queue.max_wait: invalid duration \"forever\""));
    CHECK_THAT(msg, Contains("\ntest.toml:13:62: routes[0].queue.concurrency: must be between 1 and 10000, got -1"));
    CHECK_THAT(msg, Contains("\ntest.toml:14:22: routes[0].client_max_tickets: must be at least 1, got -2"));
  }
}

TEST_CASE("ack is validated", "[config][queue]") {
  CHECK(load_error(sf_route("ack = { status = 100 }\n")) ==
        "test.toml:12:18: routes[0].ack.status: must be between 200 and 599, got 100");
  CHECK(load_error(sf_route("ack = { status = 600 }\n")) ==
        "test.toml:12:18: routes[0].ack.status: must be between 200 and 599, got 600");
  CHECK(load_error(sf_route("ack = { status = \"200\" }\n")) ==
        "test.toml:12:18: routes[0].ack.status: expected an integer, got string");
  CHECK(load_error(sf_route("ack = { status = 204 }\n")) ==
        "test.toml:12:18: routes[0].ack.status: a 204 response cannot carry a body; set body = \"\" or use another "
        "status");
  CHECK(load_error(sf_route("ack = { body = 1 }\n")) == "test.toml:12:16: routes[0].ack.body: expected a string, got integer");
  CHECK(load_error(sf_route("ack = { content_type = \"\" }\n")) ==
        "test.toml:12:24: routes[0].ack.content_type: must not be empty");
  CHECK(load_error(sf_route("ack = { content_type = \"text/plain\\r\\nX-Evil: 1\" }\n")) ==
        "test.toml:12:24: routes[0].ack.content_type: must not contain control characters");
  CHECK(load_error(sf_route("ack = { headers = {} }\n")) == "test.toml:12:9: routes[0].ack.headers: unknown key");
  CHECK(load_error(sf_route("ack = \"success\"\n")) == "test.toml:12:7: routes[0].ack: expected a table, got string");
}

TEST_CASE("on_failure_webhook URLs", "[config][queue]") {
  SECTION("accepted forms, stored with port and path spelled out") {
    CHECK(webhook("http://127.0.0.1:8081/api/compensate") == "http://127.0.0.1:8081/api/compensate");
    CHECK(webhook("http://hooks.internal") == "http://hooks.internal:80/");
    CHECK(webhook("http://hooks.internal:9000") == "http://hooks.internal:9000/");
    CHECK(webhook("http://10.0.0.5/refund?source=floodgate") == "http://10.0.0.5:80/refund?source=floodgate");
    CHECK(webhook("http://10.0.0.5?x=1") == "http://10.0.0.5:80/?x=1");
    CHECK(webhook("http://[::1]:8081/hook") == "http://[::1]:8081/hook");
    CHECK(webhook("http://[::1]") == "http://[::1]:80/");
    CHECK(webhook("HTTP://h:1/") == "http://h:1/");
    CHECK(webhook("http://h:65535/") == "http://h:65535/");
  }
  SECTION("rejected") {
    const std::string at = "test.toml:13:22: routes[0].on_failure_webhook: invalid webhook URL ";
    CHECK(webhook("https://hooks.example.com/refund") ==
          at + "\"https://hooks.example.com/refund\": https:// is not supported; the webhook is posted over plain "
               "http:// (point it at a local relay for TLS)");
    CHECK(webhook("127.0.0.1:8081/hook") == at + "\"127.0.0.1:8081/hook\": expected \"http://HOST[:PORT]/PATH\"");
    CHECK(webhook("ftp://h/") == at + "\"ftp://h/\": expected \"http://HOST[:PORT]/PATH\"");
    CHECK(webhook("http:///hook") == at + "\"http:///hook\": missing host");
    CHECK(webhook("http://:8081/hook") == at + "\"http://:8081/hook\": missing host");
    CHECK(webhook("http://") == at + "\"http://\": missing host");
    CHECK(webhook("http://h:0/") == at + "\"http://h:0/\": port must be a number 1-65535");
    CHECK(webhook("http://h:65536/") == at + "\"http://h:65536/\": port must be a number 1-65535");
    CHECK(webhook("http://h:/x") == at + "\"http://h:/x\": port must be a number 1-65535");
    CHECK(webhook("http://h:http/") == at + "\"http://h:http/\": port must be a number 1-65535");
    CHECK(webhook("http://[::1]:/x") == at + "\"http://[::1]:/x\": port must be a number 1-65535");
    CHECK(webhook("http://::1:80/") ==
          at + "\"http://::1:80/\": IPv6 addresses go in brackets, e.g. \"http://[::1]:8081/hook\"");
    CHECK(webhook("http://[::g]/") == at + "\"http://[::g]/\": not an IPv6 address inside [...]");
    CHECK(webhook("http://[::1/") == at + "\"http://[::1/\": missing ']' after the IPv6 address");
    CHECK(webhook("http://10.0.0.256/") == at + "\"http://10.0.0.256/\": invalid host \"10.0.0.256\"");
    CHECK(webhook("http://ho_st/") == at + "\"http://ho_st/\": invalid host \"ho_st\"");
    CHECK(webhook("http://user:pw@h/") == at + "\"http://user:pw@h/\": user information (\"user@\") is not supported");
    CHECK(webhook("http://h/a#b") == at + "\"http://h/a#b\": must not contain a fragment ('#')");
    CHECK(webhook("http://h/a b") ==
          at + "\"http://h/a b\": the path must not contain spaces, control characters or non-ASCII bytes "
               "(percent-encode them)");
    CHECK(load_error(queue_route("on_failure_webhook = 1\n")) ==
          "test.toml:13:22: routes[0].on_failure_webhook: expected a string, got integer");
  }
}

TEST_CASE("server.tickets_path", "[config][queue]") {
  auto cfg = load_ok(with_server("listen = \"127.0.0.1:1\"\ntickets_path = \"/api/tickets/\""));
  CHECK(cfg->server.tickets_path == "/api/tickets/");
  CHECK(load_ok(with_server("listen = \"127.0.0.1:1\"\ntickets_path = \"/t/\""))->server.tickets_path == "/t/");
  CHECK(load_ok(kMinimal)->server.tickets_path == "/_floodgate/tickets/");
  const std::string bad = "test.toml:3:16: server.tickets_path: ";
  const std::string slashes =
      "must start and end with '/' and name at least one segment, e.g. \"/_floodgate/tickets/\"; got ";
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\ntickets_path = \"/tickets\"")) ==
        bad + slashes + "\"/tickets\"");
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\ntickets_path = \"tickets/\"")) ==
        bad + slashes + "\"tickets/\"");
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\ntickets_path = \"/\"")) == bad + slashes + "\"/\"");
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\ntickets_path = \"\"")) == bad + slashes + "\"\"");
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\ntickets_path = \"/my tickets/\"")) ==
        bad + "must not contain spaces, control characters or non-ASCII bytes");
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\ntickets_path = \"/t?x=/\"")) ==
        bad + "is a path; it must not contain '?' or '#'");
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\ntickets_path = \"/t#/\"")) ==
        bad + "is a path; it must not contain '?' or '#'");
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\ntickets_path = 1")) ==
        bad + "expected a string, got integer");
}

TEST_CASE("[pressure] queue_depth and [redis] WAIT settings", "[config][queue]") {
  CHECK(load_ok(kMinimal + "[pressure]\nqueue_depth = 50000\n")->pressure.queue_depth == 50000);
  CHECK(load_ok(kMinimal + "[pressure]\nqueue_depth = 1\n")->pressure.queue_depth == 1);

  auto cfg = load_ok(kMinimal + "[redis]\nwait_replicas = 2\nwait_timeout = \"50ms\"\n");
  CHECK(cfg->redis.wait_replicas == 2);
  CHECK(cfg->redis.wait_timeout_ms == 50);
  auto d = load_ok(kMinimal + "[redis]\nwait_replicas = 1\n");
  CHECK(d->redis.wait_replicas == 1);
  CHECK(d->redis.wait_timeout_ms == 100);
  CHECK(load_ok(kMinimal + "[redis]\nwait_replicas = 16\n")->redis.wait_replicas == 16);
  // 0 switches WAIT off; a wait_timeout next to it is kept for when it is raised.
  CHECK(load_ok(kMinimal + "[redis]\nwait_replicas = 0\nwait_timeout = \"5s\"\n")->redis.wait_timeout_ms == 5000);
  CHECK(load_ok(kMinimal + "[redis]\ntimeout = \"2s\"\nwait_replicas = 1\nwait_timeout = \"1s\"\n")
            ->redis.wait_timeout_ms == 1000);

  CHECK(load_error(kMinimal + "[redis]\nwait_replicas = 17\n") ==
        "test.toml:12:17: redis.wait_replicas: must be between 0 and 16, got 17");
  CHECK(load_error(kMinimal + "[redis]\nwait_replicas = -1\n") ==
        "test.toml:12:17: redis.wait_replicas: must be between 0 and 16, got -1");
  CHECK(load_error(kMinimal + "[redis]\nwait_replicas = \"1\"\n") ==
        "test.toml:12:17: redis.wait_replicas: expected an integer, got string");
  CHECK(load_error(kMinimal + "[redis]\nwait_timeout = \"50ms\"\n") ==
        "test.toml:12:16: redis.wait_timeout: only valid together with wait_replicas");
  CHECK(load_error(kMinimal + "[redis]\nwait_replicas = 1\nwait_timeout = \"250ms\"\n") ==
        "test.toml:13:16: redis.wait_timeout: must be shorter than redis.timeout (250ms), which bounds every Redis "
        "command including WAIT");
  CHECK(load_error(kMinimal + "[redis]\ntimeout = \"100ms\"\nwait_replicas = 1\n") ==
        "test.toml:13:17: redis.wait_replicas: WAIT uses wait_timeout (100ms by default), which must be shorter than "
        "redis.timeout (100ms); set a shorter wait_timeout or a longer timeout");
  CHECK(load_error(kMinimal + "[redis]\nwait_replicas = 1\nwait_timeout = 100\n") ==
        "test.toml:13:16: redis.wait_timeout: expected a duration string such as \"10s\", got integer");
}

TEST_CASE("on_failure_webhook is parsed once into host, port and path", "[config][queue]") {
  auto url_of = [](const std::string& url) {
    auto cfg = load_ok(queue_route("on_failure_webhook = \"" + url + "\"\n"));
    return cfg->routes.at(0).on_failure_webhook_url;
  };
  const fg::WebhookUrl v4 = url_of("HTTP://10.0.0.5:8082/hooks/failed?src=fg");
  CHECK(v4.host == "10.0.0.5");
  CHECK(v4.port == 8082);
  CHECK(v4.path == "/hooks/failed?src=fg");
  CHECK_FALSE(v4.ipv6);
  CHECK(v4.authority() == "10.0.0.5:8082");
  CHECK(v4.text() == "http://10.0.0.5:8082/hooks/failed?src=fg");
  const fg::WebhookUrl v6 = url_of("http://[::1]");
  CHECK(v6.host == "::1");
  CHECK(v6.port == 80);
  CHECK(v6.path == "/");
  CHECK(v6.ipv6);
  CHECK(v6.authority() == "[::1]:80");
  const fg::WebhookUrl named = url_of("http://hooks.internal?x=1");
  CHECK(named.host == "hooks.internal");
  CHECK(named.path == "/?x=1");
}

TEST_CASE("retry_schedule and retry_jitter", "[config][queue]") {
  using J = fg::queue::RetrySchedule::Jitter;
  SECTION("store_and_forward routes get the day-long default") {
    auto cfg = load_ok(sf_route(""));
    const auto& r = cfg->routes.at(0);
    REQUIRE(r.retry_schedule);
    CHECK(r.retry_schedule->delays_ms.size() == 9);
    CHECK(r.retry_schedule->total_ms() > 24ULL * 3600 * 1000);
    CHECK(r.retry_schedule->jitter == J::kEqual);
  }
  SECTION("other queued routes keep retry.attempts unless a schedule is written") {
    CHECK_FALSE(load_ok(queue_route(""))->routes.at(0).retry_schedule);
    auto cfg = load_ok(queue_route("retry_schedule = [\"200ms\", \"1m\"]\nretry_jitter = \"none\"\n"));
    const auto& r = cfg->routes.at(0);
    REQUIRE(r.retry_schedule);
    CHECK(r.retry_schedule->delays_ms == std::vector<uint64_t>{200, 60000});
    CHECK(r.retry_schedule->jitter == J::kNone);
  }
  SECTION("retry_jitter alone keeps the default steps") {
    auto cfg = load_ok(sf_route("retry_jitter = \"full\"\n"));
    REQUIRE(cfg->routes.at(0).retry_schedule);
    CHECK(cfg->routes.at(0).retry_schedule->delays_ms.size() == 9);
    CHECK(cfg->routes.at(0).retry_schedule->jitter == J::kFull);
  }
  SECTION("each bad step is reported at the step") {
    const std::string msg = load_error(queue_route("retry_schedule = [\"1s\", \"0s\", \"8d\"]\n"));
    CHECK_THAT(msg, Contains("test.toml:13:25: routes[0].retry_schedule[1]: \"0s\" is shorter than the minimum of 100ms"));
    CHECK_THAT(msg, Contains("test.toml:13:31: routes[0].retry_schedule[2]: \"8d\" is longer than the maximum of 7d"));
  }
  SECTION("types, jitter names and routes without a queue") {
    CHECK(load_error(queue_route("retry_schedule = \"1m\"\n")) ==
          "test.toml:13:18: routes[0].retry_schedule: expected an array of durations, e.g. [\"15s\", \"1m\", \"1h\"], "
          "got string");
    CHECK_THAT(load_error(queue_route("retry_schedule = []\n")),
               Contains("routes[0].retry_schedule: must list at least one delay"));
    CHECK_THAT(load_error(sf_route("retry_jitter = \"half\"\n")),
               Contains("routes[0].retry_jitter: \"half\" is not one of \"none\", \"full\", \"equal\""));
    CHECK_THAT(load_error(route_with("retry_schedule = [\"1m\"]\n")),
               Contains("routes[0].retry_schedule: only queued routes"));
    CHECK_THAT(load_error(sf_route("retry_schedul = [\"1m\"]\n")), Contains("retry_schedule"));
  }
}
