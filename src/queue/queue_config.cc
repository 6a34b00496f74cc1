// Validation of a route's queue settings and the webhook URL (see queue_config.h).
#include "queue/queue_config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdlib>

#include "config/reader.h"
#include "config/upstream_config.h"

namespace fg {

// "http://HOST[:PORT][/PATH]" with HOST a literal IPv4 address, a [bracketed]
// IPv6 address or a host name.
Result<WebhookUrl> parse_webhook_url(const std::string& url) {
  auto lower_prefix = [&](std::string_view prefix) {
    if (url.size() < prefix.size()) return false;
    for (size_t i = 0; i < prefix.size(); ++i) {
      const char c = url[i];
      const char l = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
      if (l != prefix[i]) return false;
    }
    return true;
  };
  if (lower_prefix("https://")) {
    return Status::error("https:// is not supported; the webhook is posted over plain http:// (point it at a local relay for TLS)");
  }
  if (!lower_prefix("http://")) {
    return Status::error("expected \"http://HOST[:PORT]/PATH\"");
  }
  const std::string rest = url.substr(7);
  if (rest.find('#') != std::string::npos) {
    return Status::error("must not contain a fragment ('#')");
  }
  const size_t path_at = rest.find_first_of("/?");
  const std::string authority = rest.substr(0, path_at);
  std::string path = path_at == std::string::npos ? "/" : rest.substr(path_at);
  if (path.front() == '?') path = "/" + path;
  if (authority.find('@') != std::string::npos) {
    return Status::error("user information (\"user@\") is not supported");
  }
  std::string host;
  std::string port_text;
  bool v6 = false;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string::npos) {
      return Status::error("missing ']' after the IPv6 address");
    }
    host = authority.substr(1, close - 1);
    in6_addr a6{};
    if (inet_pton(AF_INET6, host.c_str(), &a6) != 1) {
      return Status::error("not an IPv6 address inside [...]");
    }
    v6 = true;
    const std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return Status::error("expected \":PORT\" after the IPv6 address");
      }
      port_text = after.substr(1);
      if (port_text.empty()) return Status::error("port must be a number 1-65535");  // "[::1]:" names no port
    }
  } else {
    const size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.find(':') != std::string::npos) {
        return Status::error("IPv6 addresses go in brackets, e.g. \"http://[::1]:8081/hook\"");
      }
      if (port_text.empty()) return Status::error("port must be a number 1-65535");
    }
    if (host.empty()) {
      return Status::error("missing host");
    }
    in_addr a4{};
    if (inet_pton(AF_INET, host.c_str(), &a4) != 1 && !config::is_hostname(host)) {
      return Status::error("invalid host \"" + host + "\"");
    }
  }
  int port = 80;
  if (!port_text.empty()) {
    if (port_text.size() > 5 ||
        !std::all_of(port_text.begin(), port_text.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        (port = std::stoi(port_text)) < 1 || port > 65535) {
      return Status::error("port must be a number 1-65535");
    }
  }
  if (std::any_of(path.begin(), path.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u >= 0x7f;
      })) {
    return Status::error("the path must not contain spaces, control characters or non-ASCII bytes (percent-encode them)");
  }
  WebhookUrl out;
  out.host = std::move(host);
  out.port = static_cast<uint16_t>(port);
  out.path = std::move(path);
  out.ipv6 = v6;
  return out;
}

