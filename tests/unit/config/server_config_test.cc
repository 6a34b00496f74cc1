// [server] (client_table_size and the request-hardening keys), [admin], [reload].
#include <catch2/catch.hpp>

#include <string>

#include "tests/unit/config/config_test_support.h"
#include "floodgate/config.h"

using namespace fg::config_test;
using Catch::Contains;
using Catch::StartsWith;

TEST_CASE("[admin], [degrade], [pressure], [reload] and client_table_size parse", "[config]") {
  auto cfg = load_ok(with_server("listen = \"0.0.0.0:8080\"\nclient_table_size = 4096") +
                     "\n[admin]\nlisten = \"127.0.0.1:9090\"\ntoken = \"0123456789abcdef-XYZ\"\n"
                     "\n[degrade]\nstatus = 429\nbody = \"slow down\"\ncontent_type = \"text/plain\"\n"
                     "retry_after = \"2.5s\"\n"
                     "\n[pressure]\nloop_lag = \"50ms\"\n"
                     "\n[reload]\nwatch = true\n");
  CHECK(cfg->client_table_size == 4096);
  CHECK(cfg->admin.enabled);
  CHECK(cfg->admin.listen.host == "127.0.0.1");
  CHECK(cfg->admin.listen.port == 9090);
  CHECK(cfg->admin.listen.text == "127.0.0.1:9090");
  CHECK(cfg->admin.token == "0123456789abcdef-XYZ");
  CHECK(cfg->degrade.status == 429);
  CHECK(cfg->degrade.body == "slow down");
  CHECK(cfg->degrade.content_type == "text/plain");
  CHECK(cfg->degrade.retry_after_ms == 2500);
  CHECK(cfg->pressure.loop_lag_ms == 50);
  CHECK(cfg->reload.watch);

  SECTION("bounds of client_table_size") {
    CHECK(load_ok(with_server("listen = \"127.0.0.1:1\"\nclient_table_size = 1024"))->client_table_size == 1024);
    CHECK(load_ok(with_server("listen = \"127.0.0.1:1\"\nclient_table_size = 16777216"))->client_table_size ==
          16777216);
  }
  SECTION("IPv6 admin listener, empty token, empty tables") {
    auto v6 = load_ok(kMinimal + "[admin]\nlisten = \"[::1]:9090\"\ntoken = \"\"\n[degrade]\n[pressure]\n[reload]\n");
    CHECK(v6->admin.enabled);
    CHECK(v6->admin.listen.host == "::1");
    CHECK(v6->admin.token.empty());
    CHECK(v6->degrade.status == 503);
    CHECK(v6->pressure.loop_lag_ms == 0);
  }
  SECTION("an [admin] table without listen leaves the listener off") {
    auto off = load_ok(kMinimal + "[admin]\ntoken = \"0123456789abcdef\"\n");
    CHECK_FALSE(off->admin.enabled);
    CHECK(off->admin.token == "0123456789abcdef");
  }
  SECTION("the same port on another address is fine") {
    auto ok = load_ok(with_server("listen = [\"127.0.0.1:8080\", \"[::1]:8080\"]") +
                      "[admin]\nlisten = \"127.0.0.2:8080\"\n");
    CHECK(ok->admin.listen.port == 8080);
    // 0.0.0.0 covers IPv4 only, so an IPv6 admin address on its port is separate.
    CHECK(load_ok(with_server("listen = \"0.0.0.0:8080\"") + "[admin]\nlisten = \"[::1]:8080\"\n")->admin.enabled);
  }
}

TEST_CASE("new sections take their defaults when absent", "[config]") {
  auto cfg = load_ok(kMinimal);
  const fg::DegradeConfig degrade;
  CHECK_FALSE(cfg->admin.enabled);
  CHECK(cfg->admin.token.empty());
  CHECK(cfg->degrade.status == 503);
  CHECK(cfg->degrade.body == degrade.body);
  CHECK(cfg->degrade.content_type == "application/json; charset=utf-8");
  CHECK(cfg->degrade.retry_after_ms == 1000);
  CHECK(cfg->pressure.loop_lag_ms == 0);
  CHECK_FALSE(cfg->reload.watch);
  CHECK(cfg->client_table_size == 65536);
  CHECK_FALSE(cfg->redis.enabled);
  CHECK_FALSE(cfg->routes[0].idempotency.enabled);
}

