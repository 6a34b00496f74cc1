// The queue and ticket scripts. Ticket hash fields: r route, st state (queued |
// processing | done | failed | cancelled), seq enqueue sequence, c created ms, m method,
// u target, h header lines, b body, ck client key, ik/io idempotency record key and
// owner (these three only when set), fk Idempotency-Key sent upstream, a attempts, d dispatched ms, fin finished
// ms, resp stored response, rs failure reason. The durable retry schedule
// (queue/dead_letter.cc) adds the states retry and dead and the fields due (retry: when
// it is promoted back into the queue), pk (parked ms), x (dead since ms), q (ms it
// re-entered the queue after a retry or a re-delivery) and rd (re-deliveries). Every key a
// script touches is one of the ticket's route (hash tag {<route>}, queue_store.h Keys):
// the ticket, the route's stream, counters and sets, the dispatch lease's fence key, and
// the idempotency record named in the ticket (idem:{<route>}:...), so each script runs in
// one hash slot of a Redis Cluster.
#include "queue/queue_store.h"
#include "core/random.h"

#include <uv.h>


namespace fg::queue {
namespace {

constexpr const char* kEnqueue = R"LUA(#!lua
-- Declared with a shebang so that Redis checks maxmemory before the script runs:
-- without one it checks only at the first write that can grow memory, and with
-- client_max_tickets the first write is an SREM, after which the rest would run.
local counts = redis.call('MGET', KEYS[3], KEYS[4])
local depth = tonumber(counts[1] or '0') - tonumber(counts[2] or '0')
if depth >= tonumber(ARGV[12]) then return {'full', depth} end
local cmax = tonumber(ARGV[14])
if cmax > 0 then
  local n = 0
  for _, t in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    if redis.call('HGET', ARGV[15] .. t, 'st') == 'queued' then n = n + 1 else redis.call('SREM', KEYS[5], t) end
  end
  if n >= cmax then return {'too_many', n} end
end
local seq = redis.call('INCR', KEYS[3])
-- The client key and the idempotency record only when there is one: every reader
-- takes a missing field as empty, and a smaller hash is cheaper to write and keep.
local f = {'r', ARGV[2], 'st', 'queued', 'seq', seq, 'c', ARGV[3], 'm', ARGV[4], 'u', ARGV[5], 'h', ARGV[6],
           'b', ARGV[7], 'fk', ARGV[11], 'a', 0}
if ARGV[8] ~= '' then f[#f + 1] = 'ck'; f[#f + 1] = ARGV[8] end
if ARGV[9] ~= '' then f[#f + 1] = 'ik'; f[#f + 1] = ARGV[9]; f[#f + 1] = 'io'; f[#f + 1] = ARGV[10] end
redis.call('HSET', KEYS[2], unpack(f))
redis.call('PEXPIRE', KEYS[2], ARGV[13])
redis.call('XADD', KEYS[1], '*', 't', ARGV[1])
if cmax > 0 then
  redis.call('SADD', KEYS[5], ARGV[1])
  redis.call('PEXPIRE', KEYS[5], ARGV[13])
end
-- The idempotency record (layout in idempotency/store.cc) becomes "parked as this
-- ticket", if it is still this attempt's claim. Read with pcall in every script here: a
-- record of another type (a hash written by an older version) is simply not ours, and
-- must not fail a script halfway through its writes.
local iv = ARGV[9] ~= '' and redis.pcall('GET', ARGV[9])
local io = ARGV[10] .. '\n'
local ic = type(iv) == 'string' and string.byte(iv)
if (ic == 105 or ic == 116) and string.sub(iv, 2, #io + 1) == io then
  local e = string.find(iv, '\n', #io + 2, true)
  if e then redis.call('SET', ARGV[9], 't' .. string.sub(iv, 2, e) .. ARGV[1], 'PX', ARGV[13]) end
end
return {'ok', seq, depth + 1}
)LUA";

// Leaving the queued state for good (expired or cancelled) releases the idempotency
// record so that the key may be used again.
constexpr const char* kStart = R"LUA(
local f = redis.call('HMGET', KEYS[1], 'st', 'c', 'q')
if not f[1] then
  -- The ticket's hash expired while it was still queued: it leaves the queue now
  -- (a reclaimed entry was counted when it was first started).
  if ARGV[7] ~= '1' then redis.call('INCR', KEYS[3]) end
  redis.call('XACK', KEYS[2], 'fg', ARGV[1])
  redis.call('XDEL', KEYS[2], ARGV[1])
  return {'skip'}
end
local note = ARGV[6]
if f[1] == 'queued' then
  -- Published with the change: the route's progress, for positions held in memory.
  note = ARGV[6] .. ' ' .. ARGV[8] .. ' ' .. redis.call('INCR', KEYS[3])
  -- max_wait is about a ticket nobody dispatched; one back from the retry schedule or
  -- a re-delivered dead letter (q set) was dispatched before and is owed a delivery.
  if not f[3] and tonumber(ARGV[2]) - tonumber(f[2]) > tonumber(ARGV[3]) then
    redis.call('HSET', KEYS[1], 'st', 'failed', 'rs', 'expired', 'fin', ARGV[2])
    redis.call('HDEL', KEYS[1], 'b')
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    redis.call('XACK', KEYS[2], 'fg', ARGV[1])
    redis.call('XDEL', KEYS[2], ARGV[1])
    local ik = redis.call('HMGET', KEYS[1], 'ik', 'io')
    local iv = ik[1] and ik[1] ~= '' and redis.pcall('GET', ik[1])
    local ic = type(iv) == 'string' and string.byte(iv)
    if (ic == 105 or ic == 116) and string.sub(iv, 2, #ik[2] + 2) == ik[2] .. '\n' then redis.call('DEL', ik[1]) end
    redis.call('PUBLISH', ARGV[5], note)
    return {'expired'}
  end
  redis.call('HSET', KEYS[1], 'st', 'processing', 'd', ARGV[2])
elseif f[1] ~= 'processing' then
  redis.call('XACK', KEYS[2], 'fg', ARGV[1])
  redis.call('XDEL', KEYS[2], ARGV[1])
  return {'skip'}
end
local a = redis.call('HINCRBY', KEYS[1], 'a', 1)
local g = redis.call('HMGET', KEYS[1], 'm', 'u', 'h', 'b', 'fk', 'c', 'q')
redis.call('PUBLISH', ARGV[5], note)
return {'go', a, g[1] or '', g[2] or '', g[3] or '', g[4] or '', g[5] or '', tonumber(g[6] or '0'),
        tonumber(g[7] or '0')}
)LUA";

constexpr const char* kFinish = R"LUA(
local cur = redis.call('HGET', KEYS[1], 'st')
-- Parked on the retry schedule or dead (queue/dead_letter.cc) after a delivery that
-- took this one over: the ticket is owed a delivery, which a late failure must not
-- give up; a late answer from the shop does end it (below).
local owed = cur == 'retry' or cur == 'dead'
if cur == 'done' or cur == 'failed' or cur == 'cancelled' or (owed and ARGV[2] ~= 'done') then
  -- Already final (a reclaimed delivery finished first): never undo it.
  if ARGV[1] ~= '' then
    redis.call('XACK', KEYS[2], 'fg', ARGV[1])
    redis.call('XDEL', KEYS[2], ARGV[1])
  end
  return 0
end
if cur then
  redis.call('HSET', KEYS[1], 'st', ARGV[2], 'resp', ARGV[3], 'rs', ARGV[4], 'fin', ARGV[5])
  redis.call('HDEL', KEYS[1], 'b')
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  local ik = redis.call('HMGET', KEYS[1], 'ik', 'io')
  local iv = ik[1] and ik[1] ~= '' and redis.pcall('GET', ik[1])
  local ic = type(iv) == 'string' and string.byte(iv)
  local io = ik[2] and ik[2] .. '\n'
  if (ic == 105 or ic == 116) and string.sub(iv, 2, #io + 1) == io then
    local e = string.find(iv, '\n', #io + 2, true)
    if ARGV[7] == '1' and e then
      -- Answered: "d<fingerprint>\n<response>", the ticket reference dropped.
      redis.call('SET', ik[1], 'd' .. string.sub(iv, #io + 2, e) .. ARGV[3], 'PX', ARGV[8])
    else
      redis.call('DEL', ik[1])
    end
  end
end
if owed then
  -- Out of the route's retry or dead-letter set (q:<route>:retry / :dead, next to the
  -- stream q:<route>:s). After the HSET above, so that under maxmemory the script is
  -- refused at its first write rather than let through by a ZREM.
  redis.call('ZREM', string.sub(KEYS[2], 1, -2) .. cur, ARGV[10])
end
if ARGV[1] ~= '' then
  redis.call('XACK', KEYS[2], 'fg', ARGV[1])
  redis.call('XDEL', KEYS[2], ARGV[1])
end
redis.call('PUBLISH', ARGV[9], ARGV[10])
return 1
)LUA";

// count_retry: the claim first, since XCLAIM is allowed while Redis refuses writes that
// grow memory and HINCRBY is not (pcall: the claim stands either way). A ticket hash
// that is gone (finished and expired) is not created again.
constexpr const char* kCountRetry = R"LUA(
redis.call('XCLAIM', KEYS[2], 'fg', ARGV[2], 0, ARGV[1], 'JUSTID')
if redis.call('EXISTS', KEYS[1]) == 1 then redis.pcall('HINCRBY', KEYS[1], 'a', 1) end
return 1
)LUA";

constexpr const char* kKeepClaimed = R"LUA(
redis.call('XCLAIM', KEYS[1], 'fg', ARGV[2], 0, ARGV[1], 'JUSTID')
return 1
)LUA";

constexpr const char* kPoll = R"LUA(
local f = redis.call('HMGET', KEYS[1], 'st', 'r', 'seq', 'c', 'a', 'rs', 'resp', 'due', 'q')
if not f[1] then return {'unknown'} end
local taken = 0
if f[1] == 'queued' then taken = tonumber(redis.call('GET', KEYS[2]) or '0') end
return {f[1], f[2] or '', tonumber(f[3] or '0'), tonumber(f[4] or '0'), tonumber(f[5] or '0'), f[6] or '',
        f[7] or '', taken, tonumber(f[8] or '0'), tonumber(f[9] or '0'), redis.call('PTTL', KEYS[1])}
)LUA";

// expire and cancel: KEYS[2] is the route's taken counter; ARGV[5] is the new state
// ('failed' with reason 'expired', or 'cancelled'). A ticket queued again after a retry or a re-delivery (q set) was
// already sent to the shop: too late for either.
constexpr const char* kLeave = R"LUA(
local st = redis.call('HMGET', KEYS[1], 'st', 'q')
if not st[1] then return 'unknown' end
if st[1] ~= 'queued' or st[2] then return 'late' end
local r = redis.call('HGET', KEYS[1], 'r')
local taken = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'st', ARGV[5], 'rs', ARGV[6], 'fin', ARGV[1])
redis.call('HDEL', KEYS[1], 'b')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local ik = redis.call('HMGET', KEYS[1], 'ik', 'io')
local iv = ik[1] and ik[1] ~= '' and redis.pcall('GET', ik[1])
local ic = type(iv) == 'string' and string.byte(iv)
if (ic == 105 or ic == 116) and string.sub(iv, 2, #ik[2] + 2) == ik[2] .. '\n' then redis.call('DEL', ik[1]) end
redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. r .. ' ' .. taken)
return {'ok', r}
)LUA";

bool ok_reply(redis::Failure f, const redis::Reply& r) {
  return f == redis::Failure::kNone && !r.is_error();
}

const std::string& elem_str(const redis::Reply& r, size_t i) {
  static const std::string kEmpty;
  return i < r.elements.size() ? r.elements[i].str : kEmpty;
}

int64_t elem_int(const redis::Reply& r, size_t i) {
  if (i >= r.elements.size()) return 0;
  const auto& e = r.elements[i];
  if (e.type == redis::Reply::Type::kInteger) return e.integer;
  return std::strtoll(e.str.c_str(), nullptr, 10);
}

}  // namespace

// Put before a dispatcher script: the fence key and the token are the last key and
// argument, removed here so that the script reads its own as before.
const char* const kFencePrelude = R"LUA(
local fence_token = tonumber(table.remove(ARGV))
local fence_key = table.remove(KEYS)
local fence_now = tonumber(redis.call('GET', fence_key) or '0')
if fence_token < fence_now then
  return redis.error_reply('FENCED token ' .. fence_token .. ' < ' .. fence_now)
end
if fence_token > fence_now then redis.call('SET', fence_key, fence_token) end
)LUA";

