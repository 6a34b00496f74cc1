// Tests for admission::Gate, the admission stage: order of the checks, verdicts,
// RateLimit headers and dry-run reporting, without a socket.
#include "admission/gate.h"

#include <catch2/catch.hpp>

#include <string>

namespace {

using fg::Overflow;
using fg::RouteConfig;
using fg::admission::Budget;
using fg::admission::ClientLimiter;
using fg::admission::Gate;
using fg::admission::Request;
using fg::admission::Verdict;

constexpr uint64_t kT0 = 1'000'000'000'000;
const std::string kPolicy = "RateLimit-Policy: \"orders\";q=1;w=1\r\n";

RouteConfig route(Overflow overflow, bool dry_run = false) {
  RouteConfig rc;
  rc.name = "orders";
  rc.overflow = overflow;
  rc.dry_run = dry_run;
  return rc;
}

Request at(uint64_t t) {
  Request r;
  r.now_ns = t;
  r.client_key = "10.0.0.1";
  return r;
}

}  // namespace

TEST_CASE("the route budget admits, then rejects with Retry-After and RateLimit headers") {
  RouteConfig rc = route(Overflow::kReject);
  Budget budget(1, 0, kT0);
  Gate gate(rc, &budget, nullptr, kPolicy);
  Verdict first = gate.decide(at(kT0));
  CHECK(first.kind == Verdict::Kind::kAdmit);
  CHECK(gate.headers(first) == kPolicy + "RateLimit: \"orders\";r=0;t=1\r\n");
  Verdict second = gate.decide(at(kT0));
  CHECK(second.kind == Verdict::Kind::kRateLimited);
  CHECK(second.retry_after_ns > 0);
  CHECK(gate.headers(second).find("RateLimit: \"orders\";r=0") != std::string::npos);
}

TEST_CASE("over budget, overflow decides: degrade, or park on a queued route") {
  RouteConfig degrade = route(Overflow::kDegrade);
  Budget b1(1, 0, kT0);
  Gate g1(degrade, &b1, nullptr, kPolicy);
  CHECK(g1.decide(at(kT0)).kind == Verdict::Kind::kAdmit);
  CHECK(g1.decide(at(kT0)).kind == Verdict::Kind::kDegrade);

  RouteConfig queued = route(Overflow::kQueue);
  Budget b2(1, 0, kT0);
  Gate g2(queued, &b2, nullptr, kPolicy);
  CHECK(g2.decide(at(kT0)).kind == Verdict::Kind::kAdmit);
  CHECK(g2.decide(at(kT0)).kind == Verdict::Kind::kPark);
}

TEST_CASE("while tickets wait, arrivals on a queued route park without touching the budget") {
  RouteConfig rc = route(Overflow::kQueue);
  Budget budget(1, 0, kT0);
  Gate gate(rc, &budget, nullptr, kPolicy);
  Request r = at(kT0);
  r.queue_waiting = true;
  Verdict v = gate.decide(r);
  CHECK(v.kind == Verdict::Kind::kPark);
  CHECK(!v.rated);
  CHECK(gate.headers(v).empty());
  CHECK(budget.peek(kT0).remaining == 1);  // the token is still there for the dispatcher

  RouteConfig saf = route(Overflow::kReject);
  saf.store_and_forward = true;
  Gate g2(saf, &budget, nullptr, kPolicy);
  CHECK(g2.decide(at(kT0)).kind == Verdict::Kind::kPark);
}

TEST_CASE("the client limit is judged before the route budget, and spends none of it") {
  RouteConfig rc = route(Overflow::kReject);
  Budget budget(100, 100, kT0);
  ClientLimiter clients(1, 0, 1024);
  Gate gate(rc, &budget, &clients, kPolicy);
  CHECK(gate.decide(at(kT0)).kind == Verdict::Kind::kAdmit);
  uint64_t before = budget.peek(kT0).remaining;
  Verdict v = gate.decide(at(kT0));
  CHECK(v.kind == Verdict::Kind::kClientLimited);
  CHECK(v.retry_after_ns > 0);
  CHECK(budget.peek(kT0).remaining == before);
  Request other = at(kT0);
  other.client_key = "10.0.0.2";
  CHECK(gate.decide(other).kind == Verdict::Kind::kAdmit);
}