TEST_CASE("server.client_table_size is range-checked", "[config]") {
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\nclient_table_size = 1023")) ==
        "test.toml:3:21: server.client_table_size: must be between 1024 and 16777216, got 1023");
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\nclient_table_size = 16777217")) ==
        "test.toml:3:21: server.client_table_size: must be between 1024 and 16777216, got 16777217");
  CHECK(load_error(with_server("listen = \"127.0.0.1:1\"\nclient_table_size = \"64Ki\"")) ==
        "test.toml:3:21: server.client_table_size: expected an integer, got string");
}

TEST_CASE("[admin] is validated", "[config]") {
  SECTION("listen must differ from server.listen") {
    CHECK(load_error(kMinimal + "[admin]\nlisten = \"127.0.0.1:8080\"\n") ==
          "test.toml:12:10: admin.listen: \"127.0.0.1:8080\" is also a server.listen address; the admin listener "
          "needs an address of its own");
    CHECK_THAT(load_error(with_server("listen = [\"127.0.0.1:8080\", \"[::1]:8443\"]") +
                          "[admin]\nlisten = \"[0:0::1]:8443\"\n"),
               Contains("admin.listen: \"[0:0::1]:8443\" is also a server.listen address"));
    CHECK(load_error(with_server("listen = \"0.0.0.0:8080\"") + "[admin]\nlisten = \"127.0.0.1:8080\"\n") ==
          "test.toml:12:10: admin.listen: \"127.0.0.1:8080\" overlaps server.listen \"0.0.0.0:8080\" (same port, "
          "wildcard address); the admin listener needs an address of its own");
    CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:8080\"") + "[admin]\nlisten = \"[::]:8080\"\n"),
               Contains("admin.listen: \"[::]:8080\" overlaps server.listen \"127.0.0.1:8080\""));
  }
  SECTION("listen is one literal address") {
    CHECK(load_error(kMinimal + "[admin]\nlisten = \"localhost:9090\"\n") ==
          "test.toml:12:10: admin.listen: invalid address \"localhost:9090\": expected a literal IPv4 address or "
          "[IPv6] address");
    CHECK(load_error(kMinimal + "[admin]\nlisten = [\"127.0.0.1:9090\"]\n") ==
          "test.toml:12:10: admin.listen: expected a string, got array");
    CHECK_THAT(load_error(kMinimal + "[admin]\nlisten = \"127.0.0.1:0\"\n"),
               StartsWith("test.toml:12:10: admin.listen: invalid address \"127.0.0.1:0\": port must be"));
  }
  SECTION("token") {
    CHECK(load_error(kMinimal + "[admin]\nlisten = \"127.0.0.1:9090\"\ntoken = \"secret\"\n") ==
          "test.toml:13:9: admin.token: must be at least 16 characters, got 6 (\"\" turns authentication off)");
    CHECK(load_error(kMinimal + "[admin]\ntoken = \"0123456789 abcdef\"\n") ==
          "test.toml:12:9: admin.token: must be printable ASCII without spaces");
    CHECK(load_error(kMinimal + "[admin]\ntoken = \"0123456789abcdef\\t\"\n") ==
          "test.toml:12:9: admin.token: must be printable ASCII without spaces");
    CHECK(load_error(kMinimal + "[admin]\ntoken = \"0123456789abcdef\\u00e9\"\n") ==
          "test.toml:12:9: admin.token: must be printable ASCII without spaces");
    CHECK(load_error(kMinimal + "[admin]\ntoken = 1234567890123456\n") ==
          "test.toml:12:9: admin.token: expected a string, got integer");
  }
  SECTION("unknown keys and types") {
    CHECK(load_error(kMinimal + "[admin]\nlisten = \"127.0.0.1:9090\"\ntokn = \"x\"\n") ==
          "test.toml:13:1: admin.tokn: unknown key (did you mean \"token\"?)");
    CHECK(load_error("admin = \"127.0.0.1:9090\"\n" + kMinimal) ==
          "test.toml:1:9: admin: expected a table, got string");
  }
}

