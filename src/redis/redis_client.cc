// The asynchronous Redis client: a small libuv adapter for hiredis, the
// connect/handshake/reconnect state machine and per-command deadlines.
//
// What happens on failure:
//   connect refused / reset, DNS failure,   down; attempts again after a backoff with full
//   connect timeout, AUTH or SELECT error   jitter; logged once per outage
//   connection lost while up                commands in flight fail with kDisconnected,
//                                           on_state(false), "redis_down" logged, reconnect
//   oldest command past its deadline        every command in flight fails with kTimeout,
//                                           timeouts() + 1, the connection is dropped
//   command()/eval() while not up           kDisconnected on the next loop turn
//   NOSCRIPT from EVALSHA                   SCRIPT LOAD and one retry, same deadline
//   subscriber: (P)SUBSCRIBE not confirmed  timeouts() + 1, the connection is dropped and
//   within the command timeout              re-established with backoff, then subscribes
//                                           again (messages themselves have no deadline)
//   subscriber: (P)SUBSCRIBE refused (ACL)  dropped and retried; the backoff is only reset
//                                           once the channels are confirmed
//   command()/eval() on a subscriber        kDisconnected on the next loop turn
//   ~Client before on_closed ran            abort (the loop would point at freed memory)
//
// The connection only counts as up once the server has answered the handshake (AUTH,
// SELECT, or a PING when neither is needed), so a server that accepts TCP but is
// stopped is not reported up. Commands are only accepted while up, so nothing of the
// caller's can reach the wire before AUTH and SELECT.
//
// Writes: hiredis appends each command to its output buffer; the client writes the
// buffer once per loop turn, after the turn's callbacks (connection.cc, ev_add_write),
// so the commands of many requests share one write.
//
// Freeing a hiredis context from inside one of its callbacks is undefined, so every
// free goes through detach_context(): it frees at once when no hiredis function is on
// the stack, and otherwise parks the context until the outermost one returns.
//
// Subscriber mode: (P)SUBSCRIBE is sent once per connection, after the handshake. hiredis
// keeps that callback in its channel table and runs it for the confirmations and every
// message, then once per channel with NULL when the context is freed. Its privdata is
// unused (no allocation to own): the callback finds the client through ac->data and
// ignores every call that is not for the current context, such as messages still
// buffered in a context that is being dropped, or the NULL calls of a freed one.

#include "redis/redis_client.h"

#include "redis/client_impl.h"

#include "core/log.h"

namespace fg::redis {

// ---------------------------------------------------------------------------------
// Client

Client::Client(uv_loop_t* loop, Options options) : impl_(std::make_unique<Impl>(this, loop, std::move(options))) {}

Client::~Client() {
  // Deleting with live handles would leave the loop pointing at freed memory.
  if (impl_ && !impl_->finished_) {
    std::fprintf(stderr, "fg::redis::Client destroyed before close() completed\n");
    std::abort();
  }
}

void Client::start() { impl_->start(); }

// Safe from any callback of this client, including reply callbacks and on_state.
// Every pending callback runs (kDisconnected) before it returns; on_state is not
// called for the close itself. A second call only adds its on_closed.
void Client::close(std::function<void()> on_closed) { impl_->close(std::move(on_closed)); }

bool Client::connected() const { return impl_->state_ == Impl::State::kUp; }

void Client::subscribe(std::vector<std::string> channels,
                       std::function<void(std::string_view channel, std::string_view payload)> on_message,
                       std::function<void()> on_resubscribed) {
  impl_->subscribe(false, std::move(channels), std::move(on_message), std::move(on_resubscribed));
}

void Client::psubscribe(std::vector<std::string> patterns,
                        std::function<void(std::string_view channel, std::string_view payload)> on_message,
                        std::function<void()> on_resubscribed) {
  impl_->subscribe(true, std::move(patterns), std::move(on_message), std::move(on_resubscribed));
}

bool Client::subscribed() const {
  return impl_->state_ == Impl::State::kUp && impl_->sub_ == Impl::Sub::kActive;
}

void Client::command(std::vector<std::string> argv, Callback cb) {
  Impl::Op* op = impl_->accept(std::move(cb));
  if (op == nullptr) return;
  if (argv.empty()) {
    // Nothing to send; hiredis would queue a callback that no reply ever matches.
    impl_->fail_later(op);
    return;
  }
  op->args = std::move(argv);
  impl_->submit(op, &Impl::send_command);
}

// `script` must stay alive until the callback ran; its sha is written on the loop.
void Client::eval(Script* script, std::vector<std::string> keys, std::vector<std::string> args, Callback cb) {
  Impl::Op* op = impl_->accept(std::move(cb));
  if (op == nullptr) return;
  op->script = script;
  op->keys = std::move(keys);
  op->args = std::move(args);
  impl_->submit(op, &Impl::start_eval);
}

void Client::command_view(std::span<const std::string_view> argv, Callback cb) {
  if (!Packed::fits(argv.size())) {
    command(std::vector<std::string>(argv.begin(), argv.end()), std::move(cb));
    return;
  }
  Impl::Op* op = impl_->accept(std::move(cb));
  if (op == nullptr) return;
  op->packed.set(argv, {});
  impl_->submit(op, &Impl::send_command);
}

void Client::eval_view(Script* script, std::span<const std::string_view> keys,
                       std::span<const std::string_view> args, Callback cb) {
  if (!Packed::fits(keys.size() + args.size())) {
    eval(script, std::vector<std::string>(keys.begin(), keys.end()),
         std::vector<std::string>(args.begin(), args.end()), std::move(cb));
    return;
  }
  Impl::Op* op = impl_->accept(std::move(cb));
  if (op == nullptr) return;
  op->script = script;
  op->packed.set(keys, args);
  impl_->submit(op, &Impl::start_eval);
}

}  // namespace fg::redis
