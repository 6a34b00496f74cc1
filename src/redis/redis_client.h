// One asynchronous Redis connection per worker, on that worker's loop. This module is
// the only one that includes hiredis. Every command has a deadline (hiredis has none):
// when the oldest pending command misses it, every pending command fails with
// kTimeout and the connection is dropped and re-established with exponential backoff
// and jitter, so a stalled Redis costs each caller at most one timeout.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "floodgate/status.h"
#include "redis/endpoint.h"

namespace fg::redis {

// A reply flattened into value types (no hiredis types leak out of this module).
struct Reply {
  enum class Type { kNil, kString, kStatus, kInteger, kArray, kError };
  Type type = Type::kNil;
  std::string str;      // kString, kStatus, kError
  int64_t integer = 0;  // kInteger
  std::vector<Reply> elements;  // kArray
  bool is_error() const { return type == Type::kError; }
};

enum class Failure {
  kNone,
  kTimeout,      // no reply within the command timeout
  kDisconnected, // not connected (down, reconnecting) or the connection dropped
};

// Called exactly once per command, on the client's loop. With failure != kNone the
// reply is empty. Never called after close() returned... except: close() fails every
// pending command with kDisconnected before returning.
using Callback = std::function<void(Failure failure, Reply& reply)>;

// A Lua script run by EVALSHA; on NOSCRIPT (a restarted or flushed Redis) the client
// loads it again transparently and retries once.
struct Script {
  std::string source;
  std::string sha;  // filled when first loaded (SCRIPT LOAD)
};

class Client {
 public:
  struct Options {
    Endpoint endpoint;
    uint64_t command_timeout_ms = 250;
    uint64_t connect_timeout_ms = 1000;
    uint64_t backoff_min_ms = 100;
    uint64_t backoff_max_ms = 5000;
    std::string name;  // for log lines, e.g. "worker 0"
    // Called on the loop whenever the connection goes up (true) or down (false).
    std::function<void(bool up)> on_state;
  };

  Client(uv_loop_t* loop, Options options);
  ~Client();  // requires close() to have been called and its handles closed
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Starts connecting (and reconnecting forever until close()).
  void start();
  // Fails pending commands with kDisconnected, closes the connection and timers.
  // Handles finish closing on the next loop iteration(s); `on_closed` (optional) runs
  // when the object may be deleted.
  void close(std::function<void()> on_closed = nullptr);

  bool connected() const;

  // Sends a command (argv form: binary-safe). While disconnected it fails at once
  // (asynchronously, on the next loop turn) with kDisconnected.
  void command(std::vector<std::string> argv, Callback cb);
  // EVALSHA script numkeys keys... args...; loads the script when needed.
  void eval(Script* script, std::vector<std::string> keys, std::vector<std::string> args, Callback cb);
  // The same from views, for hot paths: the arguments are copied into one buffer (the
  // views need only be valid during the call), not into a string each. Named apart so
  // that `{}` and braced lists keep meaning the vector forms. Pass arrays:
  //   std::string_view keys[] = {key};  client.eval_view(&script, keys, args, cb);
  void command_view(std::span<const std::string_view> argv, Callback cb);
  void eval_view(Script* script, std::span<const std::string_view> keys, std::span<const std::string_view> args,
                 Callback cb);

  // Subscriber mode: this client is dedicated to SUBSCRIBE (a connection in subscribe
  // mode cannot run other commands). `on_message(channel, payload)` runs on the loop for
  // every message on any of `channels`; after every (re)connect the client subscribes
  // again by itself, and `on_resubscribed()` (optional) runs once the subscription is
  // active again, so callers can re-check state they may have missed while disconnected.
  //
  // - Call it once per client, before or after start(); later calls (and calls after
  //   close()) are ignored. Duplicate channels are subscribed once. An empty list still
  //   makes the client a subscriber but subscribes to nothing (on_resubscribed never
  //   runs then).
  // - on_resubscribed also runs for the first subscription, so "subscribe, then read
  //   the current state from on_resubscribed" never misses a change.
  // - From then on command() and eval() fail with kDisconnected (on the next loop turn);
  //   commands already in flight when it is called are still answered. Publish from
  //   another client: command({"PUBLISH", channel, payload}).
  // - Only the confirmation is timed: when not all channels are confirmed within
  //   command_timeout_ms the connection counts as timed out (timeouts() + 1) and is
  //   re-established with backoff. Messages may arrive at any time and have no
  //   deadline; a lost connection (EOF, reset, TCP keepalive failure) reconnects with
  //   the usual backoff and subscribes again.
  // - The string_views are only valid during the call. Neither callback runs after
  //   close(), and both are released before on_closed runs. close() may be called from
  //   inside either of them.
  void subscribe(std::vector<std::string> channels,
                 std::function<void(std::string_view channel, std::string_view payload)> on_message,
                 std::function<void()> on_resubscribed = nullptr);
  // The same with PSUBSCRIBE glob patterns ("tickets:*"); `channel` is the channel the
  // message was published on (not the pattern). A client is either a subscribe() or a
  // psubscribe() client: the first of the two calls wins.
  void psubscribe(std::vector<std::string> patterns,
                  std::function<void(std::string_view channel, std::string_view payload)> on_message,
                  std::function<void()> on_resubscribed = nullptr);
  // True while every channel (or pattern) of a subscriber is confirmed by the server.
  bool subscribed() const;

  // Counters for metrics/tests.
  uint64_t timeouts() const { return timeouts_; }
  uint64_t reconnects() const { return reconnects_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint64_t timeouts_ = 0;
  uint64_t reconnects_ = 0;
  friend struct Impl;
};

}  // namespace fg::redis
