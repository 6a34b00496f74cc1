// Internal to the Redis module: the state of one Client, shared by the .cc files that
// implement it (connection.cc, commands.cc, subscriber.cc, redis_client.cc). The
// overview and the failure table are at the top of redis_client.cc.
#pragma once

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <uv.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <functional>
#include <new>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "redis/redis_client.h"
#include "redis/sentinel.h"

namespace fg::redis {

// ---------------------------------------------------------------------------------
// Client internals

// Value types the Client state is made of (internal; not part of the public API).
namespace impl_detail {

// An intrusive FIFO so that an operation can leave the middle of a list in O(1)
// (an EVALSHA retried after NOSCRIPT finishes after younger commands).
template <typename T>
struct List {
  T* head = nullptr;
  T* tail = nullptr;

  void push_back(T* n) {
    n->prev = tail;
    n->next = nullptr;
    if (tail) tail->next = n; else head = n;
    tail = n;
    n->list = this;
  }
  void remove(T* n) {
    if (n->prev) n->prev->next = n->next; else head = n->next;
    if (n->next) n->next->prev = n->prev; else tail = n->prev;
    n->prev = n->next = nullptr;
    n->list = nullptr;
  }
  void take(List& other) {  // moves every element of `other` to the end of this list
    while (T* n = other.head) {
      other.remove(n);
      push_back(n);
    }
  }
};

// argv for hiredis without a heap allocation for the common short command.
class Argv {
 public:
  void add(std::string_view s) {
    if (n_ < kInline) {
      ptr_[n_] = s.data();
      len_[n_] = s.size();
    } else {
      if (n_ == kInline) {
        heap_ptr_.assign(ptr_, ptr_ + kInline);
        heap_len_.assign(len_, len_ + kInline);
      }
      heap_ptr_.push_back(s.data());
      heap_len_.push_back(s.size());
    }
    ++n_;
  }
  int argc() const { return static_cast<int>(n_); }
  const char** argv() { return n_ <= kInline ? ptr_ : heap_ptr_.data(); }
  const size_t* lens() { return n_ <= kInline ? len_ : heap_len_.data(); }

 private:
  static constexpr size_t kInline = 16;
  size_t n_ = 0;
  const char* ptr_[kInline];
  size_t len_[kInline];
  std::vector<const char*> heap_ptr_;
  std::vector<size_t> heap_len_;
};

// The arguments of the string_view overloads, copied into one buffer: one allocation
// per command instead of a vector and a string per argument. An eval keeps them until
// its reply, since NOSCRIPT sends the EVALSHA again.
struct Packed {
  static constexpr size_t kMax = 16;
  std::string buf;
  uint32_t lens[kMax];
  size_t keys = 0;   // the first `keys` arguments are KEYS (eval)
  size_t count = 0;  // 0: the op uses its vectors

  static bool fits(size_t n) { return n > 0 && n <= kMax; }
  void set(std::span<const std::string_view> a, std::span<const std::string_view> b) {
    size_t total = 0;
    for (std::string_view s : a) total += s.size();
    for (std::string_view s : b) total += s.size();
    buf.clear();
    buf.reserve(total);
    count = 0;
    for (std::string_view s : a) push(s);
    for (std::string_view s : b) push(s);
    keys = a.size();
  }
  void add_to(Argv& argv) const {
    size_t off = 0;
    for (size_t i = 0; i < count; ++i) {
      argv.add(std::string_view(buf.data() + off, lens[i]));
      off += lens[i];
    }
  }

 private:
  void push(std::string_view s) {
    buf.append(s);
    lens[count++] = static_cast<uint32_t>(s.size());
  }
};

}  // namespace impl_detail

using impl_detail::Argv;
using impl_detail::List;
using impl_detail::Packed;

struct Client::Impl {
  enum class State { kIdle, kResolving, kConnecting, kHandshake, kUp, kBackoff, kClosed };