TEST_CASE("server request-hardening keys take their defaults", "[config]") {
  auto cfg = load_ok(kMinimal);
  CHECK(cfg->server.merge_slashes);
  CHECK_FALSE(cfg->server.underscores_in_headers);
  CHECK(cfg->server.max_connections_per_client == 0);
}

TEST_CASE("server request-hardening keys parse", "[config]") {
  auto cfg = load_ok(with_server("listen = \"127.0.0.1:8080\"\nmerge_slashes = false\nunderscores_in_headers = true\n"
                                 "max_connections = 1000\nmax_connections_per_client = 1000\n"));
  CHECK_FALSE(cfg->server.merge_slashes);
  CHECK(cfg->server.underscores_in_headers);
  CHECK(cfg->server.max_connections_per_client == 1000);

  auto off = load_ok(with_server("listen = \"127.0.0.1:8080\"\nmax_connections_per_client = 8\n"));
  CHECK(off->server.max_connections_per_client == 8);
}

TEST_CASE("server request-hardening keys are validated", "[config]") {
  const std::string listen = "listen = \"127.0.0.1:8080\"\n";
  CHECK(load_error(with_server(listen + "merge_slashes = \"yes\"")) ==
        "test.toml:3:17: server.merge_slashes: expected true or false, got string");
  CHECK(load_error(with_server(listen + "underscores_in_headers = 1")) ==
        "test.toml:3:26: server.underscores_in_headers: expected true or false, got integer");
  CHECK(load_error(with_server(listen + "max_connections_per_client = -1")) ==
        "test.toml:3:30: server.max_connections_per_client: must be at least 0, got -1");
  CHECK(load_error(with_server(listen + "max_connections_per_client = 20001")) ==
        "test.toml:3:30: server.max_connections_per_client: must not exceed server.max_connections (20000)");
  CHECK(load_error(with_server(listen + "merge_slash = true")) ==
        "test.toml:3:1: server.merge_slash: unknown key (did you mean \"merge_slashes\"?)");
}

TEST_CASE("server buffering keys take their defaults, parse and are validated", "[config]") {
  auto cfg = load_ok(kMinimal);
  CHECK(cfg->server.request_buffering == 1024 * 1024);
  CHECK(cfg->server.request_buffering_total == 256 * 1024 * 1024);
  CHECK(cfg->server.response_buffering == 1024 * 1024);
  CHECK(cfg->server.response_buffering_total == 256 * 1024 * 1024);

  auto set = load_ok(with_server("listen = \"127.0.0.1:8080\"\nrequest_buffering = \"64KiB\"\n"
                                 "response_buffering = 0\nresponse_buffering_total = \"2GiB\"\n"
                                 "request_buffering_total = \"1GiB\"\n"));
  CHECK(set->server.request_buffering_total == 1024 * 1024 * 1024);
  CHECK(set->server.request_buffering == 64 * 1024);
  CHECK(set->server.response_buffering == 0);
  CHECK(set->server.response_buffering_total == 2048ULL * 1024 * 1024);

  const std::string listen = "listen = \"127.0.0.1:8080\"\n";
  CHECK(load_error(with_server(listen + "request_buffering = \"2GiB\"")) ==
        "test.toml:3:21: server.request_buffering: must be between 0 and 1073741824 bytes, got 2147483648");
  CHECK(load_error(with_server(listen + "response_buffering = -1")) ==
        "test.toml:3:22: server.response_buffering: invalid size -1: must not be negative");
  CHECK(load_error(with_server(listen + "request_bufering = 1")) ==
        "test.toml:3:1: server.request_bufering: unknown key (did you mean \"request_buffering\"?)");
}

TEST_CASE("log.level and log.access_sample", "[config]") {
  auto def = load_ok(kMinimal);
  CHECK(def->log.level == "info");
  CHECK(def->log.access_sample == 1.0);
  auto cfg = load_ok(kMinimal + "[log]\nlevel = \"warn\"\naccess_sample = 0.1\n");
  CHECK(cfg->log.level == "warn");
  CHECK(cfg->log.access_sample == 0.1);
  CHECK(load_error(kMinimal + "[log]\nlevel = \"loud\"\n") ==
        "test.toml:12:9: log.level: must be \"debug\", \"info\", \"warn\" or \"error\", got \"loud\"");
  CHECK(load_error(kMinimal + "[log]\naccess_sample = 1.5\n") ==
        "test.toml:12:17: log.access_sample: must be between 0 and 1, got 1.5");
}

