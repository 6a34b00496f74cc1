// Tests for the ticket endpoint stage: which requests it takes, methods, ids and the
// ?wait= long-poll parameter, without a socket.
#include "queue/ticket_endpoint.h"

#include <catch2/catch.hpp>

namespace {

using fg::queue::parse_ticket_request;
constexpr const char* kPath = "/_floodgate/tickets/";

fg::queue::TicketRequest get(const char* target) {
  std::string_view t(target);
  return parse_ticket_request("GET", t, t.substr(0, t.find('?')), kPath);
}

}  // namespace

TEST_CASE("only paths under tickets_path are ticket requests") {
  CHECK_FALSE(get("/api/orders").matches);
  CHECK_FALSE(get("/_floodgate/ticket").matches);
  auto t = get("/_floodgate/tickets/AwzB4dk1Mbwf47s7Umi4BQ");
  CHECK(t.matches);
  CHECK(t.method_allowed);
  CHECK_FALSE(t.cancel);
  CHECK(t.id == "AwzB4dk1Mbwf47s7Umi4BQ");
  CHECK(t.wait_s == 0);
}

TEST_CASE("GET, HEAD and DELETE are allowed; DELETE cancels") {
  std::string_view p = "/_floodgate/tickets/x";
  CHECK(parse_ticket_request("HEAD", p, p, kPath).method_allowed);
  auto del = parse_ticket_request("DELETE", p, p, kPath);
  CHECK(del.method_allowed);
  CHECK(del.cancel);
  auto post = parse_ticket_request("POST", p, p, kPath);
  CHECK(post.matches);
  CHECK_FALSE(post.method_allowed);
}

TEST_CASE("wait= is read as whole seconds, capped at 30, only as its own parameter") {
  CHECK(get("/_floodgate/tickets/x?wait=5").wait_s == 5);
  CHECK(get("/_floodgate/tickets/x?a=1&wait=12").wait_s == 12);
  CHECK(get("/_floodgate/tickets/x?wait=99999999").wait_s == 30);
  CHECK(get("/_floodgate/tickets/x?wait=abc").wait_s == 0);
  CHECK(get("/_floodgate/tickets/x?nowait=5").wait_s == 0);
  CHECK(get("/_floodgate/tickets/x?wait=7").id == "x");
}
