// The idempotency record: one Redis string per key, its first byte the state.
//   i<owner>\n<fingerprint>\n<lease end, wall ms>   claimed, being processed
//   t<owner>\n<fingerprint>\n<ticket id>            claimed and parked as a ticket (queue)
//   d<fingerprint>\n<response>                      answered: the response to replay
//   u<fingerprint>                                  answered, response too large to keep
// A string instead of a hash: the claim is one SET NX GET (it writes the claim or
// returns the record it found, in one step), the completion one SET, and a record is
// the key, one value and its expiry (no per-field overhead). The queue scripts
// (queue/queue_store.cc, queue/dead_letter.cc) read and write the same layout.
#include "idempotency/store.h"

#include <charconv>
#include <chrono>
#include <cstdlib>

namespace fg::idempotency {
namespace {

// The claim keeps its TIME check. A claim that reaches Redis after the gateway gave up
// on it (it sat in the socket of a stalled Redis) must not hold the key, or the client's
// retry would be refused for a whole lease. Neither alternative holds that promise:
// - the lease: it must outlive an honest attempt (seconds), so it cannot also end a
//   late claim within the command timeout;
// - a release sent by the gateway: a timed-out command's connection is dropped, so its
//   late reply is never seen; a release sent on the next connection can be executed
//   before the rest of the old connection's buffer (Redis reads 16 KB per client and
//   loop turn, so a backlog of claims interleaves with the new connection), and the
//   client's retry may reach another worker or gateway that owes no release;
// - SET NX PXAT <deadline> and then extending it to the lease: between the two the key
//   can expire and be claimed by another attempt while this one is forwarded.
// So Redis compares its own clock with the deadline; TIME costs a fraction of the
// EVALSHA. The rest is one native SET NX PX GET: nil = claimed, else the record found.
constexpr const char* kClaim = R"LUA(
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[3]) then return 0 end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2], 'GET')
)LUA";

