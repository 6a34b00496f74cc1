// Config loading as a whole: a full valid file, the shipped example, files and
// syntax, unknown keys, types and ranges, listen and server addresses.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "pages/pages_config.h"
#include "tests/unit/config/config_test_support.h"
#include "floodgate/config.h"

using fg::Balance;
using fg::OnUnavailable;
using fg::Overflow;
using namespace fg::config_test;
using Catch::Contains;
using Catch::StartsWith;

TEST_CASE("a full config parses with every value", "[config]") {
  const std::string text = R"(
[server]
listen = ["0.0.0.0:8080", "[::1]:8443"]
workers = 4
max_connections = 1000
header_timeout = "5s"
body_timeout = "20s"
idle_timeout = "1m"
send_timeout = "1.5s"
drain_timeout = "30s"
max_header_bytes = "32KiB"
max_uri_bytes = 4096
max_body_bytes = "2MB"

[upstreams.shop]
servers = ["127.0.0.1:8081", "shop.internal:8082"]
balance = "least_conn"
connect_timeout = "250ms"
timeout = "3s"
max_connections = 100
keepalive = 0
keepalive_timeout = "30s"

[upstreams.api]
servers = ["[::1]:9000"]

[[routes]]
name = "orders"
match = { methods = ["post", "PUT"], path = "/api/orders" }
upstream = "shop"
max_body_bytes = "64KiB"

[[routes]]
name = "api"
match = { prefix = "/api/" }
upstream = "api"

[log]
file = "/var/log/floodgate.log"
access = false
)";
  auto cfg = load_ok(text);
  CHECK(cfg->source_path == kName);

  const auto& s = cfg->server;
  REQUIRE(s.listen.size() == 2);
  CHECK(s.listen[0].host == "0.0.0.0");
  CHECK(s.listen[0].port == 8080);
  CHECK(s.listen[0].text == "0.0.0.0:8080");
  CHECK(s.listen[1].host == "::1");
  CHECK(s.listen[1].port == 8443);
  CHECK(s.listen[1].text == "[::1]:8443");
  CHECK(s.workers == 4);
  CHECK_FALSE(s.workers_auto);
  CHECK(s.max_connections == 1000);
  CHECK(s.header_timeout_ms == 5000);
  CHECK(s.body_timeout_ms == 20000);
  CHECK(s.idle_timeout_ms == 60000);
  CHECK(s.send_timeout_ms == 1500);
  CHECK(s.drain_timeout_ms == 30000);
  CHECK(s.max_header_bytes == 32 * 1024);
  CHECK(s.max_uri_bytes == 4096);
  CHECK(s.max_body_bytes == 2000000);

  REQUIRE(cfg->upstreams.size() == 2);
  // File order, not the alphabetical order toml++ keeps tables in.
  const auto& shop = cfg->upstreams[0];
  CHECK(shop.name == "shop");
  REQUIRE(shop.servers.size() == 2);
  CHECK(shop.servers[1].host == "shop.internal");
  CHECK(shop.servers[1].port == 8082);
  CHECK(shop.balance == Balance::kLeastConn);
  CHECK(shop.connect_timeout_ms == 250);
  CHECK(shop.timeout_ms == 3000);
  CHECK(shop.max_connections == 100);
  CHECK(shop.keepalive == 0);
  CHECK(shop.keepalive_timeout_ms == 30000);
  const auto& api = cfg->upstreams[1];
  CHECK(api.name == "api");
  CHECK(api.servers[0].host == "::1");
  CHECK(api.balance == Balance::kRoundRobin);

  REQUIRE(cfg->routes.size() == 2);
  const auto& orders = cfg->routes[0];
  CHECK(orders.name == "orders");
  CHECK(orders.match.methods == std::vector<std::string>{"POST", "PUT"});
  CHECK(orders.match.path == "/api/orders");
  CHECK_FALSE(orders.match.is_prefix);
  CHECK(orders.upstream == "shop");
  CHECK(orders.upstream_index == 0);
  CHECK(orders.max_body_bytes == 64 * 1024);
  const auto& api_route = cfg->routes[1];
  CHECK(api_route.match.methods.empty());
  CHECK(api_route.match.path == "/api/");
  CHECK(api_route.match.is_prefix);
  CHECK(api_route.upstream_index == 1);
  CHECK(api_route.max_body_bytes == 0);

  CHECK(cfg->log.file == "/var/log/floodgate.log");
  CHECK_FALSE(cfg->log.access);
}