std::string WebhookUrl::authority() const {
  return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string WebhookUrl::text() const { return "http://" + authority() + path; }


namespace queue {
namespace {

using config::format_ms;
using config::has_control_char;
using config::Reader;
using config::Table;
using config::type_name;

constexpr int64_t kMaxQueueDepth = 100'000'000;
constexpr uint64_t kMaxQueueWaitMs = 7 * config::kMaxDurationMs;
constexpr uint64_t kMinProcessingTimeoutMs = 100;
constexpr uint64_t kMaxTicketTtlMs = 30 * config::kMaxDurationMs;
constexpr int64_t kMaxQueueConcurrency = 10'000;

void load_ack(Reader& rd, const toml::table& t, const std::string& path, AckConfig& a) {
  rd.check_keys(t, path, {"status", "body", "content_type"});
  const toml::node* status = t.get("status");
  if (status != nullptr) {
    // 1xx are interim responses: a client would keep waiting for the real one.
    uint64_t v = 0;
    if (rd.read_int(*status, path + ".status", 200, 599, &v)) a.status = static_cast<int>(v);
  }
  if (const toml::node* n = t.get("body")) rd.read_string(*n, path + ".body", &a.body);
  if (const toml::node* n = t.get("content_type")) {
    std::string v;
    if (rd.read_string(*n, path + ".content_type", &v)) {
      if (v.empty()) rd.error(*n, path + ".content_type", "must not be empty");
      else if (has_control_char(v)) rd.error(*n, path + ".content_type", "must not contain control characters");
      else a.content_type = std::move(v);
    }
  }
  if (status != nullptr && (a.status == 204 || a.status == 205 || a.status == 304) && !a.body.empty()) {
    rd.error(*status, path + ".status",
          "a " + std::to_string(a.status) + " response cannot carry a body; set body = \"\" or use another status");
  }
}

void load_queue(Reader& rd, const toml::table& t, const std::string& path, QueueConfig& q) {
  rd.check_keys(t, path, {"max_depth", "max_wait", "processing_timeout", "ticket_ttl", "concurrency"});
  if (const toml::node* n = t.get("max_depth")) rd.read_int(*n, path + ".max_depth", 1, kMaxQueueDepth, &q.max_depth);
  if (const toml::node* n = t.get("max_wait")) {
    rd.read_duration(*n, path + ".max_wait", 1, kMaxQueueWaitMs, &q.max_wait_ms);
  }
  if (const toml::node* n = t.get("processing_timeout")) {
    rd.read_duration(*n, path + ".processing_timeout", kMinProcessingTimeoutMs, config::kMaxDurationMs,
                  &q.processing_timeout_ms);
  }
  if (const toml::node* n = t.get("ticket_ttl")) {
    rd.read_duration(*n, path + ".ticket_ttl", 1000, kMaxTicketTtlMs, &q.ticket_ttl_ms);
  }
  if (const toml::node* n = t.get("concurrency")) {
    rd.read_int(*n, path + ".concurrency", 1, kMaxQueueConcurrency, &q.concurrency);
  }
}

// retry_schedule (an array of durations) and retry_jitter. Each problem that
// validate_retry_schedule() names ("retry_schedule[2]: ...") is reported at the key.
void load_retry_schedule(Reader& rd, const toml::table& t, const std::string& path, bool store_and_forward,
                         bool queued, RouteQueueConfig& r) {
  const toml::node* sched = t.get("retry_schedule");
  const toml::node* jitter = t.get("retry_jitter");
  if (sched == nullptr && jitter == nullptr) {
    if (store_and_forward) r.retry_schedule = default_store_and_forward_schedule();
    return;
  }
  RetryScheduleInput in;
  in.route_queued = queued;
  bool readable = true;
  if (sched != nullptr) {
    const toml::array* arr = sched->as_array();
    if (arr == nullptr) {
      rd.error(*sched, path + ".retry_schedule",
               "expected an array of durations, e.g. [\"15s\", \"1m\", \"1h\"], got " +
                   std::string(type_name(*sched)));
      readable = false;
    } else {
      for (size_t i = 0; i < arr->size(); ++i) {
        std::string v;
        if (rd.read_string((*arr)[i], Reader::index(path + ".retry_schedule", i), &v)) in.delays.push_back(v);
        else readable = false;
      }
    }
  } else {
    // retry_jitter alone: the default steps with that jitter.
    for (uint64_t ms : default_store_and_forward_schedule().delays_ms) in.delays.push_back(format_ms(ms));
  }
  if (jitter != nullptr && !rd.read_string(*jitter, path + ".retry_jitter", &in.jitter)) readable = false;
  if (!readable) return;
  std::vector<std::string> errors = validate_retry_schedule(in);
  for (const std::string& e : errors) {
    // "retry_schedule[1]: message" -> the key path and the message.
    size_t colon = e.find(": ");
    std::string key = colon == std::string::npos ? "retry_schedule" : e.substr(0, colon);
    std::string message = colon == std::string::npos ? e : e.substr(colon + 2);
    const toml::node* at = key.rfind("retry_jitter", 0) == 0 && jitter != nullptr ? jitter : sched;
    if (at == nullptr) at = jitter;
    if (key.rfind("retry_schedule[", 0) == 0 && sched != nullptr && sched->as_array() != nullptr) {
      size_t i = std::strtoul(key.c_str() + 15, nullptr, 10);
      if (i < sched->as_array()->size()) at = sched->as_array()->get(i);
    }
    rd.error(*at, path + "." + key, message);
  }
  if (!errors.empty()) return;
  Result<RetrySchedule> parsed = parse_retry_schedule(in);
  if (parsed) r.retry_schedule = std::move(parsed.value());
}

}  // namespace

// ack, queue, client_max_tickets, on_failure_webhook, retry_schedule, retry_jitter.
void load_route_queueing(Reader& rd, const Table& route, bool store_and_forward, bool queued,
                         const UpstreamConfig* upstream, RouteQueueConfig& r) {
  const toml::table& t = route.toml();
  const std::string& path = route.path();
  const std::string not_queued =
      "only valid on a queued route (overflow = \"queue\", on_unavailable = \"queue\" or "
      "mode = \"store_and_forward\")";

  if (const toml::node* n = t.get("ack")) {
    if (!store_and_forward) {
      rd.error(*n, path + ".ack", "only valid together with mode = \"store_and_forward\"");
    } else if (const toml::table* at = rd.as_table(*n, path + ".ack")) {
      load_ack(rd, *at, path + ".ack", r.ack);
    }
  }

  const toml::node* queue = t.get("queue");
  if (queue != nullptr) {
    if (!queued) {
      rd.error(*queue, path + ".queue", not_queued);
    } else if (const toml::table* qt = rd.as_table(*queue, path + ".queue")) {
      load_queue(rd, *qt, path + ".queue", r.queue);
    }
  }

  if (const toml::node* n = t.get("client_max_tickets")) {
    if (!queued) {
      rd.error(*n, path + ".client_max_tickets", not_queued);
    } else {
      rd.read_int(*n, path + ".client_max_tickets", 1, INT64_MAX, &r.client_max_tickets);
    }
  }

  if (const toml::node* n = t.get("on_failure_webhook")) {
    const std::string p = path + ".on_failure_webhook";
    std::string v;
    if (!queued) {
      rd.error(*n, p, not_queued);
    } else if (rd.read_string(*n, p, &v)) {
      Result<WebhookUrl> url = parse_webhook_url(v);
      if (url) {
        r.on_failure_webhook = url.value().text();
        r.on_failure_webhook_url = std::move(url.value());
      } else {
        rd.error(*n, p, "invalid webhook URL \"" + v + "\": " + url.message());
      }
    }
  }

  load_retry_schedule(rd, t, path, store_and_forward, queued, r);

  // A delivery still waiting for the shop must not be taken for one whose
  // worker died: it would be reclaimed and sent a second time.
  if (queued && upstream != nullptr) {
    const UpstreamConfig& u = *upstream;
    // An adaptive timeout may grow up to timeout_max.
    const uint64_t attempt_ms = u.connect_timeout_ms + (u.adaptive_timeout ? u.timeout_max_ms : u.timeout_ms);
    if (r.queue.processing_timeout_ms <= attempt_ms) {
      const toml::table* qt = queue != nullptr ? queue->as_table() : nullptr;
      const toml::node* at = qt != nullptr ? qt->get("processing_timeout") : nullptr;
      const std::string message =
          "must be longer than one delivery attempt, upstreams." + u.name + " connect_timeout + " +
          (u.adaptive_timeout ? "timeout_max (" : "timeout (") +
          format_ms(attempt_ms) + "); a delivery still waiting for the shop would be reclaimed and sent again";
      if (at != nullptr) {
        rd.error(*at, path + ".queue.processing_timeout", message);
      } else {
        rd.error(queue != nullptr ? *queue : static_cast<const toml::node&>(t), path + ".queue.processing_timeout",
              "(default " + format_ms(r.queue.processing_timeout_ms) + ") " + message);
      }
    }
  }
}

}  // namespace queue
}  // namespace fg
