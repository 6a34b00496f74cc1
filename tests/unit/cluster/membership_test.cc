// Tests for fg::cluster::Membership against a real redis-server: three instances
// count each other, one that stops beating drops out within its TTL, a clean leave is
// seen at the next heartbeat, and the expected count stands in until a heartbeat.
#include "cluster/membership.h"

#include <catch2/catch.hpp>

#include <memory>
#include <vector>

#include "tests/unit/cluster/cluster_fixture.h"

namespace {

using fg::cluster::Membership;
using fg::cluster::MembershipOptions;
using fg::test::ClusterFixture;
using fg::test::mono_ms;

MembershipOptions options(int i, uint64_t heartbeat_ms, uint64_t ttl_ms) {
  MembershipOptions o;
  o.prefix = "fgt:";
  o.instance_id = "instance-" + std::to_string(i);
  o.heartbeat_ms = heartbeat_ms;
  o.ttl_ms = ttl_ms;
  o.expected_instances = 5;
  return o;
}

}  // namespace

TEST_CASE("three instances count each other; a silent one drops out within its TTL", "[cluster]") {
  ClusterFixture f;
  f.connect(3);
  constexpr uint64_t kBeat = 100;
  constexpr uint64_t kTtl = 400;
  std::vector<std::unique_ptr<Membership>> m;
  for (int i = 0; i < 3; ++i) m.push_back(std::make_unique<Membership>(&f.loop, f.client(i), options(i, kBeat, kTtl)));
  // Before any heartbeat is answered, the configured expectation stands in.
  CHECK(m[0]->live_instances() == 5);
  CHECK_FALSE(m[0]->seen());
  for (auto& x : m) x->start();
  REQUIRE(f.run_until([&] { return m[0]->live_instances() == 3 && m[2]->live_instances() == 3; }, 2000));

  // Instance 2 "crashes": it stops beating without leaving.
  m[2]->stop(false);
  uint64_t stopped = mono_ms();
  REQUIRE(f.run_until([&] { return m[0]->live_instances() == 2 && m[1]->live_instances() == 2; }, 3000));
  uint64_t took = mono_ms() - stopped;
  INFO("dropped out after " << took << " ms");
  CHECK(took <= kTtl + kBeat + 100);
  CHECK(took >= kTtl - kBeat - 50);  // not before its TTL: the count is not just "recent callers"

  // A clean leave is seen at the others' next heartbeat, not after the TTL.
  m[1]->stop(true);
  uint64_t left = mono_ms();
  REQUIRE(f.run_until([&] { return m[0]->live_instances() == 1; }, 2000));
  CHECK(mono_ms() - left <= kBeat + 100);
  CHECK(m[0]->failures() == 0);

  m.clear();
  REQUIRE(f.shutdown());
}

TEST_CASE("the last count stays while Redis does not answer", "[cluster]") {
  ClusterFixture f;
  f.connect(2, 200);
  std::vector<std::unique_ptr<Membership>> m;
  for (int i = 0; i < 2; ++i) m.push_back(std::make_unique<Membership>(&f.loop, f.client(i), options(i, 100, 1000)));
  for (auto& x : m) x->start();
  REQUIRE(f.run_until([&] { return m[0]->live_instances() == 2; }, 2000));
  REQUIRE(f.srv.pause());
  REQUIRE(f.run_until([&] { return m[0]->failures() >= 2; }, 3000));
  CHECK(m[0]->live_instances() == 2);  // not expected_instances, not 1
  REQUIRE(f.srv.resume());
  m.clear();
  REQUIRE(f.shutdown());
}