  // One caller operation: a command, or an eval that may take several Redis commands.
  // It is owned jointly by the client (while linked in a list, i.e. not done) and by
  // hiredis (one reference per command whose callback hiredis has not run yet; hiredis
  // runs every registered callback exactly once, with NULL when the context is freed).
  struct Op {
    Op* prev = nullptr;
    Op* next = nullptr;
    List<Op>* list = nullptr;
    Impl* impl = nullptr;
    Callback cb;
    uint64_t deadline = 0;
    int hiredis_refs = 0;
    bool done = false;
    bool retried = false;  // an eval already reloaded its script once
    Script* script = nullptr;        // eval only; owned by the caller
    std::vector<std::string> keys;   // eval KEYS
    std::vector<std::string> args;   // eval ARGV, or the command until it is sent
    Packed packed;                   // instead of keys and args (string_view overloads)
  };

  // The libuv side of one hiredis context. hiredis calls the ev hooks; the poll handle
  // is closed by the cleanup hook and the struct is freed in the close callback only,
  // because cleanup runs inside hiredis (even inside our own poll callback).
  struct Watch {
    uv_poll_t poll;
    redisAsyncContext* ac = nullptr;
    Impl* impl = nullptr;
    int events = 0;
    bool flush_pending = false;  // commands wait for the end of this loop turn (on_flush)
  };

  // An asynchronous name lookup; freed by its callback, which always runs (also
  // after uv_cancel) and which close() waits for.
  struct Resolve {
    uv_getaddrinfo_t req;
    Impl* impl = nullptr;
    bool abandoned = false;
  };

  Impl(Client* owner, uv_loop_t* loop, Options options);

  // ---- lifecycle -------------------------------------------------------------

  void start();

  void close(std::function<void()> on_closed);

  static void on_handle_closed(uv_handle_t* h);

  void maybe_finish();

  // ---- connecting ------------------------------------------------------------

  void connect_now();

  static void on_resolved(uv_getaddrinfo_t* req, int status, struct addrinfo* res);

  void abandon_resolve();

  void open_context(const char* ip);

  bool attach(redisAsyncContext* ac);

  static void watch_update(Watch* w, int add, int del);
  static void ev_add_read(void* p) { watch_update(static_cast<Watch*>(p), UV_READABLE, 0); }
  static void ev_del_read(void* p) { watch_update(static_cast<Watch*>(p), 0, UV_READABLE); }
  static void ev_add_write(void* p);
  static void ev_del_write(void* p) {
    static_cast<Watch*>(p)->flush_pending = false;
    watch_update(static_cast<Watch*>(p), 0, UV_WRITABLE);
  }
  static void on_flush_check(uv_check_t* h);
  static void on_flush_prepare(uv_prepare_t* h);
  void flush_now();

  static void ev_cleanup(void* p);

  static void on_watch_closed(uv_handle_t* h);

  static void on_poll(uv_poll_t* h, int status, int events);

  // depth_ > 0 while a hiredis function is on the stack; a context is never freed
  // then (hiredis would touch it after our callback returns). The context to drop is
  // parked in doomed_ and freed as soon as the outermost hiredis call returns.
  void enter() { ++depth_; }
  void leave();
  void free_doomed();
  void free_context(redisAsyncContext* ac);

  void detach_context();

  void context_gone(redisAsyncContext* ac);

  void poll_failed(const char* why = "poll failed");

  static void on_connect(const redisAsyncContext* cac, int status);

  static constexpr intptr_t kStepAuth = 1;
  static constexpr intptr_t kStepSelect = 2;
  static constexpr intptr_t kStepPing = 3;
  static constexpr intptr_t kStepRole = 4;

  bool send_internal(redisAsyncContext* ac, redisCallbackFn* fn, intptr_t step, Argv& a);

  static void on_handshake_reply(redisAsyncContext* ac, void* r, void* privdata);

  void went_up();

  void lose_connection(Failure reason, const std::string& why);

  void schedule_reconnect();

  static void on_conn_timer(uv_timer_t* t);

  // ---- Sentinel (endpoint.via_sentinel()) ------------------------------------

  // Picks the address to connect to: the endpoint's, or the master the Sentinels
  // name (false while none is known).
  bool pick_target();
  // The Sentinels named another master: leave the current one at once.
  static void on_master_moved(uv_async_t* a);
  // Something says the server is not (or no longer) the master: ask the Sentinels.
  void suspect_master();
  // A reply that only a replica gives (READONLY): drop this connection.
  void check_readonly(const redisReply* reply);

