// Tests for the on_failure_webhook URL parser: parsed once, strictly (no atoi).
#include <catch2/catch.hpp>

#include "proxy/dispatcher.h"

using fg::proxy::parse_webhook_url;
using fg::proxy::WebhookUrl;

TEST_CASE("webhook URLs: host, port and path") {
  WebhookUrl u;
  REQUIRE(parse_webhook_url("http://hooks.example:8080/failed/tickets", &u));
  CHECK(u.hostport == "hooks.example:8080");
  CHECK(u.server.host == "hooks.example");
  CHECK(u.server.port == 8080);
  CHECK(u.server.text == "hooks.example:8080");
  CHECK(u.path == "/failed/tickets");

  REQUIRE(parse_webhook_url("http://10.0.0.5", &u));
  CHECK(u.server.host == "10.0.0.5");
  CHECK(u.server.port == 80);
  CHECK(u.path == "/");

  REQUIRE(parse_webhook_url("http://[::1]:9000/x", &u));
  CHECK(u.server.host == "::1");
  CHECK(u.server.port == 9000);
  CHECK(u.hostport == "[::1]:9000");

  REQUIRE(parse_webhook_url("http://[::1]/x", &u));
  CHECK(u.server.host == "::1");
  CHECK(u.server.port == 80);
}

TEST_CASE("webhook URLs: a malformed port or scheme is refused, never read as a number prefix") {
  WebhookUrl u;
  CHECK_FALSE(parse_webhook_url("http://h:80x/", &u));
  CHECK_FALSE(parse_webhook_url("http://h:0/", &u));
  CHECK_FALSE(parse_webhook_url("http://h:70000/", &u));
  CHECK_FALSE(parse_webhook_url("http://h:/", &u));
  CHECK_FALSE(parse_webhook_url("https://h/", &u));
  CHECK_FALSE(parse_webhook_url("http://:81/", &u));
}
