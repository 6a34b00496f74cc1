// Shared by the config unit tests (one file per feature's settings): a minimal valid
// file, builders that put a snippet on a known line, and load helpers.
#pragma once

#include <catch2/catch.hpp>

#include <memory>
#include <string>

#include "floodgate/config.h"

namespace fg::config_test {

using fg::Config;

inline const char* const kName = "test.toml";

// Smallest valid file; error tests append to or edit a copy of it.
inline const std::string kMinimal = R"([server]
listen = "127.0.0.1:8080"

[upstreams.shop]
servers = ["127.0.0.1:8081"]

[[routes]]
name = "all"
match = { prefix = "/" }
upstream = "shop"
)";

inline std::shared_ptr<const Config> load_ok(const std::string& text) {
  auto r = fg::config::load_string(text, kName);
  INFO(r.message());
  REQUIRE(r.is_ok());
  return r.value();
}

inline std::string load_error(const std::string& text) {
  auto r = fg::config::load_string(text, kName);
  REQUIRE_FALSE(r.is_ok());
  return r.message();
}

// kMinimal with [server] replaced by the given body.
inline std::string with_server(const std::string& body) {
  return "[server]\n" + body + R"(

[upstreams.shop]
servers = ["127.0.0.1:8081"]

[[routes]]
name = "all"
match = { prefix = "/" }
upstream = "shop"
)";
}

// A valid [server] and [upstreams.shop] followed by the given routes, which
// start on line 7.
inline std::string with_routes(const std::string& routes) {
  return R"([server]
listen = "127.0.0.1:8080"

[upstreams.shop]
servers = ["127.0.0.1:8081"]

)" + routes;
}

// [upstreams.shop] with extra keys from line 6, and a valid catch-all route.
inline std::string with_upstream(const std::string& extra) {
  return "[server]\nlisten = \"127.0.0.1:8080\"\n\n[upstreams.shop]\nservers = [\"127.0.0.1:8081\"]\n" + extra +
         "\n[[routes]]\nname = \"all\"\nmatch = { prefix = \"/\" }\nupstream = \"shop\"\n";
}

// A route "r" matching the given methods (a TOML array) under "/", with extra
// keys from line 11.
inline std::string methods_route(const std::string& methods, const std::string& extra) {
  return with_routes("[[routes]]\nname = \"r\"\nmatch = { methods = " + methods +
                     ", prefix = \"/\" }\nupstream = \"shop\"\n" + extra);
}

// A valid route "r" (catch-all) with extra keys, which start on line 11.
inline std::string route_with(const std::string& extra) {
  return with_routes("[[routes]]\nname = \"r\"\nmatch = { prefix = \"/\" }\nupstream = \"shop\"\n" + extra);
}

// Route "r" with `idempotency = <value>` on line 11 (the value starts at
// column 15), followed by a [redis] table so that the route is valid.
inline std::string idem_route(const std::string& value) {
  return route_with("idempotency = " + value + "\n") + "\n[redis]\nurl = \"redis://127.0.0.1:6379/0\"\n";
}

// Route "r" with overflow = "queue" (and the rate it needs), extra keys from
// line 13, and a [redis] table after them.
inline std::string queue_route(const std::string& extra) {
  return route_with("rate = 10\noverflow = \"queue\"\n" + extra) + "\n[redis]\n";
}

// Route "r" with mode = "store_and_forward", extra keys from line 12, and a
// [redis] table after them.
inline std::string sf_route(const std::string& extra) {
  return route_with("mode = \"store_and_forward\"\n" + extra) + "\n[redis]\n";
}

// Like queue_route, but the upstream answers within 60ms (connect_timeout +
// timeout), so that short processing timeouts are allowed. Extra keys start on
// line 15.
inline std::string fast_queue_route(const std::string& extra) {
  return "[server]\nlisten = \"127.0.0.1:8080\"\n\n[upstreams.shop]\nservers = [\"127.0.0.1:8081\"]\n"
         "connect_timeout = \"10ms\"\ntimeout = \"50ms\"\n\n"
         "[[routes]]\nname = \"r\"\nmatch = { prefix = \"/\" }\nupstream = \"shop\"\nrate = 10\n"
         "overflow = \"queue\"\n" +
         extra + "\n[redis]\n";
}

// The webhook a queued route ends up with, or the error for it.
inline std::string webhook(const std::string& url) {
  auto r = fg::config::load_string(queue_route("on_failure_webhook = \"" + url + "\"\n"), kName);
  return r.is_ok() ? r.value()->routes[0].on_failure_webhook : r.message();
}


}  // namespace fg::config_test
