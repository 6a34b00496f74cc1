// The ticket stage without a socket: the answers a client gets about a ticket in each
// state (status, body, ETag, 304, outcome; a page for a browser navigation) and the
// long-poll waits.
#include "queue/ticket_service.h"

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "pages/page_answer.h"

namespace {

using fg::http::RequestHead;
using fg::queue::ReplyTo;
using fg::queue::TicketReply;
using fg::queue::TicketService;
using fg::queue::TicketView;
using K = TicketView::Kind;

RequestHead get(std::string inm = {}) {
  RequestHead h;
  h.method = "GET";
  h.target = "/_floodgate/tickets/t1";
  h.version_minor = 1;
  if (!inm.empty()) h.headers.push_back({"If-None-Match", std::move(inm)});
  return h;
}

TicketView view(K kind) {
  TicketView v;
  v.kind = kind;
  v.route = "orders";
  return v;
}

bool has(const std::string& out, const std::string& part) { return out.find(part) != std::string::npos; }

// A stand-in for the idempotency store's format: "<status> ..." and a digest that
// tells inputs apart by their length.
const fg::queue::StoredFormat kFormat{
    [](std::string_view stored, int* status) {
      if (stored.size() < 3 || stored[0] < '1' || stored[0] > '5') return false;
      *status = std::stoi(std::string(stored.substr(0, 3)));
      return true;
    },
    [](std::string_view data) { return std::to_string(data.size()) + "00000000000000000000"; }};

std::shared_ptr<const fg::pages::PageSet> builtin_pages() {
  auto loaded = fg::pages::load_pages(fg::pages::PagesConfig{}, "test.toml");
  REQUIRE(loaded.is_ok());
  return loaded.value();
}

RequestHead navigation(std::string lang = "en-US,en;q=0.9", std::string method = "GET") {
  RequestHead h;
  h.method = std::move(method);
  h.target = "/t/t1";
  h.host = "shop.example";
  h.headers = {{"Sec-Fetch-Mode", "navigate"}, {"Accept", "text/html,*/*;q=0.8"}, {"Accept-Language", lang}};
  return h;
}

}  // namespace

TEST_CASE("a parked request gets 202 with its position, estimate and where to poll") {
  RequestHead h = get();
  ReplyTo to{h, "rid1", true, "/_floodgate/tickets/"};
  TicketReply r = fg::queue::parked_reply(to, "t1", 3, 2500);
  CHECK(r.kind == TicketReply::Kind::kRaw);
  CHECK(r.status == 202);
  CHECK(r.outcome == TicketReply::Outcome::kQueued);
  CHECK(has(r.out, "HTTP/1.1 202 Accepted\r\n"));
  CHECK(has(r.out, "Location: /_floodgate/tickets/t1\r\nRetry-After: 3\r\n"));
  CHECK(has(r.out, "X-Request-Id: rid1\r\n"));
  CHECK(has(r.out, "{\"ticket\":\"t1\",\"status\":\"queued\",\"position\":3,\"estimated_wait_ms\":2500,"
                   "\"poll\":\"/_floodgate/tickets/t1\"}"));
  CHECK_FALSE(has(r.out, "ETag"));
}

TEST_CASE("a queued ticket's ETag gives 304 when the client has it") {
  TicketView v = view(K::kQueued);
  v.seq = 10;
  v.taken = 4;
  CHECK(fg::queue::position(v) == 5);
  RequestHead h = get();
  TicketReply r = fg::queue::view_reply(ReplyTo{h, "r", true, "/t/"}, v, "t1", 1200, kFormat);
  CHECK(r.status == 202);
  CHECK(has(r.out, "ETag: \"q5-1\"\r\n"));
  RequestHead again = get("\"q5-1\"");
  r = fg::queue::view_reply(ReplyTo{again, "r", false, "/t/"}, v, "t1", 1200, kFormat);
  CHECK(r.status == 304);
  CHECK(has(r.out, "HTTP/1.1 304 Not Modified\r\n"));
  CHECK(has(r.out, "Connection: close\r\n"));
  CHECK_FALSE(has(r.out, "position"));
}

