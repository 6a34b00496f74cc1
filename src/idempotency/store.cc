// The idempotency scripts. Record layout (a Redis hash):
//   s = "inflight" | "done" | "unstored", f = fingerprint, o = owner token, r = response.
// Claims expire after a lease so a key whose gateway died is never blocked forever.
#include "idempotency/store.h"

#include <cstdio>
#include <cstdlib>

namespace fg::idempotency {
namespace {

constexpr const char* kClaim = R"LUA(
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[4]) then return {'late'} end
local s = redis.call('HMGET', KEYS[1], 's', 'f', 'r', 'tk')
if not s[1] then
  redis.call('HSET', KEYS[1], 's', 'inflight', 'f', ARGV[1], 'o', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'claimed'}
end
if s[1] == 'inflight' and s[4] then return {'ticket', s[4], s[2] == ARGV[1] and 1 or 0} end
if s[2] ~= ARGV[1] then return {'mismatch'} end
if s[1] == 'inflight' then return {'inflight', redis.call('PTTL', KEYS[1])} end
if s[1] == 'unstored' then return {'unstored'} end
return {'done', s[3]}
)LUA";

constexpr const char* kComplete = R"LUA(
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return 0 end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 's', 'done', 'r', ARGV[2])
else
  redis.call('HSET', KEYS[1], 's', 'unstored')
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
)LUA";

constexpr const char* kRelease = R"LUA(
if redis.call('HGET', KEYS[1], 'o') == ARGV[1] and redis.call('HGET', KEYS[1], 's') == 'inflight' then
  return redis.call('DEL', KEYS[1])
end
return 0
)LUA";

}  // namespace

Scripts::Scripts() {
  claim.source = kClaim;
  complete.source = kComplete;
  release.source = kRelease;
}

void claim(redis::Client& client, Scripts& scripts, const std::string& key, const std::string& fingerprint,
           const std::string& owner, uint64_t lease_ms, uint64_t deadline_ms,
           std::function<void(ClaimResult&)> done) {
  client.eval(&scripts.claim, {key}, {fingerprint, owner, std::to_string(lease_ms), std::to_string(deadline_ms)},
              [done = std::move(done)](redis::Failure failure, redis::Reply& reply) {
                ClaimResult r;
                if (failure != redis::Failure::kNone || reply.type != redis::Reply::Type::kArray ||
                    reply.elements.empty() || reply.elements[0].type != redis::Reply::Type::kString) {
                  r.kind = ClaimResult::Kind::kUnavailable;
                  done(r);
                  return;
                }
                const std::string& tag = reply.elements[0].str;
                if (tag == "claimed") {
                  r.kind = ClaimResult::Kind::kClaimed;
                } else if (tag == "mismatch") {
                  r.kind = ClaimResult::Kind::kMismatch;
                } else if (tag == "inflight") {
                  r.kind = ClaimResult::Kind::kInFlight;
                  if (reply.elements.size() > 1) r.retry_after_ms = reply.elements[1].integer;
                } else if (tag == "ticket" && reply.elements.size() > 2) {
                  r.kind = ClaimResult::Kind::kTicket;
                  r.ticket = reply.elements[1].str;
                  r.same_request = reply.elements[2].integer == 1;
                } else if (tag == "unstored") {
                  r.kind = ClaimResult::Kind::kNotStored;
                } else if (tag == "done" && reply.elements.size() > 1) {
                  r.kind = ClaimResult::Kind::kDone;
                  r.stored = std::move(reply.elements[1].str);
                } else {
                  r.kind = ClaimResult::Kind::kUnavailable;
                }
                done(r);
              });
}

void complete(redis::Client& client, Scripts& scripts, const std::string& key, const std::string& owner,
              const std::string& response, bool stored, uint64_t ttl_ms, std::function<void()> done) {
  client.eval(&scripts.complete, {key}, {owner, response, stored ? "1" : "0", std::to_string(ttl_ms)},
              [done = std::move(done)](redis::Failure, redis::Reply&) {
                if (done) done();
              });
}

void release(redis::Client& client, Scripts& scripts, const std::string& key, const std::string& owner,
             std::function<void()> done) {
  client.eval(&scripts.release, {key}, {owner}, [done = std::move(done)](redis::Failure, redis::Reply&) {
    if (done) done();
  });
}

std::string encode_response(int status, std::string_view reason, std::string_view header_lines,
                            std::string_view body) {
  std::string out;
  out.reserve(16 + reason.size() + header_lines.size() + body.size());
  out += std::to_string(status);
  out += ' ';
  out.append(reason);
  out += "\r\n";
  out.append(header_lines);
  out += "\r\n";
  out.append(body);
  return out;
}

bool decode_response(std::string_view blob, StoredResponse* out) {
  size_t eol = blob.find("\r\n");
  if (eol == std::string_view::npos || eol < 3) return false;
  std::string_view line = blob.substr(0, eol);
  int status = 0;
  for (size_t i = 0; i < 3; i++) {
    if (line[i] < '0' || line[i] > '9') return false;
    status = status * 10 + (line[i] - '0');
  }
  out->status = status;
  out->reason = line.size() > 4 ? line.substr(4) : std::string_view();
  std::string_view rest = blob.substr(eol + 2);
  size_t end;
  if (rest.substr(0, 2) == "\r\n") {
    out->header_lines = {};
    out->body = rest.substr(2);
    return true;
  }
  end = rest.find("\r\n\r\n");
  if (end == std::string_view::npos) return false;
  out->header_lines = rest.substr(0, end + 2);
  out->body = rest.substr(end + 4);
  return true;
}

}  // namespace fg::idempotency