bool is_fenced(const redis::Reply& r) { return r.is_error() && r.str.rfind("FENCED", 0) == 0; }

// `keys` and `args` with the fence appended, and the script to run them with.
redis::Script* fenced(redis::Script* plain, redis::Script* with_fence, const Fence& fence,
                      std::vector<std::string>& keys, std::vector<std::string>& args) {
  if (fence.token == 0) return plain;
  keys.push_back(fence.key);
  args.push_back(std::to_string(fence.token));
  return with_fence;
}

Scripts::Scripts() {
  start_fenced.source = std::string(kFencePrelude) + kStart;
  finish_fenced.source = std::string(kFencePrelude) + kFinish;
  retry.source = kCountRetry;
  retry_fenced.source = std::string(kFencePrelude) + kCountRetry;
  claim_fenced.source = std::string(kFencePrelude) + kKeepClaimed;
  enqueue.source = kEnqueue;
  start.source = kStart;
  finish.source = kFinish;
  poll.source = kPoll;
  cancel.source = kLeave;
  expire.source = kLeave;
}

void enqueue(redis::Client& c, Scripts& s, const Keys& k, const NewTicket& t, uint64_t max_depth,
             uint64_t hash_ttl_ms, uint64_t client_max, std::function<void(EnqueueResult&)> done) {
  // Unused without a limit, but declared in the route's slot like every other key.
  std::string cset = client_max > 0 ? k.client_set(t.route, t.client_key) : k.route_base(t.route) + ":c";
  c.eval(&s.enqueue, {k.stream(t.route), k.ticket(t.id), k.enq(t.route), k.taken(t.route), cset},
         {t.id, t.route, std::to_string(t.created_ms), t.method, t.target, t.header_lines, t.body, t.client_key,
          t.idem_key, t.idem_owner, t.forward_key, std::to_string(max_depth), std::to_string(hash_ttl_ms),
          std::to_string(client_max), k.ticket_prefix(t.route)},
         [done = std::move(done)](redis::Failure f, redis::Reply& r) {
           EnqueueResult res;
           if (ok_reply(f, r) && r.type == redis::Reply::Type::kArray && !r.elements.empty()) {
             const std::string& tag = elem_str(r, 0);
             if (tag == "ok") {
               res.kind = EnqueueResult::Kind::kOk;
               res.seq = elem_int(r, 1);
               res.depth = elem_int(r, 2);
             } else if (tag == "full") {
               res.kind = EnqueueResult::Kind::kFull;
               res.depth = elem_int(r, 1);
             } else if (tag == "too_many") {
               res.kind = EnqueueResult::Kind::kTooMany;
             }
           }
           done(res);
         });
}