TEST_CASE("omitted keys take the documented defaults", "[config]") {
  auto cfg = load_ok(kMinimal);
  const fg::ServerConfig defaults;
  const auto& s = cfg->server;
  CHECK(s.workers == 1);
  CHECK_FALSE(s.workers_auto);
  CHECK(s.max_connections == defaults.max_connections);
  CHECK(s.header_timeout_ms == 10000);
  CHECK(s.body_timeout_ms == 30000);
  CHECK(s.idle_timeout_ms == 60000);
  CHECK(s.send_timeout_ms == 30000);
  CHECK(s.drain_timeout_ms == 15000);
  CHECK(s.max_header_bytes == 16384);
  CHECK(s.max_uri_bytes == 8192);
  CHECK(s.max_body_bytes == 1048576);
  const auto& u = cfg->upstreams.at(0);
  CHECK(u.balance == Balance::kRoundRobin);
  CHECK(u.connect_timeout_ms == 1000);
  CHECK(u.timeout_ms == 5000);
  CHECK(u.max_connections == 512);
  CHECK(u.keepalive == 64);
  CHECK(u.keepalive_timeout_ms == 60000);
  CHECK(u.retry.attempts == 3);
  CHECK(u.retry.backoff_ms == 1000);
  CHECK(u.retry.max_backoff_ms == 30000);
  CHECK(u.retry.on_connect);
  CHECK(u.retry.on_timeout);
  CHECK(u.retry.on_status == std::vector<int>{502, 503, 504});
  CHECK(u.backup.empty());
  CHECK_FALSE(u.adaptive_timeout);
  CHECK(u.timeout_min_ms == 200);
  CHECK(u.timeout_max_ms == 10000);
  CHECK(u.breaker.enabled);
  CHECK(u.breaker.window_ms == 10000);
  CHECK(u.breaker.min_requests == 20);
  CHECK(u.breaker.error_rate == 0.5);
  CHECK(u.breaker.timeout_rate == 0.4);
  CHECK(u.breaker.open_for_ms == 5000);
  CHECK(u.breaker.half_open_probes == 3);
  CHECK_FALSE(u.health.enabled);
  CHECK(s.tickets_path == "/_floodgate/tickets/");
  const auto& r = cfg->routes.at(0);
  CHECK_FALSE(r.cache.enabled);
  CHECK(r.on_unavailable == OnUnavailable::kError);
  CHECK_FALSE(r.store_and_forward);
  CHECK_FALSE(r.queued());
  CHECK(r.client_max_tickets == 0);
  CHECK(r.on_failure_webhook.empty());
  CHECK(cfg->pressure.queue_depth == 0);
  CHECK(cfg->redis.wait_replicas == 0);
  CHECK(cfg->redis.wait_timeout_ms == 100);
  CHECK(cfg->log.file.empty());
  CHECK(cfg->log.access);
}

TEST_CASE("workers = \"auto\" resolves to the core count", "[config]") {
  auto cfg = load_ok(with_server("listen = \"127.0.0.1:1\"\nworkers = \"auto\""));
  CHECK(cfg->server.workers_auto);
  const unsigned cores = std::thread::hardware_concurrency();
  CHECK(cfg->server.workers == static_cast<int>(cores == 0 ? 1 : std::min(cores, 256u)));
}

