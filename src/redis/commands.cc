// Commands of a Redis client: queueing, per-command deadlines, failing callers,
// and scripts (EVALSHA, with SCRIPT LOAD and one retry on NOSCRIPT).

#include "redis/client_impl.h"

#include "core/log.h"

namespace fg::redis {

namespace {

void convert_reply(const redisReply* r, Reply& out) {
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::kArray;
      out.elements.resize(r->elements);
      for (size_t i = 0; i < r->elements; ++i) convert_reply(r->element[i], out.elements[i]);
      break;
    default:
      out.type = Reply::Type::kNil;
      break;
  }
}

constexpr size_t kPooledOps = 256;
constexpr size_t kPooledBufferBytes = 16 * 1024;
// Trivially destructible, so still readable while the thread's other thread_locals
// are being destroyed (an op freed then is deleted, not pooled).
thread_local bool op_pool_gone = false;

}  // namespace

// Finished ops are kept for the thread's next commands (a client lives on one loop
// thread): a command then allocates neither its op nor its packed arguments, whose
// buffer keeps its capacity. Ops holding a large buffer are freed instead.
std::vector<Client::Impl::Op*>* Client::Impl::op_pool() {
  struct Pool {
    std::vector<Op*> free;
    ~Pool() {
      op_pool_gone = true;
      for (Op* op : free) delete op;
    }
  };
  thread_local Pool pool;
  return op_pool_gone ? nullptr : &pool.free;
}

Client::Impl::Op* Client::Impl::new_op(Callback cb) {
  Op* op;
  std::vector<Op*>* pool = op_pool();
  if (pool != nullptr && !pool->empty()) {
    op = pool->back();
    pool->pop_back();
  } else {
    op = new Op;
  }
  op->impl = this;
  op->cb = std::move(cb);
  return op;
}

void Client::Impl::free_op(Op* op) {
  std::vector<Op*>* pool = op_pool();
  if (pool == nullptr || pool->size() >= kPooledOps || op->packed.buf.capacity() > kPooledBufferBytes) {
    delete op;
    return;
  }
  op->prev = op->next = nullptr;
  op->list = nullptr;
  op->impl = nullptr;
  op->cb = nullptr;
  op->deadline = 0;
  op->hiredis_refs = 0;
  op->done = false;
  op->retried = false;
  op->script = nullptr;
  op->keys.clear();
  op->args.clear();
  op->packed.buf.clear();
  op->packed.keys = 0;
  op->packed.count = 0;
  pool->push_back(op);
}

void Client::Impl::submit(Op* op, bool (Impl::*send_first)(Op*)) {
  // A connection in subscribe mode only accepts (P)(UN)SUBSCRIBE, PING and QUIT, and
  // hiredis 0.14 cannot match other replies there.
  if (subscriber_ || state_ != State::kUp || ac_ == nullptr) {
    fail_later(op);
    return;
  }
  // The loop's cached time is that of the turn's start; a command issued after the
  // loop sat still (a caller that blocked, a long turn) would get a deadline already
  // in the past and fail with kTimeout before its reply could be read.
  uv_update_time(loop_);
  op->deadline = uv_now(loop_) + opt_.command_timeout_ms;
  inflight_.push_back(op);
  if (!(this->*send_first)(op)) {
    inflight_.remove(op);
    fail_later(op);
    return;
  }
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&cmd_timer_))) {
    uv_timer_start(&cmd_timer_, on_cmd_timer, opt_.command_timeout_ms, 0);
  }
}

