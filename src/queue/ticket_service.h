// The ticket stage: what a client is told about a ticket (just queued, polled,
// cancelled, acknowledged), built from the ticket's state as Redis holds it, and the
// worker's long-polls waiting for a ticket to change. Answers are plain functions of
// their inputs (tested without a socket); the Redis reads are queue_store.h's and
// the waits are woken by the worker's notification connection.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "http/message.h"
#include "pages/pages_config.h"
#include "queue/queue_store.h"

namespace fg::queue {

// One answer about a ticket.
struct TicketReply {
  enum class Kind {
    kError,   // the gateway's JSON error: status, code, message, `extra` header lines
    kRaw,     // `out` holds the whole response
    kStored,  // a stored upstream response: `stored` (encoded), `extra` header lines
  };
  enum class Outcome { kQueued, kReplayed, kConflict, kError };
  Kind kind = Kind::kRaw;
  Outcome outcome = Outcome::kQueued;
  int status = 0;
  const char* code = "";
  const char* message = "";
  std::string extra;
  std::string out;
  std::string stored;
};

// How the answer is framed for the client that asked.
struct ReplyTo {
  const http::RequestHead& head;
  std::string_view request_id;
  bool keep_alive;
  std::string_view tickets_path;  // server.tickets_path
  // A browser navigation's page set (pages::page_set_for), null for JSON: a waiting ticket
  // then answers with the waiting page, a failed, cancelled or unknown one with the error
  // page (same status, Location, Retry-After, Ticket-Status; no ETag, no 304).
  const pages::PageSet* pages = nullptr;
};

// Redis cannot be asked: 503 with Retry-After.
TicketReply unavailable_reply();
TicketReply unknown_reply();
// The same for `to`: the error page for a browser navigation.
TicketReply unknown_reply(const ReplyTo& to);
// A JSON body about a ticket (Cache-Control: no-store); with an `etag`, a matching
// If-None-Match gets 304.
TicketReply json_reply(const ReplyTo& to, int status, std::string_view body, const std::string& etag,
                       std::string extra);
// A request just parked as `ticket` with `ahead` tickets before it: 202 with where to poll.
TicketReply parked_reply(const ReplyTo& to, const std::string& ticket, int64_t ahead, int64_t eta_ms);
// The acknowledgement a store_and_forward route gives (`ticket` empty: not known).
TicketReply ack_reply(const ReplyTo& to, int status, std::string_view content_type, std::string_view body,
                      const std::string& ticket);
// The answer to DELETE of a ticket.
TicketReply cancel_reply(const ReplyTo& to, CancelResult r, const std::string& ticket);
// How stored responses are read and digested (the idempotency store's format, which
// the queue only carries): `status` false when `stored` cannot be read.
struct StoredFormat {
  bool (*status)(std::string_view stored, int* status);
  std::string (*digest)(std::string_view data);  // hex, for ETags
};
// The answer to GET of a ticket in state `v` (`eta_ms`: for a queued or processing one).
TicketReply view_reply(const ReplyTo& to, const TicketView& v, const std::string& ticket, int64_t eta_ms,
                       const StoredFormat& format);
// Tickets before this one (queued), or 0.
int64_t position(const TicketView& v);
// A queued ticket nobody dispatched within `max_wait_ms` counts as expired when read
// (never one queued again after a retry or a re-delivery).
bool lazily_expired(const TicketView& v, uint64_t now_ms, uint64_t max_wait_ms);
// The failure a webhook reports for a ticket expired on read.
std::string expired_webhook_body(const std::string& ticket, const std::string& route);
// Long-poll: keep waiting (not `final`, still queued or processing, same state as at
// the first read, `first_kind` < 0 before it). Updates `first_kind`.
bool keep_waiting(const TicketView& v, bool final, int* first_kind);

// The worker's long-polls. Loop thread only.
class TicketService {
 public:
  // `wake` runs when a change of `ticket` is published, or once `deadline_ms` (loop
  // time) passed (see notify_due). It must check that its request is still waiting
  // (a wait whose request went away stays until then, bounded by the poll's wait).
  void wait(const std::string& ticket, uint64_t deadline_ms, std::function<void()> wake);
  // A change of `ticket` was published (waits past their deadline wake too).
  void notify(std::string_view ticket, uint64_t now_ms);
  // Wakes every wait whose deadline passed.
  void notify_due(uint64_t now_ms);
  // After a reconnect a change may have been missed: every wait re-reads.
  void notify_all(uint64_t now_ms);
  bool empty() const { return waits_.empty(); }
  void clear() { waits_.clear(); }

 private:
  struct Wait {
    std::function<void()> wake;
    uint64_t deadline_ms;
  };
  // Wakes the waits of `ticket` (empty: none) and those due at `now_ms`. Waits are
  // called after the map is updated: they may register again.
  void take(std::string_view ticket, uint64_t now_ms);
  std::unordered_map<std::string, std::vector<Wait>> waits_;
};

}  // namespace fg::queue