TEST_CASE("the hash is FNV-1a of the file bytes", "[config]") {
  auto a = load_ok(kMinimal);
  auto b = load_ok(kMinimal + "# a comment changes the bytes\n");
  CHECK(a->hash.size() == 16);
  CHECK(a->hash.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(a->hash != b->hash);
  CHECK(load_ok(kMinimal)->hash == a->hash);
}

TEST_CASE("the shipped conf/floodgate.toml loads", "[config]") {
  const std::string path = std::string(FG_SOURCE_ROOT) + "/conf/floodgate.toml";
  auto r = fg::config::load_file(path);
  INFO(r.message());
  REQUIRE(r.is_ok());
  const Config& cfg = *r.value();
  CHECK(cfg.source_path == path);
  REQUIRE(cfg.server.listen.size() == 1);
  CHECK(cfg.server.listen[0].text == "127.0.0.1:8080");
  CHECK(cfg.server.workers_auto);
  REQUIRE(cfg.upstreams.size() == 1);
  CHECK(cfg.upstreams[0].name == "shop");
  CHECK(cfg.upstreams[0].servers.at(0).text == "127.0.0.1:8081");
  const auto& shop = cfg.upstreams[0];
  CHECK(shop.backup.empty());
  CHECK_FALSE(shop.adaptive_timeout);
  CHECK(shop.timeout_ms == 5000);
  CHECK(shop.breaker.enabled);
  CHECK(shop.breaker.window_ms == 10000);
  CHECK(shop.breaker.min_requests == 20);
  CHECK(shop.breaker.error_rate == 0.5);
  CHECK(shop.breaker.timeout_rate == 0.4);
  CHECK(shop.breaker.open_for_ms == 5000);
  CHECK(shop.breaker.half_open_probes == 3);
  CHECK(shop.health.enabled);
  CHECK(shop.health.path == "/healthz");
  CHECK(shop.health.interval_ms == 2000);
  CHECK(shop.health.timeout_ms == 1000);
  CHECK(shop.health.rise == 2);
  CHECK(shop.health.fall == 2);
  REQUIRE(cfg.routes.size() == 5);
  CHECK(cfg.routes[0].name == "orders");
  CHECK(cfg.routes[1].name == "catalog");
  CHECK(cfg.routes[2].name == "notify");
  CHECK(cfg.routes[3].name == "checkout");
  CHECK(cfg.routes[3].overflow == Overflow::kQueue);
  CHECK(cfg.routes[4].name == "shop");
  REQUIRE(cfg.pages != nullptr);
  CHECK(cfg.pages->enabled());
  CHECK(cfg.pages->shop_name() == "Demo Shop");
  const auto& orders = cfg.routes[0];
  CHECK(orders.rate == 3000);
  CHECK(orders.burst == 300);
  CHECK(orders.client_rate == 5);
  CHECK(orders.client_burst == 10);
  CHECK_FALSE(orders.client_key.by_header);
  CHECK(orders.overflow == Overflow::kQueue);
  CHECK(orders.queued());
  CHECK_FALSE(orders.store_and_forward);
  CHECK(orders.queue.max_depth == 200000);
  CHECK(orders.queue.max_wait_ms == 10 * 60 * 1000);
  CHECK(orders.queue.processing_timeout_ms == 30000);
  CHECK(orders.queue.ticket_ttl_ms == 3600 * 1000);
  CHECK(orders.queue.concurrency == 64);
  CHECK(orders.client_max_tickets == 3);
  CHECK(orders.on_failure_webhook.empty());  // the demo shop has no compensation endpoint
  CHECK_FALSE(orders.dry_run);
  CHECK(orders.core);
  const auto& catalog = cfg.routes[1];
  CHECK(catalog.rate == 20000);
  CHECK(catalog.overflow == Overflow::kReject);
  CHECK(catalog.client_rate == 0);
  CHECK_FALSE(catalog.core);
  CHECK(cfg.routes[4].rate == 0);
  CHECK(cfg.routes[4].core);
  CHECK(orders.on_unavailable == OnUnavailable::kQueue);
  CHECK_FALSE(orders.cache.enabled);
  CHECK(catalog.on_unavailable == OnUnavailable::kCache);
  CHECK(catalog.cache.enabled);
  CHECK(catalog.cache.ttl_ms == 2000);
  CHECK(catalog.cache.stale_if_error_ms == 5 * 60 * 1000);
  CHECK(catalog.cache.max_bytes == 64ULL * 1024 * 1024);
  CHECK(catalog.cache.max_entry_bytes == 1024 * 1024);
  CHECK(cfg.routes[2].on_unavailable == OnUnavailable::kError);
  CHECK(cfg.routes[4].on_unavailable == OnUnavailable::kError);
  CHECK(cfg.admin.enabled);
  CHECK(cfg.admin.listen.text == "127.0.0.1:9090");
  CHECK(cfg.admin.token.empty());
  CHECK(cfg.degrade.status == 503);
  CHECK(cfg.degrade.body == "{\"error\":\"busy\",\"message\":\"\u7cfb\u7edf\u7e41\u5fd9,\u8bf7\u7a0d\u540e\u67e5\u8be2\u8ba2\u5355\"}");
  CHECK(cfg.degrade.content_type == "application/json; charset=utf-8");
  CHECK(cfg.degrade.retry_after_ms == 1000);
  CHECK(cfg.pressure.loop_lag_ms == 50);
  CHECK_FALSE(cfg.reload.watch);
  CHECK(cfg.client_table_size == 65536);
  CHECK(cfg.redis.enabled);
  CHECK(cfg.redis.url == "redis://127.0.0.1:6380/0");
  CHECK(cfg.redis.prefix == "fg:");
  CHECK(cfg.redis.timeout_ms == 250);
  CHECK_FALSE(cfg.redis.fail_open);
  CHECK(orders.idempotency.enabled);
  CHECK(orders.idempotency.key ==
        std::vector<std::string>{"header:Idempotency-Key", "json:out_trade_no", "json:order_no"});
  CHECK_FALSE(orders.idempotency.required);
  CHECK(orders.idempotency.ttl_ms == 24ULL * 3600 * 1000);
  CHECK_FALSE(catalog.idempotency.enabled);
  const auto& notify = cfg.routes[2];
  CHECK(notify.idempotency.enabled);
  CHECK(notify.idempotency.key == std::vector<std::string>{"form:out_trade_no", "json:out_trade_no"});
  CHECK(notify.idempotency.ttl_ms == 72ULL * 3600 * 1000);
  CHECK(notify.store_and_forward);
  CHECK(notify.queued());
  CHECK(notify.ack.status == 200);
  CHECK(notify.ack.body == "success");
  CHECK(notify.ack.content_type == "text/plain");
  CHECK_FALSE(catalog.queued());
  CHECK_FALSE(cfg.routes[4].queued());
  CHECK(cfg.server.tickets_path == "/_floodgate/tickets/");
  CHECK(cfg.pressure.queue_depth == 50000);
  CHECK(cfg.redis.wait_replicas == 0);
  CHECK(cfg.redis.wait_timeout_ms == 100);
  const auto& retry = cfg.upstreams[0].retry;
  CHECK(retry.attempts == 3);
  CHECK(retry.backoff_ms == 1000);
  CHECK(retry.max_backoff_ms == 30000);
  CHECK(retry.on_connect);
  CHECK(retry.on_timeout);
  CHECK(retry.on_status == std::vector<int>{502, 503, 504});
  CHECK_FALSE(cfg.routes[4].idempotency.enabled);
  CHECK(cfg.match_route("POST", "/api/orders") == 0);
  CHECK(cfg.match_route("GET", "/api/products/7") == 1);
  CHECK(cfg.match_route("POST", "/notify/alipay") == 2);
  CHECK(cfg.match_route("POST", "/checkout") == 3);
  CHECK(cfg.match_route("GET", "/checkout") == 4);
  CHECK(cfg.match_route("GET", "/anything") == 4);
}

TEST_CASE("load_file reports unreadable files", "[config]") {
  auto missing = fg::config::load_file("/nonexistent/floodgate.toml");
  REQUIRE_FALSE(missing.is_ok());
  CHECK(missing.message() == "/nonexistent/floodgate.toml: cannot read: No such file or directory");

  auto dir = fg::config::load_file("/");
  REQUIRE_FALSE(dir.is_ok());
  CHECK_THAT(dir.message(), StartsWith("/: cannot read: "));
}

TEST_CASE("load_file reads a file and names it in errors", "[config]") {
  const std::string path = "config_test_tmp.toml";
  {
    std::ofstream out(path);
    out << "bogus = 1\n" << kMinimal;
  }
  auto r = fg::config::load_file(path);
  std::remove(path.c_str());
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.message() == "config_test_tmp.toml:1:1: bogus: unknown key");
}