TEST_CASE("under pressure, non-core routes get the degrade answer first; core routes go on") {
  RouteConfig rc = route(Overflow::kReject);
  rc.core = false;
  Budget budget(100, 100, kT0);
  Gate gate(rc, &budget, nullptr, kPolicy);
  Request r = at(kT0);
  r.under_pressure = true;
  CHECK(gate.decide(r).kind == Verdict::Kind::kDegrade);
  CHECK(budget.peek(kT0).remaining == 101);
  rc.core = true;
  CHECK(gate.decide(r).kind == Verdict::Kind::kAdmit);
}

TEST_CASE("a dry-run route always goes on and reports what would have happened") {
  RouteConfig rc = route(Overflow::kDegrade, true);
  rc.core = false;
  Budget budget(1, 0, kT0);
  ClientLimiter clients(1, 0, 1024);
  Gate gate(rc, &budget, &clients, kPolicy);
  Request r = at(kT0);
  r.under_pressure = true;
  Verdict first = gate.decide(r);
  CHECK(first.kind == Verdict::Kind::kAdmit);
  CHECK(first.would_shed);
  CHECK_FALSE(first.would_client_limit);
  Verdict second = gate.decide(r);
  CHECK(second.kind == Verdict::Kind::kAdmit);
  CHECK(second.would_shed);
  CHECK(second.would_client_limit);
  CHECK(second.would_degrade);
  CHECK_FALSE(second.would_reject);

  RouteConfig queued = route(Overflow::kQueue, true);  // dry run never parks
  Budget b2(1, 0, kT0);
  Gate g2(queued, &b2, nullptr, kPolicy);
  g2.decide(at(kT0));
  Verdict v = g2.decide(at(kT0));
  CHECK(v.kind == Verdict::Kind::kAdmit);
  CHECK(v.would_reject);
}

namespace {

// A budget of a fixed number of tokens standing in for the cluster's leased ones.
class FixedShared : public fg::admission::SharedBudget {
 public:
  explicit FixedShared(uint64_t tokens) : tokens_(tokens) {}
  bool try_take(uint64_t) override {
    takes++;
    if (tokens_ == 0) return false;
    tokens_--;
    return true;
  }
  uint64_t available() const override { return tokens_; }
  uint64_t retry_after_ns() const override { return 2'000'000'000ULL; }
  int takes = 0;

 private:
  uint64_t tokens_;
};

}  // namespace

TEST_CASE("a cluster-scope route is judged by its shared budget, not the local one") {
  RouteConfig rc = route(Overflow::kReject);
  Budget local(1000, 1000, kT0);
  FixedShared shared(2);
  Gate gate(rc, &local, nullptr, kPolicy, &shared);
  Verdict first = gate.decide(at(kT0));
  CHECK(first.kind == Verdict::Kind::kAdmit);
  CHECK(gate.headers(first) == kPolicy + "RateLimit: \"orders\";r=1;t=1\r\n");
  CHECK(gate.decide(at(kT0)).kind == Verdict::Kind::kAdmit);
  Verdict third = gate.decide(at(kT0));
  CHECK(third.kind == Verdict::Kind::kRateLimited);
  CHECK(third.retry_after_ns == 2'000'000'000ULL);
  CHECK(shared.takes == 3);
  // The local budget was not touched: it still has its whole burst.
  CHECK(local.peek(kT0).remaining == 1001);

  RouteConfig queued = route(Overflow::kQueue);
  FixedShared none(0);
  Gate park(queued, nullptr, nullptr, kPolicy, &none);
  CHECK(park.decide(at(kT0)).kind == Verdict::Kind::kPark);
  RouteConfig dry = route(Overflow::kReject, true);
  Gate shadow(dry, nullptr, nullptr, kPolicy, &none);
  Verdict v = shadow.decide(at(kT0));
  CHECK(v.kind == Verdict::Kind::kAdmit);
  CHECK(v.would_reject);
}