void start(redis::Client& c, Scripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
           std::string_view ticket_id, uint64_t now_ms, uint64_t max_wait_ms, std::function<void(Delivery&)> done,
           bool reclaimed, const Fence& fence) {
  // The ticket's lifetime once finished is set again by finish(); an hour covers the
  // expired case here.
  std::vector<std::string> keys{k.ticket(ticket_id), k.stream(route), k.taken(route)};
  std::vector<std::string> args{std::string(entry_id), std::to_string(now_ms), std::to_string(max_wait_ms), "3600000",
                                k.channel(), std::string(ticket_id), reclaimed ? "1" : "0",
                                std::string(route)};
  redis::Script* script = fenced(&s.start, &s.start_fenced, fence, keys, args);
  c.eval(script, std::move(keys), std::move(args),
         [done = std::move(done)](redis::Failure f, redis::Reply& r) {
           Delivery d;
           if (f == redis::Failure::kNone && is_fenced(r)) {
             d.kind = Delivery::Kind::kFenced;
           } else if (ok_reply(f, r) && r.type == redis::Reply::Type::kArray && !r.elements.empty()) {
             const std::string& tag = elem_str(r, 0);
             if (tag == "go") {
               d.kind = Delivery::Kind::kGo;
               d.attempts = elem_int(r, 1);
               d.method = elem_str(r, 2);
               d.target = elem_str(r, 3);
               d.header_lines = elem_str(r, 4);
               d.body = elem_str(r, 5);
               d.forward_key = elem_str(r, 6);
               d.created_ms = elem_int(r, 7);
               d.requeued_ms = elem_int(r, 8);
             } else if (tag == "expired") {
               d.kind = Delivery::Kind::kExpired;
             } else {
               d.kind = Delivery::Kind::kSkip;
             }
           }
           done(d);
         });
}

