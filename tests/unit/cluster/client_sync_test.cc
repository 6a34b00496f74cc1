// Tests for fg::cluster::ClientSync against a real redis-server: simulated instances
// (one client and one ClientLimiter each, on one loop) judge one client's requests,
// spread evenly over them. With the sync, what they admit together is the client's
// limit within the documented bound; without it (or with Redis stopped) each instance
// admits the whole limit. Also: the counters in Redis, and clients nobody reports any
// more are deleted.
#include "cluster/client_sync.h"

#include <catch2/catch.hpp>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "tests/unit/cluster/cluster_fixture.h"

namespace {

using fg::admission::ClientLimiter;
using fg::admission::hash_key;
using fg::cluster::ClientSync;
using fg::cluster::ClientSyncOptions;
using fg::loop::Timer;
using fg::test::ClusterFixture;

constexpr double kRate = 10;  // client_rate
constexpr double kBurst = 3;  // client_burst

ClientSyncOptions sync_options() {
  ClientSyncOptions o;
  o.prefix = "fgt:";
  o.route = "orders";
  return o;
}

// `demand` requests per second of client `key`, round robin over the limiters.
struct Spread {
  std::vector<std::shared_ptr<ClientLimiter>>& limiters;
  std::string key;
  double demand;
  Timer timer;
  uint64_t last_ns;
  double owed = 0;
  size_t next = 0;
  uint64_t admitted = 0;
  std::vector<uint64_t> per;

  Spread(ClusterFixture& f, std::vector<std::shared_ptr<ClientLimiter>>& ls, std::string k, double d)
      : limiters(ls), key(std::move(k)), demand(d), timer(&f.loop, [this] { step(); }), last_ns(uv_hrtime()),
        per(ls.size(), 0) {
    timer.start(1, 1);
  }
  void step() {
    uint64_t now = uv_hrtime();
    owed += demand * static_cast<double>(now - last_ns) / 1e9;
    last_ns = now;
    while (owed >= 1) {
      owed -= 1;
      size_t i = next++ % limiters.size();
      if (limiters[i]->try_acquire(key, now).admitted) {
        ++admitted;
        ++per[i];
      }
    }
  }
};

// Offers 60/s of one client spread over the limiters for `ms`; admitted per second.
double spread_rate(ClusterFixture& f, std::vector<std::shared_ptr<ClientLimiter>>& ls, const std::string& key,
                   uint64_t ms, uint64_t* admitted = nullptr) {
  Spread s(f, ls, key, 60);
  uint64_t t = uv_hrtime();
  f.run_for(ms);
  double seconds = static_cast<double>(uv_hrtime() - t) / 1e9;
  if (admitted) *admitted = s.admitted;
  std::printf("%s: %llu admitted in %.2fs (%llu / %llu / %llu)\n", key.c_str(),
              static_cast<unsigned long long>(s.admitted), seconds, static_cast<unsigned long long>(s.per[0]),
              static_cast<unsigned long long>(s.per[1]), static_cast<unsigned long long>(s.per[2]));
  return static_cast<double>(s.admitted) / seconds;
}

std::vector<std::shared_ptr<ClientLimiter>> limiters(size_t n) {
  std::vector<std::shared_ptr<ClientLimiter>> ls;
  for (size_t i = 0; i < n; i++) ls.push_back(std::make_shared<ClientLimiter>(kRate, kBurst, 4096));
  return ls;
}

}  // namespace