TEST_CASE("server.trusted_proxies, real_ip_header and proxy_protocol", "[config][real_ip]") {
  auto def = load_ok(kMinimal);
  CHECK(def->server.trusted_proxies.empty());
  CHECK(def->server.real_ip_header == "X-Forwarded-For");
  CHECK_FALSE(def->server.proxy_protocol);
  CHECK(def->server.proxy_protocol_timeout_ms == 5000);

  auto cfg = load_ok(with_server("listen = \"127.0.0.1:8080\"\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", "
                                 "\"192.0.2.7\"]\nreal_ip_header = \"CF-Connecting-IP\"\nproxy_protocol = true\n"
                                 "proxy_protocol_timeout = \"2s\"\n"));
  CHECK(cfg->server.trusted_proxies.blocks.size() == 3);
  CHECK(cfg->server.trusted_proxies.contains("10.9.8.7"));
  CHECK(cfg->server.trusted_proxies.contains("2001:db8::1"));
  CHECK_FALSE(cfg->server.trusted_proxies.contains("192.0.2.8"));
  CHECK(cfg->server.real_ip_header == "CF-Connecting-IP");
  CHECK(cfg->server.proxy_protocol);
  CHECK(cfg->server.proxy_protocol_timeout_ms == 2000);

  const std::pair<const char*, const char*> bad[] = {
      {"trusted_proxies = \"10.0.0.0/8\"",
       "test.toml:3:19: server.trusted_proxies: expected an array of CIDR blocks, e.g. [\"10.0.0.0/8\", "
       "\"2001:db8::/32\"], got string"},
      {"trusted_proxies = [\"10.0.0.1/8\"]",
       "test.toml:3:20: server.trusted_proxies[0]: \"10.0.0.1/8\" has host bits set below its /8 prefix; write "
       "the block's first address"},
      {"trusted_proxies = [\"cdn.example\"]",
       "test.toml:3:20: server.trusted_proxies[0]: \"cdn.example\" is not an IPv4 or IPv6 address or CIDR block "
       "(e.g. \"10.0.0.0/8\", \"2001:db8::/32\")"},
      {"real_ip_header = \"X Forwarded\"",
       "test.toml:3:18: server.real_ip_header: must be a header name, e.g. \"X-Forwarded-For\" or "
       "\"CF-Connecting-IP\""},
      {"proxy_protocol = \"v2\"", "test.toml:3:18: server.proxy_protocol: expected true or false, got string"},
  };
  for (const auto& [line, message] : bad) {
    CHECK(load_error(with_server("listen = \"127.0.0.1:8080\"\n" + std::string(line))) == message);
  }
}

TEST_CASE("log.access_fields selects access-line fields", "[config][log]") {
  auto def = load_ok(kMinimal);
  for (int f = 0; f < fg::kAccessFieldCount; f++) CHECK(def->log.has_field(static_cast<fg::AccessField>(f)));
  auto cfg = load_ok(kMinimal + "[log]\naccess_fields = [\"ts\", \"client\", \"status\"]\n");
  CHECK(cfg->log.has_field(fg::kFieldClient));
  CHECK(cfg->log.has_field(fg::kFieldStatus));
  CHECK_FALSE(cfg->log.has_field(fg::kFieldPath));
  const std::pair<const char*, const char*> bad[] = {
      {"[\"ts\", \"agent\"]",
       "test.toml:12:24: log.access_fields[1]: unknown access-log field \"agent\"; known: ts, request_id, client, "
       "method, path, route, status, outcome, upstream, upstream_ms, total_ms"},
      {"[]",
       "test.toml:12:17: log.access_fields: expected a non-empty array of field names, e.g. [\"ts\", \"client\", "
       "\"path\", \"status\"]"},
  };
  for (const auto& [value, message] : bad) {
    CHECK(load_error(kMinimal + "[log]\naccess_fields = " + value + "\n") == message);
  }
}