TEST_CASE("syntax errors carry file:line:col", "[config]") {
  CHECK_THAT(load_error("[server]\nlisten = \"127.0.0.1:8080\nworkers = 2\n"), StartsWith("test.toml:2:"));
  CHECK_THAT(load_error("[server]\nlisten = = 1\n"), StartsWith("test.toml:2:"));
  CHECK_THAT(load_error(kMinimal + "[server]\n"), StartsWith("test.toml:11:1: Error while parsing table header"));
}

TEST_CASE("unknown keys are rejected everywhere, with their position", "[config]") {
  SECTION("top level") {
    CHECK(load_error(kMinimal + "[tickets]\npath = \"/_floodgate/tickets/\"\n") == "test.toml:11:2: tickets: unknown key");
  }
  SECTION("server, with a suggestion") {
    CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\nheader_timout = \"1s\"")) ==
          "test.toml:3:1: server.header_timout: unknown key (did you mean \"header_timeout\"?)");
  }
  SECTION("upstream") {
    CHECK(load_error(kMinimal + "\n[upstreams.b]\nservers = [\"1.2.3.4:80\"]\nslow_start = \"30s\"\n") ==
          "test.toml:14:1: upstreams.b.slow_start: unknown key");
  }
  SECTION("route") {
    CHECK(load_error(route_with("retry_budget = 0.1\n")) == "test.toml:11:1: routes[0].retry_budget: unknown key");
    CHECK(load_error(route_with("rate = 10\nbrust = 5\n")) ==
          "test.toml:12:1: routes[0].brust: unknown key (did you mean \"burst\"?)");
  }
  SECTION("match") {
    CHECK(load_error(with_routes("[[routes]]\nname = \"r\"\nmatch = { prefix = \"/\", host = \"x\" }\n"
                                 "upstream = \"shop\"\n")) == "test.toml:9:25: routes[0].match.host: unknown key");
  }
  SECTION("log") {
    CHECK_THAT(load_error(kMinimal + "[log]\nacces = true\n"), StartsWith("test.toml:12:1: log.acces: unknown key"));
  }
}