// The RESP form of `a` ("*<argc>\r\n" then "$<len>\r\n<bytes>\r\n" per argument) in a
// buffer reused by every command of the thread: hiredis' own formatter builds it with
// printf-style calls and a fresh allocation per command.
namespace {
std::string_view format_command(Argv& a) {
  static thread_local std::string buf;
  buf.clear();
  auto number = [](char prefix, size_t v) {
    char tmp[24];
    char* end = tmp + sizeof tmp;
    char* p = end;
    do {
      *--p = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    *--p = prefix;
    buf.append(p, static_cast<size_t>(end - p));
    buf += "\r\n";
  };
  number('*', static_cast<size_t>(a.argc()));
  const char** argv = a.argv();
  const size_t* lens = a.lens();
  for (int i = 0; i < a.argc(); ++i) {
    number('$', lens[i]);
    buf.append(argv[i], lens[i]);
    buf += "\r\n";
  }
  return buf;
}
}  // namespace

bool Client::Impl::send(Op* op, redisCallbackFn* fn, Argv& a) {
  if (ac_ == nullptr) return false;
  std::string_view cmd = format_command(a);
  enter();
  int rc = redisAsyncFormattedCommand(ac_, fn, op, cmd.data(), cmd.size());
  leave();
  if (rc != REDIS_OK) return false;
  ++op->hiredis_refs;
  return true;
}

bool Client::Impl::send_command(Op* op) {
  Argv a;
  for (const std::string& s : op->args) a.add(s);
  op->packed.add_to(a);
  bool ok = send(op, on_command_reply, a);
  // hiredis formatted its own copy; the arguments are not needed any more.
  op->args.clear();
  op->args.shrink_to_fit();
  op->packed.buf.clear();
  op->packed.buf.shrink_to_fit();
  op->packed.count = 0;
  return ok;
}

bool Client::Impl::send_script_load(Op* op) {
  Argv a;
  a.add("SCRIPT");
  a.add("LOAD");
  a.add(op->script->source);
  return send(op, on_script_load_reply, a);
}

bool Client::Impl::send_evalsha(Op* op) {
  std::string numkeys = std::to_string(op->packed.count > 0 ? op->packed.keys : op->keys.size());
  Argv a;
  a.add("EVALSHA");
  a.add(op->script->sha);
  a.add(numkeys);
  for (const std::string& k : op->keys) a.add(k);
  for (const std::string& v : op->args) a.add(v);
  op->packed.add_to(a);
  return send(op, on_evalsha_reply, a);
}

// A new op for a caller, or nullptr once closed: then the callback has already run
// (after close() there is no loop turn left to defer to).
Client::Impl::Op* Client::Impl::accept(Callback cb) {
  if (closed_) {
    Reply empty;
    if (cb) cb(Failure::kDisconnected, empty);
    return nullptr;
  }
  return new_op(std::move(cb));
}

bool Client::Impl::start_eval(Op* op) {
  return op->script->sha.empty() ? send_script_load(op) : send_evalsha(op);
}

// Drops hiredis' reference after it ran one of our callbacks.
void Client::Impl::release(Op* op) {
  --op->hiredis_refs;
  if (op->done && op->hiredis_refs == 0) free_op(op);
}

// Delivers the outcome exactly once. The op is unlinked and marked done before the
// callback runs, so a re-entrant close() or command() never sees it again.
void Client::Impl::finish_op(Op* op, Failure failure, Reply& reply) {
  if (op->list) op->list->remove(op);
  op->done = true;
  Callback cb = std::move(op->cb);
  if (op->hiredis_refs == 0) free_op(op);
  if (cb) cb(failure, reply);
}

void Client::Impl::fail_list(List<Op>& list, Failure failure) {
  while (Op* op = list.head) {
    Reply empty;
    finish_op(op, failure, empty);
  }
}

// Fails an op on the next loop turn, never inside the caller's own call.
void Client::Impl::fail_later(Op* op) {
  failed_.push_back(op);
  uv_idle_start(&sweep_, on_sweep);
}

void Client::Impl::on_command_reply(redisAsyncContext*, void* r, void* privdata) {
  Op* op = static_cast<Op*>(privdata);
  if (r == nullptr || op->done) {
    release(op);
    return;
  }
  --op->hiredis_refs;
  Impl* self = op->impl;
  Reply reply;
  convert_reply(static_cast<redisReply*>(r), reply);
  self->check_readonly(static_cast<const redisReply*>(r));
  self->finish_op(op, Failure::kNone, reply);
}

// SCRIPT LOAD answers with the sha, which the EVALSHA that follows needs: the
// script may have been given a stale sha, so it is never guessed.
void Client::Impl::on_script_load_reply(redisAsyncContext*, void* r, void* privdata) {
  Op* op = static_cast<Op*>(privdata);
  if (r == nullptr || op->done) {
    release(op);
    return;
  }
  --op->hiredis_refs;
  Impl* self = op->impl;
  const redisReply* reply = static_cast<const redisReply*>(r);
  if (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_STATUS) {
    Reply out;  // e.g. a compile error in the script
    convert_reply(reply, out);
    self->finish_op(op, Failure::kNone, out);
    return;
  }
  op->script->sha.assign(reply->str, reply->len);
  if (!self->send_evalsha(op)) {
    Reply empty;
    self->finish_op(op, Failure::kDisconnected, empty);
  }
}

void Client::Impl::on_evalsha_reply(redisAsyncContext*, void* r, void* privdata) {
  Op* op = static_cast<Op*>(privdata);
  if (r == nullptr || op->done) {
    release(op);
    return;
  }
  --op->hiredis_refs;
  Impl* self = op->impl;
  const redisReply* reply = static_cast<const redisReply*>(r);
  bool noscript = reply->type == REDIS_REPLY_ERROR && reply->len >= 8 &&
                  std::memcmp(reply->str, "NOSCRIPT", 8) == 0;
  if (noscript && !op->retried) {
    // The server lost its script cache (restart, SCRIPT FLUSH) or the sha was
    // stale: load the script and retry once, keeping the original deadline.
    op->retried = true;
    if (!self->send_script_load(op)) {
      Reply empty;
      self->finish_op(op, Failure::kDisconnected, empty);
    }
    return;
  }
  Reply out;
  convert_reply(reply, out);
  self->check_readonly(reply);
  self->finish_op(op, Failure::kNone, out);
}

// Watches the oldest op only: deadlines are assigned in submission order with one
// timeout, so the head of inflight_ always expires first.
void Client::Impl::on_cmd_timer(uv_timer_t* t) {
  Impl* self = static_cast<Impl*>(t->data);
  Op* head = self->inflight_.head;
  if (head == nullptr) return;
  uint64_t now = uv_now(self->loop_);
  if (head->deadline > now) {
    uv_timer_start(&self->cmd_timer_, on_cmd_timer, head->deadline - now, 0);
    return;
  }
  ++self->owner_->timeouts_;
  self->lose_connection(Failure::kTimeout, "command timeout");
}

void Client::Impl::on_sweep(uv_idle_t* h) {
  Impl* self = static_cast<Impl*>(h->data);
  if (self->io_failed_) {
    self->io_failed_ = false;
    if (self->ac_) self->lose_connection(Failure::kDisconnected, self->io_failed_why_);
    if (self->closed_) return;
  }
  // Only the ops queued before this turn: a caller that retries from its callback
  // while Redis is down is answered on the next turn, not in a tight loop here.
  self->sweeping_.take(self->failed_);
  while (Op* op = self->sweeping_.head) {
    Reply empty;
    self->finish_op(op, Failure::kDisconnected, empty);
    if (self->closed_) return;
  }
  if (self->failed_.head == nullptr && !self->io_failed_) uv_idle_stop(&self->sweep_);
}

}  // namespace fg::redis
