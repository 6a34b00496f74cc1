// The heartbeat script uses Redis TIME, not the caller's clock, so the expiry scores of
// all instances are on one clock and a skewed host cannot keep a dead member alive or
// expire a live one. One script call both registers this instance and counts the others.
#include "cluster/membership.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace fg::cluster {
namespace {

// KEYS[1] the members set; ARGV[1] the instance id, ARGV[2] the TTL in ms. Expired
// members are removed before counting; the set itself expires when every member stopped.
redis::Script heartbeat_script() {
  return redis::Script{R"(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
redis.call('ZADD', KEYS[1], string.format('%.0f', now + ttl), ARGV[1])
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', 2 * ttl))
return redis.call('ZCARD', KEYS[1])
)", ""};
}

redis::Script& shared_heartbeat_script() {
  // One per thread: the client fills in the SHA, and every loop has its own thread.
  thread_local redis::Script script = heartbeat_script();
  return script;
}

}  // namespace

Membership::Membership(uv_loop_t* loop, redis::Client* redis, MembershipOptions options)
    : redis_(redis), options_(std::move(options)), key_(options_.prefix + "cluster:members") {
  timer_ = std::make_unique<loop::Timer>(loop, [this] { beat(); });
}

Membership::~Membership() { stop(false); }

void Membership::start() {
  running_ = true;
  timer_->start(0, std::max<uint64_t>(1, options_.heartbeat_ms));
}

void Membership::stop(bool leave, std::function<void()> on_left) {
  if (!running_) {
    if (on_left) on_left();
    return;
  }
  running_ = false;
  anchor_.renew();  // replies to what was sent before stop() are dropped
  timer_->stop();
  if (!leave) {
    if (on_left) on_left();
    return;
  }
  redis_->command({"ZREM", key_, options_.instance_id}, [on_left = std::move(on_left)](redis::Failure, redis::Reply&) {
    if (on_left) on_left();
  });
}

uint32_t Membership::live_instances() const {
  if (!seen()) return std::max<uint32_t>(1, options_.expected_instances);
  return std::max<uint32_t>(1, live_.load(std::memory_order_relaxed));
}

void Membership::beat() {
  loop::Guard<Membership> guard = anchor_.guard();
  redis_->eval(&shared_heartbeat_script(), {key_}, {options_.instance_id, std::to_string(options_.ttl_ms)},
               [this, guard](redis::Failure failure, redis::Reply& reply) {
                 if (!guard) return;
                 if (failure != redis::Failure::kNone || reply.type != redis::Reply::Type::kInteger) {
                   failures_.fetch_add(1, std::memory_order_relaxed);
                   return;
                 }
                 live_.store(static_cast<uint32_t>(std::max<int64_t>(1, reply.integer)),
                             std::memory_order_relaxed);
                 seen_.store(true, std::memory_order_relaxed);
                 heartbeats_.fetch_add(1, std::memory_order_relaxed);
               });
}

}  // namespace fg::cluster