TEST_CASE("keys this build does not have are unknown", "[config]") {
  const std::string msg = load_error(kMinimal + "\n[upstreams.shop.tls]\nverify = true\n\n[redis]\n"
                                     "url = \"redis://127.0.0.1:6379/0\"\nexpected_instances = 2\n"
                                     "sentinels = [\"10.0.0.5:26379\"]\n\n[pressure]\ncpu = 0.9\n");
  // tls exists on upstreams now, as a flag (docs/configuration.md "TLS").
  CHECK_THAT(msg, Contains("test.toml:12:1: upstreams.shop.tls: expected true or false, got table"));
  CHECK_THAT(msg, !Contains("expected_instances"));
  // sentinels exists now (docs/configuration.md "Redis with Sentinel"), with master_name.
  CHECK_THAT(msg, Contains("test.toml:18:13: redis.sentinels: needs redis.master_name"));
  CHECK_THAT(msg, Contains("test.toml:21:1: pressure.cpu: unknown key"));
  CHECK_THAT(load_error(route_with("retry_budget = 0.1\n")),
             StartsWith("test.toml:11:1: routes[0].retry_budget: unknown key"));
  CHECK_THAT(load_error(route_with("hedge_after = \"50ms\"\n")),
             StartsWith("test.toml:11:1: routes[0].hedge_after: unknown key"));
  CHECK(load_error(kMinimal + "\n[upstreams.b]\nservers = [\"1.2.3.4:80\"]\nresolve = \"30s\"\n") ==
        "test.toml:14:1: upstreams.b.resolve: unknown key (did you mean \"resolver\"?)");
  CHECK(load_error(kMinimal + "\n[upstreams.b]\nservers = [\"1.2.3.4:80\"]\nhealth = { port = 9000 }\n") ==
        "test.toml:14:12: upstreams.b.health.port: unknown key");
}

TEST_CASE("IPv6 and any-address listeners", "[config]") {
  auto cfg = load_ok(with_server("listen = [\"0.0.0.0:80\", \"[::]:80\", \"[fe80::1%lo]:81\"]"));
  REQUIRE(cfg->server.listen.size() == 3);
  CHECK(cfg->server.listen[1].host == "::");
  CHECK(cfg->server.listen[2].host == "fe80::1%lo");
}

TEST_CASE("wrong types name the key and position", "[config]") {
  CHECK(load_error(with_server("listen = 8080")) ==
        "test.toml:2:10: server.listen: expected a string, a { address, tls } table or an array of them, got integer");
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\nmax_connections = \"many\"")) ==
        "test.toml:3:19: server.max_connections: expected an integer, got string");
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\nheader_timeout = 10")) ==
        "test.toml:3:18: server.header_timeout: expected a duration string such as \"10s\", got integer");
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\nmax_body_bytes = true")) ==
        "test.toml:3:18: server.max_body_bytes: expected a size such as \"16KiB\" or an integer of bytes, got boolean");
  CHECK_THAT(load_error(kMinimal + "[log]\naccess = \"yes\"\n"),
             StartsWith("test.toml:12:10: log.access: expected true or false, got string"));
  CHECK_THAT(load_error("server = 1\n"), StartsWith("test.toml:1:10: server: expected a table, got integer"));
  CHECK_THAT(load_error("routes = \"x\"\n" + with_routes("")),
             Contains("test.toml:1:10: routes: expected [[routes]] entries"));
  CHECK_THAT(load_error(with_routes("[[routes]]\nname = 3\nmatch = { prefix = \"/\" }\nupstream = \"shop\"\n")),
             Contains("test.toml:8:8: routes[0].name: expected a string, got integer"));
}

