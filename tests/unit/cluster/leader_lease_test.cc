// Tests for fg::cluster::LeaderLease against a real redis-server: one holder among
// three candidates, takeover within TTL + one renew interval after the holder stops
// renewing, a clean release handed over at once, and the fence refusing a deposed
// holder's late write.
#include "cluster/leader_lease.h"

#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <vector>

#include "tests/unit/cluster/cluster_fixture.h"

namespace {

using fg::cluster::LeaderLease;
using fg::cluster::LeaderLeaseOptions;
using fg::test::ClusterFixture;
using fg::test::mono_ms;

constexpr uint64_t kTtl = 600;

struct Candidate {
  std::unique_ptr<LeaderLease> lease;
  int gained = 0;
  int lost = 0;
};

void make(ClusterFixture& f, std::vector<Candidate>& cs, int n) {
  cs.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    Candidate& c = cs[static_cast<size_t>(i)];
    LeaderLeaseOptions o;
    o.prefix = "fgt:";
    o.name = "queue:orders";
    o.holder_id = "instance-" + std::to_string(i);
    o.ttl_ms = kTtl;
    o.on_change = [&c](bool leader, uint64_t) { (leader ? c.gained : c.lost)++; };
    c.lease = std::make_unique<LeaderLease>(&f.loop, f.client(i), std::move(o));
  }
}

int leaders(const std::vector<Candidate>& cs) {
  int n = 0;
  for (const Candidate& c : cs) n += c.lease && c.lease->is_leader() ? 1 : 0;
  return n;
}

int leader_index(const std::vector<Candidate>& cs) {
  for (size_t i = 0; i < cs.size(); ++i)
    if (cs[i].lease && cs[i].lease->is_leader()) return static_cast<int>(i);
  return -1;
}

// Runs the fenced SET example with `token` on client 0; the reply.
fg::redis::Reply fenced_set(ClusterFixture& f, fg::redis::Script* script, const std::string& fence_key,
                            uint64_t token, const std::string& value) {
  auto out = std::make_shared<std::optional<fg::redis::Reply>>();
  f.client(0)->eval(script, {fence_key, "fgt:queue:state"}, {std::to_string(token), value},
                    [out](fg::redis::Failure, fg::redis::Reply& r) { out->emplace(std::move(r)); });
  REQUIRE(f.run_until([&] { return out->has_value(); }, 3000));
  return std::move(**out);
}

}  // namespace

TEST_CASE("one leader among three; takeover within TTL + one renew interval", "[cluster]") {
  ClusterFixture f;
  f.connect(3);
  std::vector<Candidate> cs;
  make(f, cs, 3);
  for (auto& c : cs) c.lease->start();
  REQUIRE(f.run_until([&] { return leaders(cs) == 1; }, 2000));
  // It stays exactly one through several renewals.
  uint64_t end = mono_ms() + 3 * kTtl;
  bool always_one = true;
  f.run_until([&] {
    always_one = always_one && leaders(cs) == 1;
    return mono_ms() >= end;
  }, 3 * kTtl + 100);
  CHECK(always_one);
  int first = leader_index(cs);
  REQUIRE(first >= 0);
  uint64_t first_token = cs[static_cast<size_t>(first)].lease->token();
  CHECK(cs[static_cast<size_t>(first)].gained == 1);

  // The holder dies without releasing: the others take over by expiry.
  cs[static_cast<size_t>(first)].lease.reset();
  uint64_t died = mono_ms();
  REQUIRE(f.run_until([&] { return leaders(cs) == 1; }, 3 * kTtl));
  uint64_t took = mono_ms() - died;
  INFO("takeover after " << took << " ms");
  CHECK(took <= kTtl + kTtl / 3 + 100);
  int second = leader_index(cs);
  CHECK(second != first);
  CHECK(cs[static_cast<size_t>(second)].lease->token() > first_token);

  // A clean stop releases: the last candidate takes over at its next attempt.
  cs[static_cast<size_t>(second)].lease->stop(true);
  CHECK(cs[static_cast<size_t>(second)].lost == 1);
  uint64_t released = mono_ms();
  REQUIRE(f.run_until([&] { return leaders(cs) == 1; }, 3 * kTtl));
  CHECK(mono_ms() - released <= kTtl / 3 + 100);

  cs.clear();
  REQUIRE(f.shutdown());
}

TEST_CASE("a holder that cannot renew stops leading before its key expires", "[cluster]") {
  ClusterFixture f;
  f.connect(1, 150);
  std::vector<Candidate> cs;
  make(f, cs, 1);
  cs[0].lease->start();
  REQUIRE(f.run_until([&] { return leaders(cs) == 1; }, 2000));
  REQUIRE(f.srv.pause());
  uint64_t paused = mono_ms();
  REQUIRE(f.run_until([&] { return leaders(cs) == 0; }, 2 * kTtl));
  CHECK(mono_ms() - paused <= kTtl);  // the key could expire at kTtl after the last renewal
  REQUIRE(f.srv.resume());
  // Redis answers again: the same holder finds its key gone (or still its own) and leads.
  REQUIRE(f.run_until([&] { return leaders(cs) == 1; }, 3000));
  cs.clear();
  REQUIRE(f.shutdown());
}

TEST_CASE("the fence refuses a deposed leader's late write", "[cluster]") {
  ClusterFixture f;
  f.connect(2);
  std::vector<Candidate> cs;
  make(f, cs, 2);
  cs[0].lease->start();
  REQUIRE(f.run_until([&] { return cs[0].lease->is_leader(); }, 2000));
  uint64_t old_token = cs[0].lease->token();
  std::string fence = cs[0].lease->keys().fence;
  auto script = fg::cluster::fenced_set_script();

  auto r = fenced_set(f, &script, fence, old_token, "from-0");
  INFO(r.str);
  CHECK(r.type == fg::redis::Reply::Type::kStatus);
  CHECK_FALSE(fg::cluster::is_fenced(r));

  // Instance 0 is partitioned (stops renewing, keeps its token in hand); 1 takes over.
  cs[0].lease.reset();
  cs[1].lease->start();
  REQUIRE(f.run_until([&] { return cs[1].lease->is_leader(); }, 3 * kTtl));
  uint64_t new_token = cs[1].lease->token();
  REQUIRE(new_token > old_token);

  // The old holder's late write is refused even before the new holder wrote anything.
  r = fenced_set(f, &script, fence, old_token, "late-from-0");
  CHECK(fg::cluster::is_fenced(r));
  CHECK(f.cmd({"GET", "fgt:queue:state"}).str == "from-0");

  r = fenced_set(f, &script, fence, new_token, "from-1");
  CHECK_FALSE(fg::cluster::is_fenced(r));
  CHECK(f.cmd({"GET", "fgt:queue:state"}).str == "from-1");
  r = fenced_set(f, &script, fence, old_token, "later-from-0");
  CHECK(fg::cluster::is_fenced(r));
  CHECK(f.cmd({"GET", "fgt:queue:state"}).str == "from-1");

  cs.clear();
  REQUIRE(f.shutdown());
}