TEST_CASE("failed, cancelled, unknown and unavailable tickets") {
  RequestHead h = get();
  ReplyTo to{h, "r", true, "/t/"};
  TicketView v = view(K::kFailed);
  v.reason = "timeout";
  v.attempts = 3;
  TicketReply r = fg::queue::view_reply(to, v, "t1", 0, kFormat);
  CHECK(r.status == 504);
  CHECK(r.outcome == TicketReply::Outcome::kError);
  CHECK(has(r.out, "\"reason\":\"timeout\",\"attempts\":3}"));
  CHECK(has(r.out, "Ticket-Status: failed\r\n"));
  v.reason = "upstream said \"no\"";
  r = fg::queue::view_reply(to, v, "t1", 0, kFormat);
  CHECK(r.status == 502);
  CHECK(has(r.out, "upstream said \\\"no\\\""));
  CHECK(has(r.out, "ETag: \"f3-18000000\"\r\n"));

  r = fg::queue::view_reply(to, view(K::kCancelled), "t1", 0, kFormat);
  CHECK(r.status == 410);
  CHECK(has(r.out, "ETag: \"c\"\r\n"));

  r = fg::queue::view_reply(to, view(K::kUnknown), "t1", 0, kFormat);
  CHECK(r.kind == TicketReply::Kind::kError);
  CHECK(r.status == 404);
  r = fg::queue::view_reply(to, view(K::kUnavailable), "t1", 0, kFormat);
  CHECK(r.status == 503);
  CHECK(r.extra == "Retry-After: 1\r\n");

  CHECK(fg::queue::cancel_reply(to, fg::queue::CancelResult::kTooLate, "t1").outcome ==
        TicketReply::Outcome::kConflict);
  CHECK(fg::queue::cancel_reply(to, fg::queue::CancelResult::kCancelled, "t1").status == 200);
}

TEST_CASE("a done ticket answers with the stored response, or 304 on its ETag") {
  RequestHead h = get();
  TicketView v = view(K::kDone);
  v.response = "201 Created\r\nContent-Type: text/plain\r\n\r\nmade";
  TicketReply r = fg::queue::view_reply(ReplyTo{h, "r", true, "/t/"}, v, "t1", 0, kFormat);
  REQUIRE(r.kind == TicketReply::Kind::kStored);
  CHECK(r.status == 201);
  CHECK(r.outcome == TicketReply::Outcome::kReplayed);
  CHECK(r.stored == v.response);
  CHECK(has(r.extra, "Ticket-Status: done\r\n"));
  std::string etag = r.extra.substr(r.extra.find("ETag: ") + 6);
  etag.resize(etag.size() - 2);
  RequestHead again = get(etag);
  r = fg::queue::view_reply(ReplyTo{again, "r", true, "/t/"}, v, "t1", 0, kFormat);
  CHECK(r.status == 304);
  CHECK(r.outcome == TicketReply::Outcome::kReplayed);

  v.response = "garbage";
  r = fg::queue::view_reply(ReplyTo{h, "r", true, "/t/"}, v, "t1", 0, kFormat);
  CHECK(r.status == 500);
}

TEST_CASE("a store_and_forward acknowledgement carries the route's body and the ticket") {
  RequestHead h = get();
  h.method = "HEAD";
  TicketReply r = fg::queue::ack_reply(ReplyTo{h, "r", true, "/t/"}, 200, "text/plain", "success", "t7");
  CHECK(has(r.out, "Content-Length: 7\r\n"));
  CHECK(has(r.out, "Location: /t/t7\r\n"));
  CHECK_FALSE(has(r.out, "success"));  // HEAD
}

