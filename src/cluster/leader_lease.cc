// What happens on failure:
//   acquire/renew times out, Redis down    leadership kept until its local deadline
//                                          (sent + ttl - ttl/10), then on_change(false);
//                                          attempts go on every ttl/3
//   renew finds another holder or no key   on_change(false) at once
//   release fails                          the key expires by itself within ttl
//
// The acquire script also raises the fence to the new token: from the moment a new
// holder exists, a write still in flight from the previous one is refused even if the
// new holder has not written anything yet.
#include "cluster/leader_lease.h"

#include <algorithm>
#include <string>
#include <utility>

#include "core/clock.h"

namespace fg::cluster {
namespace {

// KEYS lock, epoch, fence; ARGV holder, ttl ms. Returns the token: a new one when the
// key was free, the current one when this holder already has it (extended), 0 when
// another holder has it. A holder renews through the same script: it compares holder
// and extends, and tells the caller its current token.
redis::Script acquire_script() {
  return redis::Script{R"(
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder, tok = string.match(cur, '^(.*):(%d+)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(tok)
  end
  return 0
end
local tok = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. tok, 'PX', ARGV[2])
local fence = tonumber(redis.call('GET', KEYS[3]) or '0')
if tok > fence then redis.call('SET', KEYS[3], tok) end
return tok
)", ""};
}

// KEYS lock; ARGV "<holder>:<token>". Deletes the key only if it is still ours.
redis::Script release_script() {
  return redis::Script{R"(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)", ""};
}

redis::Script& shared_acquire_script() {
  thread_local redis::Script s = acquire_script();
  return s;
}
redis::Script& shared_release_script() {
  thread_local redis::Script s = release_script();
  return s;
}

}  // namespace

const std::string_view kFenceLua = R"(
local fence_now = tonumber(redis.call('GET', KEYS[1]) or '0')
local fence_token = tonumber(ARGV[1])
if fence_token == nil or fence_token < fence_now then
  return redis.error_reply('FENCED token ' .. tostring(ARGV[1]) .. ' < ' .. fence_now)
end
if fence_token > fence_now then redis.call('SET', KEYS[1], ARGV[1]) end
)";

redis::Script fenced_script(std::string_view body) {
  std::string source(kFenceLua);
  source.append(body);
  return redis::Script{std::move(source), ""};
}

bool is_fenced(const redis::Reply& reply) {
  return reply.is_error() && reply.str.rfind("FENCED", 0) == 0;
}

redis::Script fenced_set_script() {
  return fenced_script("return redis.call('SET', KEYS[2], ARGV[2])\n");
}

LeaderKeys::LeaderKeys(const std::string& prefix, const std::string& name, const std::string& tag)
    : lock(prefix + "leader:{" + (tag.empty() ? name + "}" : tag + "}:" + name)),
      epoch(lock + ":epoch"),
      fence(lock + ":fence") {}

LeaderLease::LeaderLease(uv_loop_t* loop, redis::Client* redis, LeaderLeaseOptions options)
    : redis_(redis), options_(std::move(options)), keys_(options_.prefix, options_.name, options_.tag) {
  timer_ = std::make_unique<loop::Timer>(loop, [this] { attempt(); });
}

LeaderLease::~LeaderLease() { stop(false); }

void LeaderLease::start() {
  running_ = true;
  timer_->start(0, std::max<uint64_t>(1, options_.ttl_ms / 3));
}

void LeaderLease::try_now() {
  if (running_ && !in_flight_) attempt();
}

void LeaderLease::stop(bool release) {
  if (!running_) return;
  running_ = false;
  anchor_.renew();  // replies to what was sent before stop() are dropped
  timer_->stop();
  uint64_t tok = token_.load(std::memory_order_relaxed);
  if (tok != 0 && release) {
    redis_->eval(&shared_release_script(), {keys_.lock}, {options_.holder_id + ":" + std::to_string(tok)},
                 [](redis::Failure, redis::Reply&) {});
  }
  if (tok != 0) lose();
}

uint64_t LeaderLease::token() const {
  uint64_t tok = token_.load(std::memory_order_relaxed);
  if (tok == 0 || clock::mono_ms() >= valid_until_ms_.load(std::memory_order_relaxed)) return 0;
  return tok;
}

void LeaderLease::lose() {
  uint64_t old = token_.exchange(0, std::memory_order_relaxed);
  valid_until_ms_.store(0, std::memory_order_relaxed);
  if (old != 0 && options_.on_change) options_.on_change(false, old);
}

void LeaderLease::attempt() {
  uint64_t now = clock::mono_ms();
  // A holder past its local deadline is no longer leader, whatever Redis says later.
  if (token_.load(std::memory_order_relaxed) != 0 && now >= valid_until_ms_.load(std::memory_order_relaxed)) {
    lose();
  }
  if (in_flight_) return;
  in_flight_ = true;
  loop::Guard<LeaderLease> guard = anchor_.guard();
  uint64_t sent = now;
  redis_->eval(&shared_acquire_script(), {keys_.lock, keys_.epoch, keys_.fence},
               {options_.holder_id, std::to_string(options_.ttl_ms)},
               [this, guard, sent](redis::Failure failure, redis::Reply& reply) {
                 if (!guard) return;
                 in_flight_ = false;
                 if (failure != redis::Failure::kNone || reply.type != redis::Reply::Type::kInteger) {
                   return;  // keep what we had until its local deadline
                 }
                 uint64_t tok = static_cast<uint64_t>(std::max<int64_t>(0, reply.integer));
                 if (tok == 0) {
                   lose();
                   return;
                 }
                 uint64_t old = token_.load(std::memory_order_relaxed);
                 if (old != 0 && old != tok) lose();
                 valid_until_ms_.store(sent + options_.ttl_ms - options_.ttl_ms / 10, std::memory_order_relaxed);
                 if (old != tok) {
                   token_.store(tok, std::memory_order_relaxed);
                   acquisitions_.fetch_add(1, std::memory_order_relaxed);
                   if (options_.on_change) options_.on_change(true, tok);
                 }
               });
}

}  // namespace fg::cluster
