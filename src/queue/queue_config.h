// The queue settings of a route (queue, ack, client_max_tickets, on_failure_webhook)
// and their validation (queue_config.cc). The webhook URL is parsed once, here.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "config/reader_fwd.h"
#include "floodgate/status.h"
#include "queue/retry_schedule.h"

namespace fg {

struct UpstreamConfig;

// The durable queue of a route (SPEC §6): used by overflow = "queue" and by
// mode = "store_and_forward".
struct QueueConfig {
  uint64_t max_depth = 200000;             // 503 queue_full beyond
  uint64_t max_wait_ms = 10 * 60 * 1000;   // not dispatched by then: failed, reason "expired"
  uint64_t processing_timeout_ms = 30000;  // a delivery idle this long is reclaimed
  uint64_t ticket_ttl_ms = 3600 * 1000;    // a finished ticket stays readable this long
  uint64_t concurrency = 64;               // deliveries in flight per worker for this route
};

struct AckConfig {
  int status = 200;
  std::string body = "success";
  std::string content_type = "text/plain";
};

// on_failure_webhook, parsed: "http://HOST[:PORT][/PATH]".
struct WebhookUrl {
  std::string host;       // IPv4, IPv6 (no brackets) or a host name
  uint16_t port = 80;
  std::string path = "/"; // starts with '/', may carry a query
  bool ipv6 = false;
  // "http://10.0.0.5:80/hook": the URL with port and path spelled out.
  std::string text() const;
  // The Host header value: "host:port", IPv6 in brackets.
  std::string authority() const;
};

// Parses an on_failure_webhook value; the message says what is wrong (without the URL).
Result<WebhookUrl> parse_webhook_url(const std::string& url);

// The queue-related fields of a route (RouteConfig derives from this).
struct RouteQueueConfig {
  AckConfig ack;
  QueueConfig queue;
  uint64_t client_max_tickets = 0;  // 0: unlimited
  std::string on_failure_webhook;   // normalised "http://host:port/path"; empty: none
  WebhookUrl on_failure_webhook_url;  // the same, parsed (meaningful when the string is set)
  // retry_schedule / retry_jitter: the durable retries of a queued delivery, ending in a
  // dead letter instead of "failed". Set on every store_and_forward route (the default
  // schedule when the key is absent); on other queued routes only when written.
  std::optional<queue::RetrySchedule> retry_schedule;
};

namespace queue {
// Reads ack, queue, client_max_tickets, on_failure_webhook, retry_schedule and retry_jitter
// of the route table into
// `out`. `store_and_forward`/`queued`: what the route asks for as written; `upstream`
// (may be null when unknown) bounds processing_timeout. Config loading only.
void load_route_queueing(config::Reader& reader, const config::Table& route, bool store_and_forward, bool queued,
                         const UpstreamConfig* upstream, RouteQueueConfig& out);
}  // namespace queue

}  // namespace fg