TEST_CASE("bad durations and sizes are reported with the units hint", "[config]") {
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\n  header_timeout = \"10x\"")) ==
        "test.toml:3:20: server.header_timeout: invalid duration \"10x\" (use ms, s, m, h, d, e.g. \"250ms\" or \"1.5s\")");
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\nidle_timeout = \"60\"")),
             StartsWith("test.toml:3:16: server.idle_timeout: invalid duration \"60\": missing unit"));
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\nsend_timeout = \"0s\"")),
             StartsWith("test.toml:3:16: server.send_timeout: must be between 1ms and 1d"));
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\ndrain_timeout = \"2d\"")),
             StartsWith("test.toml:3:17: server.drain_timeout: must be between 1ms and 1d"));
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\nmax_body_bytes = \"1XB\"")),
             StartsWith("test.toml:3:18: server.max_body_bytes: invalid size \"1XB\""));
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\nmax_body_bytes = -1")),
             StartsWith("test.toml:3:18: server.max_body_bytes: invalid size -1: must not be negative"));
  CHECK_THAT(load_error(kMinimal + "\n[upstreams.b]\nservers = [\"1.2.3.4:80\"]\ntimeout = \"soon\"\n"),
             StartsWith("test.toml:14:11: upstreams.b.timeout: invalid duration \"soon\""));
}

TEST_CASE("range checks", "[config]") {
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\nmax_header_bytes = \"512B\"")),
             StartsWith("test.toml:3:20: server.max_header_bytes: must be between 1024 and 1048576 bytes, got 512"));
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\nmax_header_bytes = \"2MiB\"")),
             StartsWith("test.toml:3:20: server.max_header_bytes: must be between 1024 and 1048576"));
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\nmax_header_bytes = \"4KiB\"\nmax_uri_bytes = \"8KiB\"")),
             StartsWith("test.toml:4:17: server.max_uri_bytes: must not exceed server.max_header_bytes (4096)"));
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\nmax_connections = 0")),
             StartsWith("test.toml:3:19: server.max_connections: must be at least 1, got 0"));
  CHECK_THAT(load_error(kMinimal + "\n[upstreams.b]\nservers = [\"1.2.3.4:80\"]\nkeepalive = -1\n"),
             StartsWith("test.toml:14:13: upstreams.b.keepalive: must be at least 0, got -1"));
  CHECK_THAT(load_error(kMinimal + "\n[upstreams.b]\nservers = [\"1.2.3.4:80\"]\nmax_connections = 0\n"),
             StartsWith("test.toml:14:19: upstreams.b.max_connections: must be at least 1, got 0"));
  CHECK_THAT(load_error(with_routes("[[routes]]\nname = \"r\"\nmatch = { prefix = \"/\" }\nupstream = \"shop\"\n"
                                    "max_body_bytes = 0\n")),
             StartsWith("test.toml:11:18: routes[0].max_body_bytes: must be at least 1 bytes, got 0"));
}

TEST_CASE("workers must be auto or 1..256", "[config]") {
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\nworkers = 0")) ==
        "test.toml:3:11: server.workers: must be between 1 and 256, got 0");
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\nworkers = 257")), Contains("server.workers: must be between 1 and 256"));
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\nworkers = \"Auto\"")),
             StartsWith("test.toml:3:11: server.workers: expected \"auto\" or a number 1-256"));
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\nworkers = 2.5")),
             StartsWith("test.toml:3:11: server.workers: expected \"auto\" or a number 1-256, got float"));
}