void count_retry(redis::Client& c, Scripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
                 std::string_view consumer, std::string_view ticket_id, const Fence& fence) {
  std::vector<std::string> keys{k.ticket(ticket_id), k.stream(route)};
  std::vector<std::string> args{std::string(entry_id), std::string(consumer)};
  redis::Script* script = fenced(&s.retry, &s.retry_fenced, fence, keys, args);
  c.eval(script, std::move(keys), std::move(args), [](redis::Failure, redis::Reply&) {});
}

void keep_claimed(redis::Client& c, Scripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
                  std::string_view consumer, const Fence& fence) {
  if (fence.token == 0) {
    c.command({"XCLAIM", k.stream(route), kGroup, std::string(consumer), "0", std::string(entry_id), "JUSTID"},
              [](redis::Failure, redis::Reply&) {});
    return;
  }
  std::vector<std::string> keys{k.stream(route)};
  std::vector<std::string> args{std::string(entry_id), std::string(consumer)};
  redis::Script* script = fenced(nullptr, &s.claim_fenced, fence, keys, args);
  c.eval(script, std::move(keys), std::move(args), [](redis::Failure, redis::Reply&) {});
}

void finish(redis::Client& c, Scripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
            std::string_view ticket_id, std::string_view state, std::string_view response,
            std::string_view reason, uint64_t now_ms, uint64_t ticket_ttl_ms, bool store_idem,
            uint64_t idem_ttl_ms, std::function<void(Written)> done, const Fence& fence) {
  std::vector<std::string> keys{k.ticket(ticket_id), k.stream(route)};
  std::vector<std::string> args{std::string(entry_id), std::string(state), std::string(response),
                                std::string(reason), std::to_string(now_ms), std::to_string(ticket_ttl_ms),
                                store_idem ? "1" : "0", std::to_string(idem_ttl_ms), k.channel(),
                                std::string(ticket_id)};
  redis::Script* script = fenced(&s.finish, &s.finish_fenced, fence, keys, args);
  c.eval(script, std::move(keys), std::move(args), [done = std::move(done)](redis::Failure f, redis::Reply& r) {
    if (!done) return;
    if (f == redis::Failure::kNone && is_fenced(r)) done(Written::kFenced);
    else done(ok_reply(f, r) ? Written::kOk : Written::kFailed);
  });
}