// ARGV[1] = "<owner>\n". Only the owning attempt (claimed or parked) records an answer:
// after a lease ran out, the key may belong to another attempt.
constexpr const char* kComplete = R"LUA(
local v = redis.call('GET', KEYS[1])
local o = ARGV[1]
local c = v and string.byte(v)
if not ((c == 105 or c == 116) and string.sub(v, 2, #o + 1) == o) then return 0 end
local e = string.find(v, '\n', #o + 2, true)
if not e then return 0 end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], 'd' .. string.sub(v, #o + 2, e) .. ARGV[2], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], 'u' .. string.sub(v, #o + 2, e - 1), 'PX', ARGV[4])
end
return 1
)LUA";

// ARGV[1] = "i<owner>\n": only a claim still being processed is dropped.
constexpr const char* kRelease = R"LUA(
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)LUA";

uint64_t wall_ms() {
  using namespace std::chrono;
  return static_cast<uint64_t>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

// Reads the record a claim found (see the layout above).
void classify(std::string& v, const std::string& fingerprint, ClaimResult* r) {
  using Kind = ClaimResult::Kind;
  std::string_view rec = v;
  r->kind = Kind::kUnavailable;
  if (rec.empty()) return;
  char tag = rec[0];
  if (tag == 'i' || tag == 't') {
    size_t a = rec.find('\n', 1);
    size_t b = a == std::string_view::npos ? a : rec.find('\n', a + 1);
    if (b == std::string_view::npos) return;
    bool same = rec.substr(a + 1, b - a - 1) == fingerprint;
    std::string_view extra = rec.substr(b + 1);
    if (tag == 't') {
      r->kind = Kind::kTicket;
      r->ticket.assign(extra);
      r->same_request = same;
      return;
    }
    r->claimed_only = true;
    if (!same) {
      r->kind = Kind::kMismatch;
      return;
    }
    r->kind = Kind::kInFlight;
    // The lease end was written by the claiming gateway; another gateway's clock may
    // differ a little, which only moves the Retry-After hint.
    uint64_t end = std::strtoull(std::string(extra).c_str(), nullptr, 10);
    uint64_t now = wall_ms();
    r->retry_after_ms = end > now ? static_cast<int64_t>(end - now) : 0;
    return;
  }
  if (tag == 'd') {
    size_t a = rec.find('\n', 1);
    if (a == std::string_view::npos) return;
    if (rec.substr(1, a - 1) != fingerprint) {
      r->kind = Kind::kMismatch;
      return;
    }
    r->kind = Kind::kDone;
    v.erase(0, a + 1);  // in place: the response is not copied
    r->stored = std::move(v);
    return;
  }
  if (tag == 'u') {
    r->kind = rec.substr(1) == fingerprint ? Kind::kNotStored : Kind::kMismatch;
  }
}

}  // namespace

Scripts::Scripts() {
  claim.source = kClaim;
  complete.source = kComplete;
  release.source = kRelease;
}

void claim(redis::Client& client, Scripts& scripts, const std::string& key, const std::string& fingerprint,
           const std::string& owner, uint64_t lease_ms, uint64_t deadline_ms,
           std::function<void(ClaimResult&)> done) {
  std::string lease_end = std::to_string(wall_ms() + lease_ms);
  // Built in a buffer of the thread's that keeps its capacity: the client copies the
  // arguments before it returns.
  thread_local std::string record;
  record.clear();
  record += 'i';
  record += owner;
  record += '\n';
  record += fingerprint;
  record += '\n';
  record += lease_end;
  std::string lease = std::to_string(lease_ms);
  std::string deadline = std::to_string(deadline_ms);
  std::string_view keys[] = {key};
  std::string_view args[] = {record, lease, deadline};
  client.eval_view(&scripts.claim, keys, args,
                   [fingerprint, done = std::move(done)](redis::Failure failure, redis::Reply& reply) {
                     ClaimResult r;
                     if (failure == redis::Failure::kNone && reply.type == redis::Reply::Type::kNil) {
                       r.kind = ClaimResult::Kind::kClaimed;
                     } else if (failure == redis::Failure::kNone && reply.type == redis::Reply::Type::kString) {
                       classify(reply.str, fingerprint, &r);
                     }
                     // Anything else (no answer, an error, the integer of a late claim)
                     // is kUnavailable.
                     done(r);
                   });
}

void complete(redis::Client& client, Scripts& scripts, const std::string& key, const std::string& owner,
              const std::string& response, bool stored, uint64_t ttl_ms, std::function<void()> done) {
  std::string owned = owner + '\n';
  std::string ttl = std::to_string(ttl_ms);
  std::string_view keys[] = {key};
  std::string_view args[] = {owned, response, stored ? "1" : "0", ttl};
  client.eval_view(&scripts.complete, keys, args, [done = std::move(done)](redis::Failure, redis::Reply&) {
    if (done) done();
  });
}

void release(redis::Client& client, Scripts& scripts, const std::string& key, const std::string& owner,
             std::function<void()> done) {
  std::string claimed = 'i' + owner + '\n';
  std::string_view keys[] = {key};
  std::string_view args[] = {claimed};
  client.eval_view(&scripts.release, keys, args, [done = std::move(done)](redis::Failure, redis::Reply&) {
    if (done) done();
  });
}

void record_answer(redis::Client& client, const std::string& key, std::string_view record, uint64_t ttl_ms,
                   std::function<void()> done) {
  char ttl[24];
  char* end = std::to_chars(ttl, ttl + sizeof ttl, ttl_ms).ptr;
  std::string_view argv[] = {"SET", key, record, "PX", std::string_view(ttl, static_cast<size_t>(end - ttl))};
  client.command_view(argv, [done = std::move(done)](redis::Failure, redis::Reply&) {
    if (done) done();
  });
}

namespace {

void append_response(std::string& out, int status, std::string_view reason, std::string_view header_lines,
                     std::string_view body) {
  char code[16];
  char* end = std::to_chars(code, code + sizeof code, status).ptr;
  *end++ = ' ';
  out.append(code, static_cast<size_t>(end - code));
  out.append(reason);
  out += "\r\n";
  out.append(header_lines);
  out += "\r\n";
  out.append(body);
}

}  // namespace

void answer_record(std::string& out, std::string_view fingerprint, bool stored, int status,
                   std::string_view reason, std::string_view header_lines, std::string_view body) {
  out.clear();
  if (!stored) {
    out += 'u';
    out.append(fingerprint);
    return;
  }
  out.reserve(24 + fingerprint.size() + reason.size() + header_lines.size() + body.size());
  out += 'd';
  out.append(fingerprint);
  out += '\n';
  append_response(out, status, reason, header_lines, body);
}

std::string encode_response(int status, std::string_view reason, std::string_view header_lines,
                            std::string_view body) {
  std::string out;
  out.reserve(16 + reason.size() + header_lines.size() + body.size());
  append_response(out, status, reason, header_lines, body);
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