TEST_CASE("lazy expiry and the long-poll rule") {
  TicketView v = view(K::kQueued);
  v.created_ms = 1000;
  CHECK_FALSE(fg::queue::lazily_expired(v, 1500, 1000));
  CHECK(fg::queue::lazily_expired(v, 2001, 1000));
  v.requeued_ms = 1900;  // back from the retry set: owed a delivery, never expired
  CHECK_FALSE(fg::queue::lazily_expired(v, 99000, 1000));
  v.requeued_ms = 0;
  v.kind = K::kProcessing;
  CHECK_FALSE(fg::queue::lazily_expired(v, 9000, 1000));

  int first = -1;
  CHECK(fg::queue::keep_waiting(v, false, &first));      // first read: wait
  CHECK(fg::queue::keep_waiting(v, false, &first));      // unchanged: wait on
  CHECK_FALSE(fg::queue::keep_waiting(v, true, &first));  // deadline
  v.kind = K::kDone;
  CHECK_FALSE(fg::queue::keep_waiting(v, false, &first));
  v.kind = K::kQueued;
  CHECK_FALSE(fg::queue::keep_waiting(v, false, &first));  // changed since the first read
}

TEST_CASE("long-poll waits wake on their ticket's change, on their deadline, or all at once") {
  TicketService s;
  std::vector<std::string> woke;
  s.wait("a", 1000, [&] { woke.push_back("a"); });
  s.wait("b", 5000, [&] { woke.push_back("b"); });
  s.notify("a", 10);
  CHECK(woke == std::vector<std::string>{"a"});
  s.notify_due(4000);
  CHECK(woke.size() == 1);
  s.notify_due(5000);
  CHECK(woke == std::vector<std::string>{"a", "b"});
  CHECK(s.empty());
  // A wait that registers again from its wake is kept for the next change.
  int n = 0;
  std::function<void()> again = [&] {
    if (++n < 2) s.wait("c", 9000, again);
  };
  s.wait("c", 9000, again);
  s.notify_all(0);
  CHECK(n == 1);
  CHECK_FALSE(s.empty());
  s.notify("c", 0);
  CHECK(n == 2);
  CHECK(s.empty());
}

// Ticket answers for a browser navigation (ReplyTo::pages set): the waiting page for a
// waiting ticket, the error page for a failed, expired, cancelled or unknown one, the
// stored answer unchanged for a done one. Same status and headers as the JSON, no ETag.

TEST_CASE("only a browser navigation gets pages, and only while [pages] is enabled", "[pages]") {
  auto set = builtin_pages();
  CHECK(fg::pages::page_set_for(set.get(), navigation()) == set.get());
  RequestHead api = navigation();
  api.headers = {{"Accept", "*/*"}};
  CHECK(fg::pages::page_set_for(set.get(), api) == nullptr);
  CHECK(fg::pages::page_set_for(nullptr, navigation()) == nullptr);
  fg::pages::PagesConfig off;
  off.enabled = false;
  auto disabled = fg::pages::load_pages(off, "test.toml");
  REQUIRE(disabled.is_ok());
  CHECK(fg::pages::page_set_for(disabled.value().get(), navigation()) == nullptr);
}

