// Per-client counts shared through Redis (see client_sync.h).
//
// State per route, both keys tagged {<route>} (one hash slot): the hash
// <prefix>cl:{<route>} holds, per client (the 64-bit hash of its key, hex), the running
// total of admissions every instance reported; the sorted set <prefix>cl:{<route>}:seen
// holds when (Redis TIME, ms) each client was last reported or followed, so that a
// client nobody touched for forget_ms is deleted (a few per call). An instance keeps
// the last total it saw per followed client: the others' admissions since then are the
// new total minus the old one minus what it just added itself. A client is followed
// only while this instance reported it in the last follow_ms < forget_ms, so its
// counter is never deleted under it and only grows; a total that went down (Redis
// restarted empty, or failed over to a replica that missed writes) is taken as the new
// base without a charge.
//
// Failure: a call that fails (Redis down, timeout, error) drops what it reported (the
// local limiter already judged those requests) and every base seen (after the outage
// the totals include what the others admitted meanwhile, which is stale by then); the
// limit is per instance until a call succeeds, and the first answers after that only
// set the bases again.
//
// Overshoot: an instance learns of the others' admissions at most one sync interval
// plus a round trip (D) late. Over any interval T a client is admitted at most
// client_rate x T + client_burst by the instance that judges it last, plus what the
// N - 1 others admitted in the last D that it has not seen, at most
// client_burst + client_rate x D each (each judges by its own GCRA):
//   admitted(T) <= client_rate x T + client_burst + (N - 1) x (client_burst + client_rate x D).
// The client_burst in the (N - 1) term is also what a client gets on first contact with
// each instance that does not follow it yet.
#include "cluster/client_sync.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "core/clock.h"

namespace fg::cluster {
namespace {

// KEYS[1] totals, KEYS[2] last touch; ARGV forget_ms, n reported, then n pairs
// (client, admissions), then the followed clients. Returns the totals in that order.
redis::Script sync_script() {
  return redis::Script{R"(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local forget = tonumber(ARGV[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - forget, 'LIMIT', 0, 256)
if #stale > 0 then
  redis.call('HDEL', KEYS[1], unpack(stale))
  redis.call('ZREM', KEYS[2], unpack(stale))
end
local out = {}
local i = 3
for k = 1, tonumber(ARGV[2]) do
  out[#out + 1] = redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], now, ARGV[i])
  i = i + 2
end
for k = i, #ARGV do
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[1], ARGV[k]) or '0')
  redis.call('ZADD', KEYS[2], now, ARGV[k])
end
redis.call('PEXPIRE', KEYS[1], forget * 2)
redis.call('PEXPIRE', KEYS[2], forget * 2)
return out
)", ""};
}

redis::Script& shared_sync_script() {
  thread_local redis::Script script = sync_script();
  return script;
}

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

ClientSync::ClientSync(uv_loop_t* loop, redis::Client* redis, std::shared_ptr<admission::ClientLimiter> limiter,
                       ClientSyncOptions options)
    : redis_(redis),
      options_(std::move(options)),
      key_(options_.prefix + "cl:{" + options_.route + "}"),
      seen_key_(key_ + ":seen") {
  set_limiter(std::move(limiter));
  timer_ = std::make_unique<loop::Timer>(loop, [this] { sync(); });
}

ClientSync::~ClientSync() { stop(); }

void ClientSync::start() {
  running_ = true;
  timer_->start(options_.sync_ms, options_.sync_ms);
}

void ClientSync::stop() {
  if (!running_) return;
  running_ = false;
  anchor_.renew();  // replies to what was sent before stop() are dropped
  timer_->stop();
  in_flight_ = false;
}

void ClientSync::set_limiter(std::shared_ptr<admission::ClientLimiter> limiter) {
  if (limiter == limiter_) return;
  limiter_ = std::move(limiter);
  limiter_->enable_sync();
  // The new table starts empty: follow its clients from scratch.
  follow_.clear();
  followed_.store(0, std::memory_order_relaxed);
}

void ClientSync::sync() {
  if (!running_ || in_flight_) return;
  uint64_t now = clock::mono_ms();
  ++round_;
  std::vector<admission::ClientLimiter::Delta> deltas = limiter_->collect(options_.max_reported);
  std::vector<Sent> sent;
  sent.reserve(std::min(options_.max_clients, deltas.size() + follow_.size()));
  std::vector<std::string> args;
  args.reserve(2 + 2 * deltas.size());
  args.push_back(std::to_string(options_.forget_ms));
  args.push_back(std::to_string(deltas.size()));
  uint64_t reported = 0;
  for (const auto& d : deltas) {
    args.push_back(hex(d.key));
    args.push_back(std::to_string(d.count));
    sent.push_back(Sent{d.key, d.count});
    Follow& f = follow_[d.key];
    f.reported_ms = now;
    f.round = round_;
    reported += d.count;
  }
  for (auto it = follow_.begin(); it != follow_.end();) {
    Follow& f = it->second;
    if (f.round == round_) {
      ++it;
      continue;
    }
    if (now - f.reported_ms > options_.follow_ms) {
      it = follow_.erase(it);
      continue;
    }
    if (sent.size() < options_.max_clients) {
      args.push_back(hex(it->first));
      sent.push_back(Sent{it->first, 0});
      f.round = round_;
    }
    ++it;
  }
  followed_.store(follow_.size(), std::memory_order_relaxed);
  if (sent.empty()) return;  // an idle route costs Redis nothing
  reported_.fetch_add(reported, std::memory_order_relaxed);
  in_flight_ = true;
  loop::Guard<ClientSync> guard = anchor_.guard();
  redis_->eval(&shared_sync_script(), {key_, seen_key_}, std::move(args),
               [this, guard, sent = std::move(sent)](redis::Failure failure, redis::Reply& reply) {
                 if (!guard) return;
                 on_reply(failure, reply, sent);
               });
}

void ClientSync::on_reply(redis::Failure failure, const redis::Reply& reply, const std::vector<Sent>& sent) {
  in_flight_ = false;
  bool ok = failure == redis::Failure::kNone && reply.type == redis::Reply::Type::kArray &&
            reply.elements.size() == sent.size();
  if (!ok) {
    failures_.fetch_add(1, std::memory_order_relaxed);
    follow_.clear();
    followed_.store(0, std::memory_order_relaxed);
    return;
  }
  syncs_.fetch_add(1, std::memory_order_relaxed);
  uint64_t now_ns = uv_hrtime();
  uint64_t charged = 0;
  for (size_t k = 0; k < sent.size(); k++) {
    auto it = follow_.find(sent[k].key);
    if (it == follow_.end()) continue;  // a reload replaced the limiter meanwhile
    Follow& f = it->second;
    int64_t total = reply.elements[k].integer;
    int64_t foreign = total - f.total - sent[k].mine;
    bool first = !f.known;
    f.known = true;
    f.total = total;
    if (first || foreign <= 0) continue;
    charged += limiter_->charge(sent[k].key, static_cast<uint64_t>(foreign), now_ns);
  }
  charged_.fetch_add(charged, std::memory_order_relaxed);
}

ClientSyncStats ClientSync::stats() const {
  ClientSyncStats s;
  s.syncs = syncs_.load(std::memory_order_relaxed);
  s.failures = failures_.load(std::memory_order_relaxed);
  s.reported = reported_.load(std::memory_order_relaxed);
  s.charged = charged_.load(std::memory_order_relaxed);
  s.followed = followed_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace fg::cluster
