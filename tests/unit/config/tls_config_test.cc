// The TLS keys: server.tls, `{ address, tls }` listen entries, several certificates, and an
// upstream's tls/tls_ca/tls_verify/tls_server_name. The files are read later (net), so
// the names here need not exist.
#include <catch2/catch.hpp>

#include <string>

#include "tests/unit/config/config_test_support.h"
#include "floodgate/config.h"

using namespace fg::config_test;
using Catch::Contains;

TEST_CASE("server.tls makes every listener TLS; a listen entry can have its own", "[config][tls]") {
  auto all = load_ok(with_server("listen = [\"127.0.0.1:8443\", \"127.0.0.1:9443\"]\n"
                                 "tls = { cert = \"/etc/fg/shop.pem\", key = \"/etc/fg/shop.key\" }"));
  REQUIRE(all->server.listen_tls.size() == 2);
  for (const auto& t : all->server.listen_tls) {
    CHECK(t.enabled);
    REQUIRE(t.certificates.size() == 1);
    CHECK(t.certificates[0].cert == "/etc/fg/shop.pem");
    CHECK(t.certificates[0].key == "/etc/fg/shop.key");
    CHECK(t.certificates[0].where == "test.toml:3:7: server.tls");
    CHECK(t.ticket_key_rotation_ms == 3600 * 1000);
  }

  auto mixed = load_ok(with_server(
      "listen = [\"127.0.0.1:8080\",\n"
      "  { address = \"127.0.0.1:8443\", tls = { certificates = [{ cert = \"a.pem\", key = \"a.key\" }, "
      "{ cert = \"/b.pem\", key = \"/b.key\", names = [\"b.test\", \"*.b.test\"] }], "
      "ciphers = \"ECDHE-RSA-AES128-GCM-SHA256\", ticket_key_rotation = \"30m\" } }]"));
  REQUIRE(mixed->server.listen.size() == 2);
  CHECK(mixed->server.listen[1].text == "127.0.0.1:8443");
  CHECK_FALSE(mixed->server.listen_tls[0].enabled);
  const auto& t = mixed->server.listen_tls[1];
  CHECK(t.enabled);
  REQUIRE(t.certificates.size() == 2);
  CHECK(t.certificates[0].cert == "a.pem");  // "test.toml" has no directory part
  CHECK(t.certificates[1].names == std::vector<std::string>{"b.test", "*.b.test"});
  CHECK(t.ciphers == "ECDHE-RSA-AES128-GCM-SHA256");
  CHECK(t.ticket_key_rotation_ms == 30 * 60 * 1000);
  CHECK(t.certificates[1].where == "test.toml:3:92: server.listen[1].tls.certificates[1]");

  auto plain = load_ok(kMinimal);
  REQUIRE(plain->server.listen_tls.size() == 1);
  CHECK_FALSE(plain->server.listen_tls[0].enabled);
}

TEST_CASE("relative certificate names are taken from the config file's directory", "[config][tls]") {
  auto r = fg::config::load_string(with_server("listen = \"127.0.0.1:8443\"\ntls = { cert = \"c.pem\", key = \"/abs.key\" }"),
                                   "/etc/floodgate/floodgate.toml");
  REQUIRE(r.is_ok());
  CHECK(r.value()->server.listen_tls[0].certificates[0].cert == "/etc/floodgate/c.pem");
  CHECK(r.value()->server.listen_tls[0].certificates[0].key == "/abs.key");
}

TEST_CASE("TLS key errors name the key and position", "[config][tls]") {
  // {the [server] body after its listen line, the whole message}
  const std::pair<const char*, const char*> cases[] = {
      {"tls = { cert = \"a.pem\" }", "test.toml:3:7: server.tls.key: required, e.g. key = \"/etc/floodgate/shop.key\""},
      {"tls = { cert = \"a.pem\", key = \"\" }", "test.toml:3:31: server.tls.key: must name a file"},
      {"tls = { certificates = [] }",
       "test.toml:3:24: server.tls.certificates: expected a non-empty array of { cert, key, names } tables"},
      {"tls = { cert = \"a\", key = \"b\", names = [\"a b\"] }",
       "test.toml:3:41: server.tls.names[0]: expected a host name or \"*.\" and a host name, got \"a b\""},
      {"tls = { cert = \"a\", key = \"b\", ticket_key_rotation = \"1s\" }",
       "test.toml:3:54: server.tls.ticket_key_rotation: must be between 1m and 1d, got \"1s\""},
  };
  for (const auto& [body, message] : cases) {
    INFO(body);
    CHECK(load_error(with_server(std::string("listen = \"127.0.0.1:1\"\n") + body)) == message);
  }
  CHECK_THAT(load_error(with_server("listen = \"127.0.0.1:1\"\ntls = { cert = \"a\", key = \"b\", protocols = 1 }")),
             Contains("test.toml:3:32: server.tls.protocols: unknown key"));
  CHECK(load_error(with_server("listen = { tls = { cert = \"a\", key = \"b\" } }")) ==
        "test.toml:2:10: server.listen.address: required, e.g. { address = \"0.0.0.0:8443\", tls = { cert = ..., key = ... } }");
}

TEST_CASE("upstream TLS keys", "[config][tls]") {
  auto on = load_ok(kMinimal + "\n[upstreams.secure]\nservers = [\"shop.example:443\"]\ntls = true\n"
                               "tls_ca = \"/etc/ssl/shop-ca.pem\"\ntls_server_name = \"shop.example\"\n");
  const auto& u = on->upstreams[1];
  CHECK(u.tls.enabled);
  CHECK(u.tls.verify);
  CHECK(u.tls.ca_file == "/etc/ssl/shop-ca.pem");
  CHECK(u.tls.server_name == "shop.example");
  CHECK(u.tls.where == "test.toml:15:10: upstreams.secure.tls_ca");
  CHECK_FALSE(on->upstreams[0].tls.enabled);
  CHECK(load_error(kMinimal + "\n[upstreams.b]\nservers = [\"1.2.3.4:80\"]\ntls_verify = false\n") ==
        "test.toml:14:14: upstreams.b.tls_verify: has no effect without tls = true");
  CHECK(load_error(kMinimal + "\n[upstreams.b]\nservers = [\"1.2.3.4:80\"]\ntls = true\ntls_server_name = \"a b\"\n") ==
        "test.toml:15:19: upstreams.b.tls_server_name: expected a host name, got \"a b\"");
}
