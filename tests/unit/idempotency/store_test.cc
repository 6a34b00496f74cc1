// The idempotency record against a real redis-server, through the exchange the proxy
// uses: what a first attempt costs Redis (one claim script, then one plain SET while
// the lease surely runs), that the stored answer replays byte for byte, and that an
// answer arriving when the lease may have ended is only written over its own claim.
#include "idempotency/exchange.h"

#include <catch2/catch.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/redis_rig.h"

namespace {

using fg::http::RequestHead;
using fg::idempotency::ClaimResult;
using fg::idempotency::Decision;
using fg::idempotency::Exchange;
using fg::idempotency::KeySource;
using fg::idempotency::Link;
using fg::idempotency::Rules;
using fg::redis::Failure;
using fg::redis::Reply;
using Next = Decision::Next;
using Kind = ClaimResult::Kind;

constexpr uint64_t kTtl = 600'000;
const std::string kHeaders = "Content-Type: application/json\r\nX-Order: 7\r\n";
const std::string kBody = "{\"order_id\":\"o-7\"}";

RequestHead post(const std::string& key) {
  RequestHead h;
  h.method = "POST";
  h.target = "/orders";
  h.headers.push_back({"Idempotency-Key", key});
  return h;
}

class Rig : public fg::test::RedisRig {
 public:
  Rig() : RedisRig("idempotency-store-test") {
    link.client = &client();
    link.hold = [] { return std::function<void()>([] {}); };
  }

  // A prepared exchange for `key`; claim() then gives Redis's answer as a decision.
  Decision claim(Exchange& x, const std::string& key, const std::string& owner, uint64_t lease_ms,
                 const std::string& body = "{\"sku\":\"card-10\"}") {
    Rules rules;
    std::vector<KeySource> sources = {KeySource{KeySource::Kind::kHeader, "Idempotency-Key"}};
    RequestHead head = post(key);
    Decision d = x.begin(rules, sources, head, body, false, true);
    REQUIRE(d.next == Next::kClaim);
    x.prepare(rules, "t:", "orders", "10.0.0.1", owner);
    std::optional<Decision> got;
    x.claim(link, head, body, lease_ms, UINT64_MAX, [&](ClaimResult& r) { got = x.claimed(r, rules, false); });
    REQUIRE(pump([&got] { return got.has_value(); }));
    return std::move(*got);
  }

  // Completes a won claim with a 201 and waits until Redis answered.
  void complete(Exchange& x) {
    bool done = false;
    REQUIRE(x.complete(link, 201, "Created", kHeaders, kBody, false, kTtl, [&done] { done = true; }));
    REQUIRE(pump([&done] { return done; }));
  }

  // calls per command since the last CONFIG RESETSTAT, from INFO commandstats.
  std::map<std::string, long> calls() {
    std::map<std::string, long> out;
    std::string info = raw({"INFO", "commandstats"}).str;
    size_t pos = 0;
    while ((pos = info.find("cmdstat_", pos)) != std::string::npos) {
      size_t colon = info.find(':', pos);
      size_t eq = info.find("calls=", colon);
      out[info.substr(pos + 8, colon - pos - 8)] = std::stol(info.substr(eq + 6));
      pos = colon;
    }
    return out;
  }

  Link link;
};

}  // namespace

TEST_CASE("a first attempt costs one claim script and one plain SET, and replays byte for byte",
          "[idempotency][redis]") {
  Rig rig;
  // The script is loaded once per connection; count from the first attempt on.
  Exchange warm;
  REQUIRE(rig.claim(warm, "warm-up", "owner0", 60'000).next == Next::kForward);
  rig.complete(warm);
  rig.raw({"CONFIG", "RESETSTAT"});

  Exchange x;
  REQUIRE(rig.claim(x, "k1", "owner1", 60'000).next == Next::kForward);
  rig.complete(x);
  std::map<std::string, long> c = rig.calls();
  CHECK(c["evalsha"] == 1);  // the claim
  CHECK(c["get"] == 0);      // the answer is not read back by a script
  CHECK(c["set"] == 2);      // SET NX GET in the claim, the answer's SET

  Reply ttl = rig.raw({"PTTL", "t:idem:{orders}:k1"});
  CHECK(ttl.integer > static_cast<int64_t>(kTtl) - 10'000);
  CHECK(ttl.integer <= static_cast<int64_t>(kTtl));

  Exchange again;
  Decision d = rig.claim(again, "k1", "owner2", 60'000);
  REQUIRE(d.next == Next::kReplay);
  CHECK(d.stored == fg::idempotency::encode_response(201, "Created", kHeaders, kBody));

  Exchange other;
  CHECK(rig.claim(other, "k1", "owner3", 60'000, "{\"sku\":\"card-50\"}").status == 422);
}

TEST_CASE("an answer that may come after its lease only replaces its own claim", "[idempotency][redis]") {
  Rig rig;
  // A lease shorter than the completion's margin: the owner is checked in Redis.
  Exchange x;
  REQUIRE(rig.claim(x, "k2", "owner1", 1'000).next == Next::kForward);
  // The lease ran out and another attempt claimed the key meanwhile.
  rig.raw({"SET", "t:idem:{orders}:k2", "iowner9\nfp\n0", "PX", "60000"});
  rig.complete(x);
  CHECK(rig.raw({"GET", "t:idem:{orders}:k2"}).str == "iowner9\nfp\n0");

  // Still its own claim: the answer is stored.
  Exchange y;
  REQUIRE(rig.claim(y, "k3", "owner1", 1'000).next == Next::kForward);
  rig.complete(y);
  Exchange again;
  Decision d = rig.claim(again, "k3", "owner2", 1'000);
  REQUIRE(d.next == Next::kReplay);
  CHECK(d.stored == fg::idempotency::encode_response(201, "Created", kHeaders, kBody));
}