TEST_CASE("a parked request and a waiting ticket get the waiting page", "[pages]") {
  auto set = builtin_pages();
  RequestHead h = navigation();
  ReplyTo to{h, "rid1", true, "/t/", set.get()};
  TicketReply r = fg::queue::parked_reply(to, "t1", 3, 2500);
  CHECK(r.kind == TicketReply::Kind::kRaw);
  CHECK(r.status == 202);
  CHECK(r.outcome == TicketReply::Outcome::kQueued);
  CHECK(has(r.out, "HTTP/1.1 202 Accepted\r\nContent-Type: text/html; charset=utf-8\r\n"));
  CHECK(has(r.out, "Location: /t/t1\r\nRetry-After: 3\r\nX-Request-Id: rid1\r\n"));
  CHECK(has(r.out, "<dd id=\"position\">3</dd>"));
  CHECK(has(r.out, "data-wait=\"3\""));
  CHECK(has(r.out, "shop.example"));
  CHECK_FALSE(has(r.out, "ETag"));
  CHECK_FALSE(has(r.out, "\"ticket\":"));

  // A poll with the JSON's ETag still gets the page (no 304 for a page).
  TicketView v = view(K::kQueued);
  v.seq = 10;
  v.taken = 4;
  h.headers.push_back({"If-None-Match", "\"q5-1\""});
  r = fg::queue::view_reply(to, v, "t1", 1200, kFormat);
  CHECK(r.status == 202);
  CHECK(has(r.out, "<dd id=\"position\">5</dd>"));
  CHECK_FALSE(has(r.out, "ETag"));

  RequestHead head = navigation("zh-CN", "HEAD");
  r = fg::queue::view_reply(ReplyTo{head, "r", false, "/t/", set.get()}, view(K::kProcessing), "t1", 0, kFormat);
  CHECK(r.status == 202);
  CHECK(has(r.out, "Connection: close\r\n\r\n"));
  CHECK(r.out.substr(r.out.size() - 4) == "\r\n\r\n");  // HEAD: no body
}

TEST_CASE("failed, expired, cancelled and unknown tickets get the error page", "[pages]") {
  auto set = builtin_pages();
  RequestHead h = navigation();
  ReplyTo to{h, "r", true, "/t/", set.get()};
  TicketView v = view(K::kFailed);
  v.reason = "upstream_status_500";
  TicketReply r = fg::queue::view_reply(to, v, "t1", 0, kFormat);
  CHECK(r.status == 502);
  CHECK(r.outcome == TicketReply::Outcome::kError);
  CHECK(has(r.out, "Ticket-Status: failed\r\n"));
  CHECK(has(r.out, "Your request could not be completed."));
  CHECK(has(r.out, "check your orders"));
  CHECK(has(r.out, "t1"));
  v.reason = "expired";
  r = fg::queue::view_reply(to, v, "t1", 0, kFormat);
  CHECK(r.status == 504);
  CHECK(has(r.out, "Your place in line has expired."));

  r = fg::queue::view_reply(to, view(K::kCancelled), "t1", 0, kFormat);
  CHECK(r.status == 410);
  CHECK(has(r.out, "Your request was cancelled."));

  RequestHead zh = navigation("zh-TW,zh;q=0.9");
  r = fg::queue::view_reply(ReplyTo{zh, "r", true, "/t/", set.get()}, view(K::kUnknown), "t1", 0, kFormat);
  CHECK(r.kind == TicketReply::Kind::kRaw);
  CHECK(r.status == 404);
  CHECK(has(r.out, "您的排队已过期。"));
  CHECK(has(r.out, "<html lang=\"zh-CN\">"));
}

TEST_CASE("a done ticket replays the stored answer to a browser unchanged", "[pages]") {
  auto set = builtin_pages();
  RequestHead h = navigation();
  TicketView v = view(K::kDone);
  v.response = "303 See Other\r\nLocation: /orders/o-1\r\n\r\n";
  TicketReply r = fg::queue::view_reply(ReplyTo{h, "r", true, "/t/", set.get()}, v, "t1", 0, kFormat);
  REQUIRE(r.kind == TicketReply::Kind::kStored);
  CHECK(r.status == 303);
  CHECK(r.stored == v.response);
  CHECK(has(r.extra, "Ticket-Status: done\r\n"));
}

TEST_CASE("Retry-After is read from the header lines of a JSON answer", "[pages]") {
  CHECK(fg::pages::retry_after_in("Retry-After: 5\r\n") == 5u);
  CHECK(fg::pages::retry_after_in("RateLimit: x\r\nretry-after:12\r\n") == 12u);
  CHECK_FALSE(fg::pages::retry_after_in("Retry-After: soon\r\n").has_value());
  CHECK_FALSE(fg::pages::retry_after_in("").has_value());
}
