// The retry and dead-letter scripts. Key layout (under the prefix, next to the route's
// stream and counters, in the route's hash slot): q:{<route>}:retry (sorted set, ticket
// id scored by due ms) and q:{<route>}:dead (sorted set, ticket id scored by the ms it
// died). The scripts reach a ticket by its id as <ticket prefix of the route><id>. Ticket fields added
// here: due, pk, x, q, rd (see queue_store.cc).
//
// Failures, what the caller sees, what happens next:
// - Redis down or timed out: kUnavailable / ok = false. A park or bury that never ran
//   leaves the ticket processing with its entry pending: it is reclaimed after
//   processing_timeout and delivered again, so nothing is lost, at worst sent early.
// - An error reply (OOM under maxmemory, READONLY replica, BUSY, LOADING, MISCONF, a
//   Lua error): the same as down. The writing scripts carry a shebang so that Redis
//   decides about maxmemory before running them, as a whole: a script without flags
//   is only refused at its first write that may grow memory, and one that begins with
//   a ZREM or XACK (never refused) may then write past maxmemory.
// - A ticket no longer in the state the script expects (finished by a delivery that
//   reclaimed this one, already parked, already re-delivered): kLate / moved = 0;
//   a final state is never undone.
#include "queue/dead_letter.h"

#include <algorithm>

namespace fg::queue {
namespace {

constexpr const char* kWrites = "#!lua\n";

// processing → retry or dead. ARGV[7] is the new state; ARGV[3] the score in the set.
constexpr const char* kMove = R"LUA(
local function finish_entry()
  redis.call('XACK', KEYS[2], 'fg', ARGV[1])
  redis.call('XDEL', KEYS[2], ARGV[1])
end
local st = redis.call('HGET', KEYS[1], 'st')
if not st then
  finish_entry()
  return 'unknown'
end
-- An entry no longer in the stream was finished by a delivery that took this one over
-- (a reclaim): what that delivery decided stands.
if #redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1]) == 0 then return 'late' end
if st ~= 'processing' then
  finish_entry()
  return 'late'
end
redis.call('HSET', KEYS[1], 'st', ARGV[7], 'rs', ARGV[4], 'pk', ARGV[2])
if ARGV[7] == 'retry' then
  redis.call('HSET', KEYS[1], 'due', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'x', ARGV[2])
  redis.call('HDEL', KEYS[1], 'due')
end
-- Owed a delivery: neither the ticket nor its idempotency record may expire now.
redis.call('PERSIST', KEYS[1])
local ik = redis.call('HMGET', KEYS[1], 'ik', 'io')
local iv = ik[1] and ik[1] ~= '' and redis.pcall('GET', ik[1])
local ic = type(iv) == 'string' and string.byte(iv)
if (ic == 105 or ic == 116) and string.sub(iv, 2, #ik[2] + 2) == ik[2] .. '\n' then redis.call('PERSIST', ik[1]) end
finish_entry()
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 'ok'
)LUA";

// Back into the queue like a new ticket (new sequence from the enq counter, new stream
// entry), so that depth = enq - taken stays the number of queued tickets: the ticket
// was counted as taken when it was first started, and will be again when started next.
// KEYS[1] is the set the ids are taken out of, KEYS[2] the stream, KEYS[3] the enq
// counter. Only members of the set whose ticket is still in state `from` move; other
// members are dropped from the set. Returns how many moved.
constexpr const char* kRequeue = R"LUA(
local function requeue(ids, from, now, prefix, channel, reset)
  local n = 0
  for _, id in ipairs(ids) do
    local tk = prefix .. id
    if redis.call('ZREM', KEYS[1], id) == 1 and redis.call('HGET', tk, 'st') == from then
      local seq = redis.call('INCR', KEYS[3])
      redis.call('HSET', tk, 'st', 'queued', 'seq', seq, 'q', now)
      redis.call('HDEL', tk, 'due', 'x')
      if reset then
        redis.call('HSET', tk, 'a', 0)
        redis.call('HINCRBY', tk, 'rd', 1)
      end
      redis.call('XADD', KEYS[2], '*', 't', id)
      redis.call('PUBLISH', channel, id)
      n = n + 1
    end
  end
  return n
end
)LUA";

constexpr const char* kPromote = R"LUA(
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local n = requeue(ids, 'retry', ARGV[1], ARGV[3], ARGV[4], false)
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {n, nxt[2] and tonumber(nxt[2]) or -1}
)LUA";