TEST_CASE("three instances count one client's admissions together", "[cluster][client_sync]") {
  ClusterFixture f;
  f.connect(3);
  auto ls = limiters(3);
  std::vector<std::unique_ptr<ClientSync>> syncs;
  for (int i = 0; i < 3; i++) {
    syncs.push_back(std::make_unique<ClientSync>(&f.loop, f.client(i), ls[static_cast<size_t>(i)], sync_options()));
    syncs.back()->start();
  }
  const double seconds = 3;
  uint64_t admitted = 0;
  spread_rate(f, ls, "alice", static_cast<uint64_t>(seconds * 1000), &admitted);
  // Read while the load has just stopped: a client is followed only for follow_ms after
  // the instance last reported it, and the wait below may outlast that on a slow build.
  std::vector<uint64_t> followed;
  for (auto& s : syncs) followed.push_back(s->stats().followed);
  // The documented bound with D = sync interval + round trip; D taken as 0.5 s for a
  // loaded or sanitized machine: 30 + 3 + 2 x (3 + 5) = 49. Independent instances
  // admit about 3 x (30 + 3) = 99.
  double bound = kRate * seconds + kBurst + 2 * (kBurst + kRate * 0.5);
  CHECK(static_cast<double>(admitted) <= bound);
  CHECK(static_cast<double>(admitted) >= 0.7 * kRate * seconds);

  // Redis holds the client's total: everything the instances admitted (once every
  // instance synced after the load stopped).
  std::vector<uint64_t> syncs_before;
  for (auto& s : syncs) syncs_before.push_back(s->stats().syncs);
  f.run_until(
      [&] {
        for (size_t i = 0; i < syncs.size(); i++)
          if (syncs[i]->stats().syncs <= syncs_before[i] + 1) return false;
        return true;
      },
      5000);
  char field[17];
  std::snprintf(field, sizeof field, "%016llx", static_cast<unsigned long long>(hash_key("alice")));
  fg::redis::Reply total = f.cmd({"HGET", "fgt:cl:{orders}", field});
  CHECK(total.str == std::to_string(admitted));
  uint64_t charged = 0;
  for (auto& s : syncs) {
    CHECK(s->stats().failures == 0);
    CHECK(s->stats().syncs >= 10);
    charged += s->stats().charged;
  }
  CHECK(followed == std::vector<uint64_t>{1, 1, 1});
  // Each instance was charged (most of) what the two others admitted.
  CHECK(charged >= admitted);

  // The same load on three limiters nobody syncs: about three times as much.
  auto alone = limiters(3);
  uint64_t independent = 0;
  spread_rate(f, alone, "bob", static_cast<uint64_t>(seconds * 1000), &independent);
  CHECK(static_cast<double>(independent) >= 2.5 * kRate * seconds);
  CHECK(static_cast<double>(independent) > bound);

  syncs.clear();
  REQUIRE(f.shutdown());
}

TEST_CASE("Redis stopped: the limit is per instance; shared again when Redis is back",
          "[cluster][client_sync]") {
  ClusterFixture f;
  f.connect(3, 200);
  auto ls = limiters(3);
  std::vector<std::unique_ptr<ClientSync>> syncs;
  for (int i = 0; i < 3; i++) {
    syncs.push_back(std::make_unique<ClientSync>(&f.loop, f.client(i), ls[static_cast<size_t>(i)], sync_options()));
    syncs.back()->start();
  }
  double shared = spread_rate(f, ls, "carol", 2000);
  CHECK(shared <= 1.8 * kRate);

  REQUIRE(f.srv.kill());
  double down = spread_rate(f, ls, "carol", 2000);
  // Neither closed nor a shared limit: each instance admits the client's whole rate.
  CHECK(down >= 2.5 * kRate);
  for (auto& s : syncs) CHECK(s->stats().failures >= 1);

  REQUIRE(f.srv.restart());
  REQUIRE(f.run_until([&] { return f.up[0] && f.up[1] && f.up[2]; }, 5000));
  std::vector<uint64_t> before;
  for (auto& s : syncs) before.push_back(s->stats().syncs);
  // Past the first answers (they only set the bases again) and the local buckets' burst.
  spread_rate(f, ls, "carol", 1000);
  double back = spread_rate(f, ls, "carol", 2000);
  CHECK(back <= 1.8 * kRate);
  for (size_t i = 0; i < syncs.size(); i++) CHECK(syncs[i]->stats().syncs > before[i]);

  syncs.clear();
  REQUIRE(f.shutdown());
}

TEST_CASE("a client nobody reports any more is deleted from Redis; idle syncs cost nothing",
          "[cluster][client_sync]") {
  ClusterFixture f;
  f.connect(1);
  auto ls = limiters(1);
  ClientSyncOptions o = sync_options();
  o.follow_ms = 100;
  o.forget_ms = 400;
  auto owned = std::make_unique<ClientSync>(&f.loop, f.client(0), ls[0], o);
  ClientSync& sync = *owned;
  sync.start();
  uint64_t t = uv_hrtime();
  REQUIRE(ls[0]->try_acquire("dave", t).admitted);
  REQUIRE(f.run_until([&] { return sync.stats().syncs >= 1; }, 2000));
  CHECK(f.cmd({"HLEN", "fgt:cl:{orders}"}).integer == 1);
  // Followed for follow_ms, then no call at all while nothing happens.
  f.run_for(500);
  uint64_t idle = sync.stats().syncs;
  CHECK(sync.stats().followed == 0);
  f.run_for(300);
  CHECK(sync.stats().syncs == idle);
  // The next call (another client) deletes dave's counter, not touched for forget_ms.
  REQUIRE(ls[0]->try_acquire("erin", uv_hrtime()).admitted);
  REQUIRE(f.run_until([&] { return sync.stats().syncs > idle; }, 2000));
  CHECK(f.cmd({"HLEN", "fgt:cl:{orders}"}).integer == 1);
  CHECK(f.cmd({"ZCARD", "fgt:cl:{orders}:seen"}).integer == 1);
  CHECK(sync.stats().reported == 2);
  owned.reset();
  REQUIRE(f.shutdown());
}