TEST_CASE("listen addresses are validated", "[config]") {
  auto listen_error = [](const std::string& value) {
    return load_error(with_server("listen = " + value));
  };
  CHECK(listen_error("\"127.0.0.1:0\"") ==
        "test.toml:2:10: server.listen: invalid address \"127.0.0.1:0\": port must be a number 1-65535");
  CHECK_THAT(listen_error("\"127.0.0.1:65536\""), Contains("port must be a number 1-65535"));
  CHECK_THAT(listen_error("\"127.0.0.1:99999\""), Contains("port must be a number 1-65535"));
  CHECK_THAT(listen_error("\"127.0.0.1:\""), Contains("port must be a number 1-65535"));
  CHECK_THAT(listen_error("\"127.0.0.1:8o\""), Contains("port must be a number 1-65535"));
  CHECK_THAT(listen_error("\"127.0.0.1\""), Contains("expected \"HOST:PORT\""));
  CHECK_THAT(listen_error("\"::1:8080\""), Contains("IPv6 addresses go in brackets"));
  CHECK_THAT(listen_error("\"[::1]8080\""), Contains("expected \"[ADDRESS]:PORT\""));
  CHECK_THAT(listen_error("\"[::1:8080\""), Contains("missing ']'"));
  CHECK_THAT(listen_error("\"[1.2.3.4]:8080\""), Contains("not an IPv6 address"));
  CHECK_THAT(listen_error("\"[fe80::1%]:8080\""), Contains("invalid IPv6 zone"));
  CHECK_THAT(listen_error("\"localhost:8080\""), Contains("expected a literal IPv4 address"));
  CHECK_THAT(listen_error("\":8080\""), Contains("server.listen: invalid address"));
  CHECK_THAT(listen_error("[]"), StartsWith("test.toml:2:10: server.listen: must list at least one address"));
  CHECK_THAT(listen_error("[\"127.0.0.1:1\", \"127.0.0.1:x\"]"),
             StartsWith("test.toml:2:26: server.listen[1]: invalid address \"127.0.0.1:x\""));
  CHECK_THAT(listen_error("[\"127.0.0.1:1\", \"127.0.0.1:1\"]"),
             StartsWith("test.toml:2:26: server.listen[1]: \"127.0.0.1:1\" is listed twice"));
  CHECK_THAT(load_error(with_server("workers = 2")), StartsWith("test.toml:1:1: server.listen: required"));
}

TEST_CASE("upstream servers are validated", "[config]") {
  auto servers_error = [](const std::string& value) {
    return load_error(kMinimal + "\n[upstreams.b]\nservers = " + value + "\n");
  };
  CHECK_THAT(servers_error("[]"), StartsWith("test.toml:13:11: upstreams.b.servers: must list at least one address"));
  CHECK_THAT(servers_error("\"1.2.3.4:80\""), StartsWith("test.toml:13:11: upstreams.b.servers: expected an array of strings"));
  CHECK_THAT(servers_error("[\"1.2.3.4:0\"]"), StartsWith("test.toml:13:12: upstreams.b.servers[0]: invalid address"));
  CHECK_THAT(servers_error("[\"10.0.0.256:80\"]"), Contains("invalid host name"));
  CHECK_THAT(servers_error("[\"bad_host:80\"]"), Contains("invalid host name"));
  CHECK_THAT(load_error(kMinimal + "\n[upstreams.b]\nbalance = \"random\"\nservers = [\"1.2.3.4:80\"]\n"),
             StartsWith("test.toml:13:11: upstreams.b.balance: expected \"round_robin\" or \"least_conn\""));
  CHECK_THAT(load_error(kMinimal + "\n[upstreams.b]\nbalance = \"random\"\n"),
             Contains("test.toml:12:1: upstreams.b.servers: required"));
  CHECK_THAT(load_error(kMinimal + "\n[upstreams.\"a b\"]\nservers = [\"1.2.3.4:80\"]\n"),
             StartsWith("test.toml:12:12: upstreams.a b: upstream names may use only"));
}

TEST_CASE("missing sections", "[config]") {
  CHECK_THAT(load_error("[upstreams.shop]\nservers = [\"1.2.3.4:80\"]\n[[routes]]\nname = \"a\"\n"
                        "match = { prefix = \"/\" }\nupstream = \"shop\"\n"),
             StartsWith("test.toml: server: missing [server] table"));
  CHECK_THAT(load_error("[server]\nlisten = \"127.0.0.1:1\"\n"),
             Contains("test.toml: upstreams: at least one [upstreams.NAME] table is required"));
  CHECK_THAT(load_error("[server]\nlisten = \"127.0.0.1:1\"\n[upstreams]\n"),
             Contains("upstreams: at least one [upstreams.NAME] table is required"));
  CHECK(load_error(with_routes("")) == "test.toml: routes: at least one [[routes]] entry is required");
  CHECK_THAT(load_error("routes = []\n" + with_routes("")), StartsWith("test.toml:1:10: routes: at least one"));
}
