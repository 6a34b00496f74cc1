// Sentinel replies and announcements as the discovery reads them (no sockets).
#include "redis/sentinel.h"

#include <catch2/catch.hpp>

#include <string>

namespace {

using fg::redis::Reply;

Reply text(const std::string& s, Reply::Type type = Reply::Type::kString) {
  Reply r;
  r.type = type;
  r.str = s;
  return r;
}

Reply array(std::initializer_list<Reply> items) {
  Reply r;
  r.type = Reply::Type::kArray;
  r.elements.assign(items.begin(), items.end());
  return r;
}

}  // namespace

TEST_CASE("get-master-addr-by-name answers are read", "[redis][sentinel]") {
  std::string host;
  uint16_t port = 0;
  CHECK(fg::redis::parse_master_addr(array({text("10.0.0.7"), text("6380")}), &host, &port));
  CHECK(host == "10.0.0.7");
  CHECK(port == 6380);
  CHECK(fg::redis::parse_master_addr(array({text("::1"), text("6379")}), &host, &port));
  CHECK(host == "::1");

  SECTION("nil (unknown master name) and malformed answers are refused") {
    host = "unchanged";
    CHECK_FALSE(fg::redis::parse_master_addr(Reply{}, &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(text("ERR No such master with that name", Reply::Type::kError), &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(array({text("10.0.0.7")}), &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(array({text("10.0.0.7"), text("6380"), text("x")}), &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(array({text(""), text("6380")}), &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(array({text("h"), text("0")}), &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(array({text("h"), text("65536")}), &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(array({text("h"), text("63a")}), &host, &port));
    CHECK(host == "unchanged");
  }
}

TEST_CASE("+switch-master announcements are read for their master only", "[redis][sentinel]") {
  std::string old_host, host;
  uint16_t old_port = 0, port = 0;
  CHECK(fg::redis::parse_switch_master("shop 127.0.0.1 6379 127.0.0.1 6380", "shop", &old_host, &old_port, &host, &port));
  CHECK(old_host == "127.0.0.1");
  CHECK(old_port == 6379);
  CHECK(host == "127.0.0.1");
  CHECK(port == 6380);

  CHECK_FALSE(fg::redis::parse_switch_master("other 10.0.0.1 6379 10.0.0.2 6379", "shop", &old_host, &old_port, &host,
                                             &port));
  CHECK_FALSE(fg::redis::parse_switch_master("shop 10.0.0.1 6379 10.0.0.2", "shop", &old_host, &old_port, &host, &port));
  CHECK_FALSE(fg::redis::parse_switch_master("shop 10.0.0.1 6379 10.0.0.2 6379 extra", "shop", &old_host, &old_port,
                                             &host, &port));
  CHECK_FALSE(fg::redis::parse_switch_master("shop 10.0.0.1 x 10.0.0.2 6379", "shop", &old_host, &old_port, &host, &port));
  CHECK_FALSE(fg::redis::parse_switch_master("", "shop", &old_host, &old_port, &host, &port));
  CHECK(port == 6380);  // untouched by the refusals
}

TEST_CASE("ROLE answers give the role", "[redis][sentinel]") {
  Reply offset;
  offset.type = Reply::Type::kInteger;
  CHECK(fg::redis::role_of(array({text("master"), offset, array({})})) == "master");
  CHECK(fg::redis::role_of(array({text("slave"), text("127.0.0.1"), offset})) == "slave");
  CHECK(fg::redis::role_of(array({text("sentinel"), array({text("shop")})})) == "sentinel");
  CHECK(fg::redis::role_of(array({})).empty());
  CHECK(fg::redis::role_of(text("master")).empty());
  CHECK(fg::redis::role_of(array({offset})).empty());
}
