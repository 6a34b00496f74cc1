// Ticket answers (202/200/304/410/502/504 and the errors) and the worker's long-polls.
#include "queue/ticket_service.h"

#include <algorithm>

#include "http/serialize.h"
#include "pages/page_answer.h"
#include "pages/strings.h"

namespace fg::queue {
namespace {

TicketReply error(int status, const char* code, const char* message, std::string extra = {}) {
  TicketReply r;
  r.kind = TicketReply::Kind::kError;
  r.outcome = TicketReply::Outcome::kError;
  r.status = status;
  r.code = code;
  r.message = message;
  r.extra = std::move(extra);
  return r;
}

const char* status_line_start(const http::RequestHead& head) {
  return head.version_minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ";
}

// A page answer for a browser navigation (to.pages set).
TicketReply page_reply(const ReplyTo& to, int status, pages::Page p, const pages::PageValues& v,
                       std::string_view extra) {
  TicketReply r;
  r.status = status;
  pages::Framing f;
  f.status = status;
  f.http10 = to.head.version_minor == 0;
  f.keep_alive = to.keep_alive;
  f.head = to.head.is_head();
  f.request_id = to.request_id;
  f.extra = extra;
  r.out = pages::page_answer(*to.pages, p, v, f);
  return r;
}

// The error page about a ticket: `headline` and `hint` in the request's language.
TicketReply ticket_error_page(const ReplyTo& to, int status, const std::string& ticket, pages::Text headline,
                              pages::Text hint, std::string_view extra) {
  pages::PageValues v = pages::request_values(to.head, to.request_id);
  v.message = pages::text(headline, v.lang);
  v.detail = pages::text(hint, v.lang);
  v.ticket_id = ticket;
  return page_reply(to, status, pages::Page::kError, v, extra);
}

// 202 for a ticket still owed a delivery: where it stands and when to ask again.
TicketReply waiting_reply(const ReplyTo& to, const std::string& ticket, const char* state, int64_t ahead,
                          int64_t eta_ms, bool with_etag) {
  std::string poll = std::string(to.tickets_path) + ticket;
  int64_t retry = std::clamp<int64_t>((eta_ms + 999) / 1000, 1, 30);
  std::string extra = "Location: " + poll + "\r\nRetry-After: " + std::to_string(retry) + "\r\n";
  if (to.pages != nullptr) {
    pages::PageValues v = pages::request_values(to.head, to.request_id);
    v.position = static_cast<uint64_t>(std::max<int64_t>(0, ahead));
    v.wait_seconds = static_cast<uint64_t>((std::max<int64_t>(0, eta_ms) + 999) / 1000);
    v.retry_after = static_cast<uint64_t>(retry);
    v.ticket_url = poll;
    v.poll_url = poll;
    v.ticket_id = ticket;
    return page_reply(to, 202, pages::Page::kWaiting, v, extra);
  }
  std::string body = "{\"ticket\":\"" + ticket + "\",\"status\":\"" + state + "\",\"position\":" +
                     std::to_string(ahead) + ",\"estimated_wait_ms\":" + std::to_string(eta_ms) + ",\"poll\":\"" +
                     poll + "\"}";
  std::string etag;
  if (with_etag) etag = "\"" + std::string(state, 1) + std::to_string(ahead) + "-" + std::to_string(eta_ms / 1000) + "\"";
  return json_reply(to, 202, body, etag, std::move(extra));
}

}  // namespace

TicketReply unavailable_reply() {
  return error(503, "redis_unavailable", "tickets are unavailable; retry shortly", "Retry-After: 1\r\n");
}

TicketReply unknown_reply() { return error(404, "unknown_ticket", "no such ticket"); }

TicketReply unknown_reply(const ReplyTo& to) {
  if (to.pages == nullptr) return unknown_reply();
  TicketReply r = ticket_error_page(to, 404, {}, pages::Text::k_expired, pages::Text::k_expired_hint, {});
  r.outcome = TicketReply::Outcome::kError;
  return r;
}

TicketReply json_reply(const ReplyTo& to, int status, std::string_view body, const std::string& etag,
                       std::string extra) {
  TicketReply r;
  r.status = status;
  const http::RequestHead& head = to.head;
  if (!etag.empty()) {
    extra += "ETag: " + etag + "\r\n";
    const http::Header* inm = http::find_header(head.headers, "If-None-Match");
    if (inm && (inm->value == etag || inm->value == "*")) {
      r.status = 304;
      r.out = status_line_start(head) + std::to_string(304) + " " + std::string(http::reason_phrase(304)) + "\r\n" +
              extra + "X-Request-Id: " + std::string(to.request_id) + "\r\n" +
              (to.keep_alive ? "" : "Connection: close\r\n") + "\r\n";
      return r;
    }
  }
  r.out = status_line_start(head) + std::to_string(status) + " " + std::string(http::reason_phrase(status)) +
          "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
          "\r\nCache-Control: no-store\r\n" + extra + "X-Request-Id: " + std::string(to.request_id) + "\r\n" +
          (to.keep_alive ? (head.version_minor == 0 ? "Connection: keep-alive\r\n" : "") : "Connection: close\r\n") +
          "\r\n";
  if (!head.is_head()) r.out.append(body);
  return r;
}

TicketReply parked_reply(const ReplyTo& to, const std::string& ticket, int64_t ahead, int64_t eta_ms) {
  return waiting_reply(to, ticket, "queued", ahead, eta_ms, false);
}

TicketReply ack_reply(const ReplyTo& to, int status, std::string_view content_type, std::string_view body,
                      const std::string& ticket) {
  const http::RequestHead& head = to.head;
  TicketReply r;
  r.status = status;
  r.out = status_line_start(head) + std::to_string(status) + " " + std::string(http::reason_phrase(status)) +
          "\r\nContent-Type: " + std::string(content_type) + "\r\nContent-Length: " + std::to_string(body.size()) +
          "\r\nX-Request-Id: " + std::string(to.request_id) + "\r\n";
  if (!ticket.empty()) r.out += "Location: " + std::string(to.tickets_path) + ticket + "\r\n";
  r.out += to.keep_alive ? (head.version_minor == 0 ? "Connection: keep-alive\r\n" : "") : "Connection: close\r\n";
  r.out += "\r\n";
  if (!head.is_head()) r.out.append(body);
  return r;
}

TicketReply cancel_reply(const ReplyTo& to, CancelResult result, const std::string& ticket) {
  switch (result) {
    case CancelResult::kCancelled:
      return json_reply(to, 200, "{\"ticket\":\"" + ticket + "\",\"status\":\"cancelled\"}", {}, {});
    case CancelResult::kTooLate: {
      TicketReply r = error(409, "not_cancellable", "the ticket is already being processed or finished");
      r.outcome = TicketReply::Outcome::kConflict;
      return r;
    }
    case CancelResult::kUnknown:
      return unknown_reply();
    case CancelResult::kUnavailable:
      break;
  }
  return unavailable_reply();
}

TicketReply view_reply(const ReplyTo& to, const TicketView& v, const std::string& ticket, int64_t eta_ms,
                       const StoredFormat& format) {
  using K = TicketView::Kind;
  switch (v.kind) {
    case K::kUnavailable:
      return unavailable_reply();
    case K::kUnknown:
      return unknown_reply(to);
    case K::kCancelled:
      if (to.pages != nullptr)
        return ticket_error_page(to, 410, ticket, pages::Text::k_cancelled, pages::Text::k_expired_hint, {});
      return json_reply(to, 410, "{\"ticket\":\"" + ticket + "\",\"status\":\"cancelled\"}", "\"c\"", {});
    case K::kQueued:
    case K::kProcessing:
      return waiting_reply(to, ticket, v.kind == K::kQueued ? "queued" : "processing", position(v), eta_ms, true);
    case K::kDone: {
      int stored_status = 0;
      if (!format.status(v.response, &stored_status))
        return error(500, "bad_stored_response", "the stored response could not be read");
      std::string etag = "\"d" + format.digest(v.response).substr(0, 16) + "\"";
      const http::Header* inm = http::find_header(to.head.headers, "If-None-Match");
      TicketReply r;
      r.outcome = TicketReply::Outcome::kReplayed;
      if (inm && inm->value == etag) {
        r.status = 304;
        r.out = std::string(to.head.version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1") +
                " 304 Not Modified\r\nETag: " + etag + "\r\nTicket-Status: done\r\nX-Request-Id: " +
                std::string(to.request_id) + "\r\n" + (to.keep_alive ? "" : "Connection: close\r\n") + "\r\n";
        return r;
      }
      r.kind = TicketReply::Kind::kStored;
      r.status = stored_status;
      r.stored = v.response;
      r.extra = "Ticket-Status: done\r\nETag: " + etag + "\r\n";
      return r;
    }
    case K::kFailed:
      break;
  }
  int status = v.reason == "timeout" || v.reason == "expired" ? 504 : 502;
  if (to.pages != nullptr) {
    const bool expired = v.reason == "expired";
    TicketReply r = ticket_error_page(to, status, ticket, expired ? pages::Text::k_expired : pages::Text::k_failed,
                                      expired ? pages::Text::k_expired_hint : pages::Text::k_failed_hint,
                                      "Ticket-Status: failed\r\n");
    r.outcome = TicketReply::Outcome::kError;
    return r;
  }
  std::string body = "{\"ticket\":\"" + ticket + "\",\"status\":\"failed\",\"reason\":\"";
  http::append_json_escaped(body, v.reason);
  body += "\",\"attempts\":" + std::to_string(v.attempts) + "}";
  std::string etag = "\"f" + std::to_string(v.attempts) + "-" + format.digest(v.reason).substr(0, 8) + "\"";
  TicketReply r = json_reply(to, status, body, etag, "Ticket-Status: failed\r\n");
  r.outcome = TicketReply::Outcome::kError;
  return r;
}

int64_t position(const TicketView& v) {
  return v.kind == TicketView::Kind::kQueued ? std::max<int64_t>(0, v.seq - v.taken - 1) : 0;
}

bool lazily_expired(const TicketView& v, uint64_t now_ms, uint64_t max_wait_ms) {
  // A ticket back from the retry set or re-delivered was dispatched long ago and is owed
  // its delivery: max_wait no longer applies (the expire script refuses it as well).
  return v.kind == TicketView::Kind::kQueued && v.requeued_ms == 0 && now_ms > static_cast<uint64_t>(v.created_ms) &&
         now_ms - static_cast<uint64_t>(v.created_ms) > max_wait_ms;
}

std::string expired_webhook_body(const std::string& ticket, const std::string& route) {
  return "{\"ticket\":\"" + ticket + "\",\"route\":\"" + route +
         "\",\"status\":\"failed\",\"reason\":\"expired\",\"attempts\":0}";
}

bool keep_waiting(const TicketView& v, bool final, int* first_kind) {
  int kind = static_cast<int>(v.kind);
  bool waiting = v.kind == TicketView::Kind::kQueued || v.kind == TicketView::Kind::kProcessing;
  if (final || !waiting || (*first_kind >= 0 && *first_kind != kind)) return false;
  *first_kind = kind;
  return true;
}

void TicketService::wait(const std::string& ticket, uint64_t deadline_ms, std::function<void()> wake) {
  waits_[ticket].push_back({std::move(wake), deadline_ms});
}

void TicketService::notify(std::string_view ticket, uint64_t now_ms) { take(ticket, now_ms); }

void TicketService::notify_due(uint64_t now_ms) {
  if (!waits_.empty()) take({}, now_ms);
}

void TicketService::notify_all(uint64_t now_ms) {
  std::vector<std::string> ids;
  for (const auto& [id, list] : waits_) ids.push_back(id);
  for (const auto& id : ids) take(id, now_ms);
}

void TicketService::take(std::string_view ticket, uint64_t now_ms) {
  std::vector<Wait> due;
  for (auto it = waits_.begin(); it != waits_.end();) {
    bool match = !ticket.empty() && it->first == ticket;
    auto& list = it->second;
    for (size_t i = 0; i < list.size();) {
      if (match || list[i].deadline_ms <= now_ms) {
        due.push_back(std::move(list[i]));
        list[i] = std::move(list.back());
        list.pop_back();
      } else {
        i++;
      }
    }
    if (list.empty()) it = waits_.erase(it);
    else ++it;
  }
  for (auto& w : due) w.wake();
}

}  // namespace fg::queue
