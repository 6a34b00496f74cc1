#include "tests/unit/cluster/cluster_fixture.h"

#include <catch2/catch.hpp>

#include <optional>
#include <utility>

namespace fg::test {

ClusterFixture::ClusterFixture() = default;

ClusterFixture::~ClusterFixture() {
  if (!shut) shutdown();
}

void ClusterFixture::connect(int n, uint64_t command_timeout_ms) {
  INFO(srv.error());
  REQUIRE(srv.ok());
  auto ep = redis::parse_url(srv.url());
  REQUIRE(ep.is_ok());
  size_t first = clients.size();
  up.resize(first + static_cast<size_t>(n), 0);
  for (int i = 0; i < n; ++i) {
    size_t at = first + static_cast<size_t>(i);
    redis::Client::Options o;
    o.endpoint = ep.value();
    o.name = "cluster-test " + std::to_string(at);
    o.command_timeout_ms = command_timeout_ms;
    o.connect_timeout_ms = 500;
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 200;
    o.on_state = [this, at](bool u) { up[at] = u ? 1 : 0; };
    clients.push_back(std::make_unique<redis::Client>(&loop, std::move(o)));
    clients.back()->start();
  }
  REQUIRE(run_until(
      [&] {
        for (size_t i = first; i < up.size(); ++i)
          if (!up[i]) return false;
        return true;
      },
      3000));
}

redis::Reply ClusterFixture::cmd(std::vector<std::string> argv) {
  auto out = std::make_shared<std::optional<redis::Reply>>();
  client(0)->command(std::move(argv), [out](redis::Failure, redis::Reply& r) { out->emplace(std::move(r)); });
  REQUIRE(run_until([&] { return out->has_value(); }, 3000));
  return std::move(**out);
}

bool ClusterFixture::shutdown() {
  shut = true;
  bool ok = true;
  auto closed = std::make_shared<size_t>(0);
  for (auto& c : clients) c->close([closed] { ++*closed; });
  if (!run_until([&] { return *closed == clients.size(); }, 5000)) {
    // Leak rather than abort in ~Client: the failure is reported by the caller.
    for (auto& c : clients) (void)c.release();
    ok = false;
  }
  clients.clear();
  return close() && ok;
}

}  // namespace fg::test