void poll(redis::Client& c, Scripts& s, const Keys& k, std::string_view ticket_id,
          std::function<void(TicketView&)> done) {
  c.eval(&s.poll, {k.ticket(ticket_id), k.taken(ticket_route(ticket_id))}, {},
         [done = std::move(done)](redis::Failure f, redis::Reply& r) {
           TicketView v;
           if (ok_reply(f, r) && r.type == redis::Reply::Type::kArray && !r.elements.empty()) {
             const std::string& st = elem_str(r, 0);
             using K = TicketView::Kind;
             v.kind = st == "queued"       ? K::kQueued
                      : st == "processing" ? K::kProcessing
                      : st == "done"       ? K::kDone
                      : st == "failed"     ? K::kFailed
                      : st == "cancelled"  ? K::kCancelled
                      // Parked on the retry schedule or a dead letter: still owed a
                      // delivery, so a poll answers like one still being processed.
                      : st == "retry"      ? K::kProcessing
                      : st == "dead"       ? K::kProcessing
                                           : K::kUnknown;
             if (v.kind != K::kUnknown) {
               v.state = st;
               v.due_ms = elem_int(r, 8);
               v.requeued_ms = elem_int(r, 9);
               v.route = elem_str(r, 1);
               v.seq = elem_int(r, 2);
               v.created_ms = elem_int(r, 3);
               v.attempts = elem_int(r, 4);
               v.reason = elem_str(r, 5);
               v.response = elem_str(r, 6);
               v.taken = elem_int(r, 7);
               v.ttl_ms = elem_int(r, 10);
             }
           }
           done(v);
         });
}