// ARGV[3]: one ticket id, or '' for the oldest ARGV[5] of the route. Membership in
// the route's set is checked first, so an id of another route moves nothing.
constexpr const char* kRedeliver = R"LUA(
local ids
if ARGV[3] ~= '' then ids = {ARGV[3]} else ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[5]) - 1) end
local n = requeue(ids, 'dead', ARGV[1], ARGV[2], ARGV[4], true)
return {n, redis.call('ZCARD', KEYS[1])}
)LUA";

// Read-only (the flag lets it run while Redis refuses writes at maxmemory).
constexpr const char* kList = R"LUA(#!lua flags=no-writes
local total = redis.call('ZCARD', KEYS[1])
local first = tonumber(ARGV[1])
local ids = redis.call('ZRANGE', KEYS[1], first, first + tonumber(ARGV[2]) - 1, 'WITHSCORES')
local out = {total}
for i = 1, #ids, 2 do
  local f = redis.call('HMGET', ARGV[3] .. ids[i], 'c', 'a', 'rs', 'm', 'u')
  out[#out + 1] = ids[i]
  out[#out + 1] = tonumber(f[1] or '0')
  out[#out + 1] = tonumber(ids[i + 1])
  out[#out + 1] = tonumber(f[2] or '0')
  out[#out + 1] = f[3] or ''
  out[#out + 1] = f[4] or ''
  out[#out + 1] = f[5] or ''
end
return out
)LUA";
constexpr size_t kListFields = 7;
constexpr uint64_t kMaxPage = 1000;

MoveResult move_result(redis::Failure f, const redis::Reply& r) {
  if (f == redis::Failure::kNone && is_fenced(r)) return MoveResult::kFenced;
  if (!reply_ok(f, r)) return MoveResult::kUnavailable;
  if (r.str == "ok") return MoveResult::kMoved;
  if (r.str == "late") return MoveResult::kLate;
  if (r.str == "unknown") return MoveResult::kUnknown;
  return MoveResult::kUnavailable;
}

void move(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
          std::string_view ticket_id, std::string_view reason, uint64_t now_ms, uint64_t score, const char* state,
          const std::string& set, std::function<void(MoveResult)> done, const Fence& fence) {
  std::vector<std::string> keys{k.ticket(ticket_id), k.stream(route), set};
  std::vector<std::string> args{std::string(entry_id), std::to_string(now_ms), std::to_string(score),
                                std::string(reason), k.channel(), std::string(ticket_id), state};
  redis::Script* script = fenced(&s.move, &s.move_fenced, fence, keys, args);
  c.eval(script, std::move(keys), std::move(args),
         [done = std::move(done)](redis::Failure f, redis::Reply& r) { done(move_result(f, r)); });
}

// promote and redeliver answer {moved, n}; anything else (an error reply included) is
// a failure.
bool two_counts(redis::Failure f, const redis::Reply& r, int64_t* moved, int64_t* n) {
  if (!reply_ok(f, r) || r.type != redis::Reply::Type::kArray || r.elements.size() != 2) return false;
  *moved = reply_int(r, 0);
  *n = reply_int(r, 1);
  return true;
}

void requeue_from_dead(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route,
                       std::string_view ticket_id, uint64_t now_ms, uint64_t max,
                       std::function<void(const Redelivered&)> done) {
  c.eval(&s.redeliver, {dead_set_key(k, route), k.stream(route), k.enq(route)},
         {std::to_string(now_ms), k.ticket_prefix(route), std::string(ticket_id), k.channel(),
          std::to_string(std::clamp<uint64_t>(max, 1, kMaxPage))},
         [done = std::move(done)](redis::Failure f, redis::Reply& r) {
           Redelivered res;
           res.ok = two_counts(f, r, &res.moved, &res.remaining);
           done(res);
         });
}

void count_set(redis::Client& c, std::string key, std::function<void(bool, int64_t)> done) {
  c.command({"ZCARD", std::move(key)}, [done = std::move(done)](redis::Failure f, redis::Reply& r) {
    bool ok = reply_ok(f, r) && r.type == redis::Reply::Type::kInteger;
    done(ok, ok ? r.integer : 0);
  });
}

}  // namespace

std::string retry_set_key(const Keys& k, std::string_view route) { return k.route_base(route) + ":retry"; }
std::string dead_set_key(const Keys& k, std::string_view route) { return k.route_base(route) + ":dead"; }

RetryScripts::RetryScripts() {
  move.source = std::string(kWrites) + kMove;
  move_fenced.source = std::string(kWrites) + kFencePrelude + kMove;
  promote.source = std::string(kWrites) + kRequeue + kPromote;
  promote_fenced.source = std::string(kWrites) + kFencePrelude + kRequeue + kPromote;
  redeliver.source = std::string(kWrites) + kRequeue + kRedeliver;
  list.source = kList;
}

void park(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
          std::string_view ticket_id, std::string_view reason, uint64_t now_ms, uint64_t due_ms,
          std::function<void(MoveResult)> done, const Fence& fence) {
  move(c, s, k, route, entry_id, ticket_id, reason, now_ms, due_ms, "retry", retry_set_key(k, route),
       std::move(done), fence);
}

void bury(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, std::string_view entry_id,
          std::string_view ticket_id, std::string_view reason, uint64_t now_ms,
          std::function<void(MoveResult)> done, const Fence& fence) {
  move(c, s, k, route, entry_id, ticket_id, reason, now_ms, now_ms, "dead", dead_set_key(k, route), std::move(done),
       fence);
}

void promote(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, uint64_t now_ms,
             uint64_t max, std::function<void(const Promoted&)> done, const Fence& fence) {
  std::vector<std::string> keys{retry_set_key(k, route), k.stream(route), k.enq(route)};
  std::vector<std::string> args{std::to_string(now_ms), std::to_string(std::clamp<uint64_t>(max, 1, kMaxPage)),
                                k.ticket_prefix(route), k.channel()};
  redis::Script* script = fenced(&s.promote, &s.promote_fenced, fence, keys, args);
  c.eval(script, std::move(keys), std::move(args), [done = std::move(done)](redis::Failure f, redis::Reply& r) {
    Promoted p;
    p.fenced = f == redis::Failure::kNone && is_fenced(r);
    p.ok = two_counts(f, r, &p.moved, &p.next_due_ms);
    done(p);
  });
}

void list_dead(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, uint64_t offset,
               uint64_t count, std::function<void(DeadPage&)> done) {
  c.eval(&s.list, {dead_set_key(k, route)},
         {std::to_string(offset), std::to_string(std::clamp<uint64_t>(count, 1, kMaxPage)), k.ticket_prefix(route)},
         [done = std::move(done)](redis::Failure f, redis::Reply& r) {
           DeadPage page;
           if (reply_ok(f, r) && r.type == redis::Reply::Type::kArray && !r.elements.empty() &&
               (r.elements.size() - 1) % kListFields == 0) {
             page.ok = true;
             page.total = reply_int(r, 0);
             for (size_t i = 1; i < r.elements.size(); i += kListFields) {
               DeadLetter d;
               d.id = reply_str(r, i);
               d.created_ms = reply_int(r, i + 1);
               d.dead_ms = reply_int(r, i + 2);
               d.attempts = reply_int(r, i + 3);
               d.reason = reply_str(r, i + 4);
               d.method = reply_str(r, i + 5);
               d.target = reply_str(r, i + 6);
               page.items.push_back(std::move(d));
             }
           }
           done(page);
         });
}

void count_dead(redis::Client& c, const Keys& k, std::string_view route, std::function<void(bool, int64_t)> done) {
  count_set(c, dead_set_key(k, route), std::move(done));
}

void count_parked(redis::Client& c, const Keys& k, std::string_view route,
                  std::function<void(bool, int64_t)> done) {
  count_set(c, retry_set_key(k, route), std::move(done));
}

void redeliver(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, std::string_view ticket_id,
               uint64_t now_ms, std::function<void(const Redelivered&)> done) {
  // An empty id would mean "all" to the script.
  if (ticket_id.empty()) ticket_id = "-";
  requeue_from_dead(c, s, k, route, ticket_id, now_ms, 1, std::move(done));
}

void redeliver_all(redis::Client& c, RetryScripts& s, const Keys& k, std::string_view route, uint64_t now_ms,
                   uint64_t max, std::function<void(const Redelivered&)> done) {
  requeue_from_dead(c, s, k, route, "", now_ms, max, std::move(done));
}

}  // namespace fg::queue