  // ---- subscriber mode -------------------------------------------------------

  void subscribe(bool pattern, std::vector<std::string> channels,
                 std::function<void(std::string_view, std::string_view)> on_message,
                 std::function<void()> on_resubscribed);

  void send_subscribe();

  static void enable_keepalive(int fd);

  static bool is_str(const redisReply* r) { return r != nullptr && r->type == REDIS_REPLY_STRING; }
  static std::string_view view(const redisReply* r) { return std::string_view(r->str, r->len); }

  static void on_subscribe_reply(redisAsyncContext* ac, void* r, void*);

  void deliver(std::string_view channel, std::string_view payload);

  // ---- commands --------------------------------------------------------------

  Op* new_op(Callback cb);
  // Frees a finished op, or keeps it for the thread's next command.
  static void free_op(Op* op);
  static std::vector<Op*>* op_pool();  // null while the thread's pool is being destroyed

  void submit(Op* op, bool (Impl::*send_first)(Op*));

  bool send(Op* op, redisCallbackFn* fn, Argv& a);

  bool send_command(Op* op);

  bool send_script_load(Op* op);

  bool send_evalsha(Op* op);

  Op* accept(Callback cb);

  bool start_eval(Op* op);

  static void release(Op* op);

  void finish_op(Op* op, Failure failure, Reply& reply);

  void fail_list(List<Op>& list, Failure failure);

  void fail_later(Op* op);

  static void on_command_reply(redisAsyncContext*, void* r, void* privdata);

  static void on_script_load_reply(redisAsyncContext*, void* r, void* privdata);

  static void on_evalsha_reply(redisAsyncContext*, void* r, void* privdata);

  static void on_cmd_timer(uv_timer_t* t);

  static void on_sweep(uv_idle_t* h);

  Client* owner_;
  uv_loop_t* loop_;
  Options opt_;
  std::string where_;  // endpoint for log lines (never the password)
  bool numeric_host_ = false;
  std::string host_;    // the address of the current attempt (the master with Sentinel)
  uint16_t port_ = 0;
  std::shared_ptr<SentinelWatch> sentinel_;  // null without Sentinel
  uv_async_t moved_;                         // signalled by sentinel_ (Sentinel only)
  State state_ = State::kIdle;
  bool closed_ = false;
  bool finished_ = false;
  bool failure_logged_ = false;
  bool io_failed_ = false;
  const char* io_failed_why_ = "poll failed";
  int depth_ = 0;
  int handshake_left_ = 0;
  int open_handles_ = 0;
  int live_watches_ = 0;
  int live_resolves_ = 0;
  size_t next_address_ = 0;
  uint64_t backoff_ = 0;
  std::minstd_rand rng_;
  redisAsyncContext* ac_ = nullptr;
  redisAsyncContext* doomed_ = nullptr;
  Resolve* resolving_ = nullptr;
  uv_timer_t conn_timer_;  // connect timeout, or the backoff before the next attempt
  uv_timer_t cmd_timer_;   // deadline of the oldest op in flight
  uv_idle_t sweep_;        // fails ops queued while down, on the next loop turn
  // Write the commands of a loop turn (ev_add_write): the check phase catches those of
  // the turn's I/O callbacks, the prepare phase those of timers, idle and pending
  // callbacks before the loop blocks in epoll.
  uv_check_t flush_;
  uv_prepare_t flush_before_poll_;
  bool flushing_ = false;  // inside flush_now: a write that did not finish waits for POLLOUT
  List<Op> inflight_;
  List<Op> failed_;
  List<Op> sweeping_;
  std::function<void()> on_closed_;

  // Subscriber mode (see Client::subscribe).
  enum class Sub { kNone, kPending, kActive };  // on the current connection
  bool subscriber_ = false;
  bool pattern_ = false;
  Sub sub_ = Sub::kNone;
  size_t sub_left_ = 0;  // confirmations still expected
  std::vector<std::string> channels_;
  std::function<void(std::string_view, std::string_view)> on_message_;
  std::function<void()> on_resubscribed_;
};

}  // namespace fg::redis
