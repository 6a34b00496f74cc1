// Subscriber mode of a Redis client: (P)SUBSCRIBE after each handshake, its
// confirmation deadline, and message delivery.

#include "redis/client_impl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "core/log.h"

namespace fg::redis {

void Client::Impl::subscribe(bool pattern, std::vector<std::string> channels,
               std::function<void(std::string_view, std::string_view)> on_message,
               std::function<void()> on_resubscribed) {
  if (closed_) return;
  if (subscriber_) {
    log::event("warn", "redis_subscribe_ignored", [&](log::Line& l) {
      l.str("client", opt_.name).str("reason", "already a subscriber");
    });
    return;
  }
  // hiredis keys its callback table by name: a duplicate would replace the entry
  // and the confirmation count would never reach zero.
  std::sort(channels.begin(), channels.end());
  channels.erase(std::unique(channels.begin(), channels.end()), channels.end());
  subscriber_ = true;
  pattern_ = pattern;
  channels_ = std::move(channels);
  on_message_ = std::move(on_message);
  on_resubscribed_ = std::move(on_resubscribed);
  // While up this sends at once; otherwise went_up() does after the next handshake.
  if (state_ == State::kUp) send_subscribe();
}

// Sends (P)SUBSCRIBE on the current connection, once, and arms the confirmation
// deadline. Never calls back into the caller: a failure is handled on the next turn.
void Client::Impl::send_subscribe() {
  if (!subscriber_ || closed_ || state_ != State::kUp || ac_ == nullptr || sub_ != Sub::kNone) return;
  if (channels_.empty()) return;
  if (!opt_.endpoint.unix_socket) enable_keepalive(ac_->c.fd);
  Argv a;
  a.add(pattern_ ? "PSUBSCRIBE" : "SUBSCRIBE");
  for (const std::string& c : channels_) a.add(c);
  enter();
  int rc = redisAsyncCommandArgv(ac_, on_subscribe_reply, nullptr, a.argc(), a.argv(), a.lens());
  leave();
  if (rc != REDIS_OK) {
    poll_failed("cannot queue SUBSCRIBE");
    return;
  }
  sub_ = Sub::kPending;
  sub_left_ = channels_.size();
  uv_timer_start(&conn_timer_, on_conn_timer, opt_.command_timeout_ms, 0);
}

// A subscriber only ever reads, so a peer that vanished without a FIN or RST (host
// down, a NAT or firewall dropping the flow) would go unnoticed for good without
// keepalive probes. Best effort: failing to set them costs only that detection.
void Client::Impl::enable_keepalive(int fd) {
  int on = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) != 0) return;
#if defined(TCP_KEEPIDLE) && defined(TCP_KEEPINTVL) && defined(TCP_KEEPCNT)
  int idle = 15;
  int interval = 5;
  int count = 3;
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
#endif
}

// Runs for each confirmation ["subscribe", channel, count] / ["psubscribe", ...], each
// message ["message", channel, payload] / ["pmessage", pattern, channel, payload],
// and with NULL (ignored) when the context is freed.
void Client::Impl::on_subscribe_reply(redisAsyncContext* ac, void* r, void*) {
  Impl* self = static_cast<Impl*>(ac->data);
  if (r == nullptr || ac != self->ac_ || self->closed_ || self->state_ != State::kUp) return;
  const redisReply* reply = static_cast<const redisReply*>(r);
  if (reply->type == REDIS_REPLY_ERROR) {
    // hiredis 0.14 drops the connection itself on an error in subscribe mode (e.g. an
    // ACL denying the channel); should one reach us anyway, the outcome is the same.
    std::string why = "SUBSCRIBE failed: ";
    why.append(reply->str, reply->len);
    self->lose_connection(Failure::kDisconnected, why);
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 || !is_str(reply->element[0])) return;
  std::string_view kind = view(reply->element[0]);
  if (kind == "message" && reply->elements == 3) {
    if (is_str(reply->element[1]) && is_str(reply->element[2])) {
      self->deliver(view(reply->element[1]), view(reply->element[2]));
    }
    return;
  }
  if (kind == "pmessage" && reply->elements == 4) {
    if (is_str(reply->element[2]) && is_str(reply->element[3])) {
      self->deliver(view(reply->element[2]), view(reply->element[3]));
    }
    return;
  }
  if ((kind == "subscribe" || kind == "psubscribe") && self->sub_ == Sub::kPending) {
    if (--self->sub_left_ > 0) return;
    self->sub_ = Sub::kActive;
    uv_timer_stop(&self->conn_timer_);
    self->backoff_ = std::max<uint64_t>(self->opt_.backoff_min_ms, 1);
    if (self->on_resubscribed_) self->on_resubscribed_();
  }
}

void Client::Impl::deliver(std::string_view channel, std::string_view payload) {
  if (on_message_) on_message_(channel, payload);
}

}  // namespace fg::redis