void expire(redis::Client& c, Scripts& s, const Keys& k, std::string_view ticket_id, uint64_t now_ms,
            uint64_t ticket_ttl_ms, std::function<void(bool)> done) {
  c.eval(&s.expire, {k.ticket(ticket_id), k.taken(ticket_route(ticket_id))},
         {std::to_string(now_ms), std::to_string(ticket_ttl_ms), k.channel(), std::string(ticket_id), "failed",
          "expired"},
         [done = std::move(done)](redis::Failure f, redis::Reply& r) {
           bool moved = ok_reply(f, r) && r.type == redis::Reply::Type::kArray && elem_str(r, 0) == "ok";
           if (done) done(moved);
         });
}

void cancel(redis::Client& c, Scripts& s, const Keys& k, std::string_view ticket_id, uint64_t now_ms,
            uint64_t ticket_ttl_ms, std::function<void(CancelResult, const std::string&)> done) {
  c.eval(&s.cancel, {k.ticket(ticket_id), k.taken(ticket_route(ticket_id))},
         {std::to_string(now_ms), std::to_string(ticket_ttl_ms), k.channel(), std::string(ticket_id), "cancelled",
          "cancelled"},
         [done = std::move(done)](redis::Failure f, redis::Reply& r) {
           static const std::string kNone;
           if (!ok_reply(f, r)) return done(CancelResult::kUnavailable, kNone);
           if (r.type == redis::Reply::Type::kArray && elem_str(r, 0) == "ok")
             return done(CancelResult::kCancelled, elem_str(r, 1));
           if (r.str == "late") return done(CancelResult::kTooLate, kNone);
           done(CancelResult::kUnknown, kNone);
         });
}

std::string new_ticket_id(std::string_view route) {
  unsigned char buf[16];
  random::bytes(buf, sizeof buf);
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve(23 + route.size());
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char b : buf) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 6) {
      out += kAlphabet[(acc >> (bits - 6)) & 63];
      bits -= 6;
    }
  }
  if (bits > 0) out += kAlphabet[(acc << (6 - bits)) & 63];
  out += '.';
  out.append(route);
  return out;
}

namespace {

constexpr size_t kRandomChars = 22;
constexpr size_t kMaxRouteChars = 200;

bool base64url(char ch) {
  return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

}  // namespace

bool valid_ticket_id(std::string_view id) {
  if (id.size() < kRandomChars + 2 || id.size() > kRandomChars + 1 + kMaxRouteChars || id[kRandomChars] != '.')
    return false;
  for (size_t i = 0; i < kRandomChars; i++) {
    if (!base64url(id[i])) return false;
  }
  // The route part: a route name's characters (config/route_config.cc).
  for (char ch : id.substr(kRandomChars + 1)) {
    if (!base64url(ch) && ch != '.') return false;
  }
  return true;
}

std::string_view ticket_route(std::string_view id) {
  return valid_ticket_id(id) ? id.substr(kRandomChars + 1) : std::string_view();
}

bool reply_ok(redis::Failure f, const redis::Reply& r) { return ok_reply(f, r); }
const std::string& reply_str(const redis::Reply& r, size_t i) { return elem_str(r, i); }
int64_t reply_int(const redis::Reply& r, size_t i) { return elem_int(r, i); }

}  // namespace fg::queue
