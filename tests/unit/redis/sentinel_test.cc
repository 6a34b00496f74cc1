// Sentinel replies and announcements as the discovery reads them (no sockets).
#include "redis/sentinel.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/loop_fixture.h"
#include "tests/support/redis_server.h"

extern char** environ;

namespace {

using fg::redis::Reply;

Reply text(const std::string& s, Reply::Type type = Reply::Type::kString) {
  Reply r;
  r.type = type;
  r.str = s;
  return r;
}

Reply array(std::initializer_list<Reply> items) {
  Reply r;
  r.type = Reply::Type::kArray;
  r.elements.assign(items.begin(), items.end());
  return r;
}

}  // namespace

TEST_CASE("get-master-addr-by-name answers are read", "[redis][sentinel]") {
  std::string host;
  uint16_t port = 0;
  CHECK(fg::redis::parse_master_addr(array({text("10.0.0.7"), text("6380")}), &host, &port));
  CHECK(host == "10.0.0.7");
  CHECK(port == 6380);
  CHECK(fg::redis::parse_master_addr(array({text("::1"), text("6379")}), &host, &port));
  CHECK(host == "::1");

  SECTION("nil (unknown master name) and malformed answers are refused") {
    host = "unchanged";
    CHECK_FALSE(fg::redis::parse_master_addr(Reply{}, &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(text("ERR No such master with that name", Reply::Type::kError), &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(array({text("10.0.0.7")}), &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(array({text("10.0.0.7"), text("6380"), text("x")}), &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(array({text(""), text("6380")}), &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(array({text("h"), text("0")}), &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(array({text("h"), text("65536")}), &host, &port));
    CHECK_FALSE(fg::redis::parse_master_addr(array({text("h"), text("63a")}), &host, &port));
    CHECK(host == "unchanged");
  }
}

TEST_CASE("+switch-master announcements are read for their master only", "[redis][sentinel]") {
  std::string old_host, host;
  uint16_t old_port = 0, port = 0;
  CHECK(fg::redis::parse_switch_master("shop 127.0.0.1 6379 127.0.0.1 6380", "shop", &old_host, &old_port, &host, &port));
  CHECK(old_host == "127.0.0.1");
  CHECK(old_port == 6379);
  CHECK(host == "127.0.0.1");
  CHECK(port == 6380);

  CHECK_FALSE(fg::redis::parse_switch_master("other 10.0.0.1 6379 10.0.0.2 6379", "shop", &old_host, &old_port, &host,
                                             &port));
  CHECK_FALSE(fg::redis::parse_switch_master("shop 10.0.0.1 6379 10.0.0.2", "shop", &old_host, &old_port, &host, &port));
  CHECK_FALSE(fg::redis::parse_switch_master("shop 10.0.0.1 6379 10.0.0.2 6379 extra", "shop", &old_host, &old_port,
                                             &host, &port));
  CHECK_FALSE(fg::redis::parse_switch_master("shop 10.0.0.1 x 10.0.0.2 6379", "shop", &old_host, &old_port, &host, &port));
  CHECK_FALSE(fg::redis::parse_switch_master("", "shop", &old_host, &old_port, &host, &port));
  CHECK(port == 6380);  // untouched by the refusals
}

TEST_CASE("ROLE answers give the role", "[redis][sentinel]") {
  Reply offset;
  offset.type = Reply::Type::kInteger;
  CHECK(fg::redis::role_of(array({text("master"), offset, array({})})) == "master");
  CHECK(fg::redis::role_of(array({text("slave"), text("127.0.0.1"), offset})) == "slave");
  CHECK(fg::redis::role_of(array({text("sentinel"), array({text("shop")})})) == "sentinel");
  CHECK(fg::redis::role_of(array({})).empty());
  CHECK(fg::redis::role_of(text("master")).empty());
  CHECK(fg::redis::role_of(array({offset})).empty());
}

// ---------------------------------------------------------------------------------
// Against real servers: a primary, its replica and one Sentinel watching them.

namespace {

using fg::redis::Client;
using fg::redis::Failure;
using fg::test::RedisServer;

// `redis-server <conf> --sentinel` in a temp dir of its own, SIGKILLed by the destructor.
class SentinelProcess {
 public:
  SentinelProcess(uint16_t port, uint16_t master_port, const std::string& name) : port_(port) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "fg-sentinel-").string() + std::string(6, 'X');
    if (::mkdtemp(tmpl.data()) == nullptr) return;
    dir_ = tmpl;
    const std::string conf = dir_ + "/sentinel.conf";
    std::ofstream(conf) << "port " << port << "\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"
                        << "dir " << dir_ << "\nlogfile " << dir_ << "/sentinel.log\n"
                        << "sentinel monitor " << name << " 127.0.0.1 " << master_port << " 1\n"
                        << "sentinel down-after-milliseconds " << name << " 60000\n"
                        << "sentinel failover-timeout " << name << " 10000\n";
    std::vector<std::string> args = {"redis-server", conf, "--sentinel"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string out = dir_ + "/sentinel.out";
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    if (::posix_spawnp(&pid_, "redis-server", &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~SentinelProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  SentinelProcess(const SentinelProcess&) = delete;
  SentinelProcess& operator=(const SentinelProcess&) = delete;

  bool started() const { return pid_ > 0; }
  uint16_t port() const { return port_; }

 private:
  uint16_t port_;
  pid_t pid_ = -1;
  std::string dir_;
};

uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

Client::Options plain(uint16_t port) {
  Client::Options o;
  o.endpoint.host = "127.0.0.1";
  o.endpoint.port = port;
  o.name = "test " + std::to_string(port);
  o.command_timeout_ms = 2000;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 200;
  return o;
}

struct Loop : fg::test::LoopFixture {
  std::vector<std::unique_ptr<Client>> clients;

  Client& add(Client::Options o) {
    clients.push_back(std::make_unique<Client>(&loop, std::move(o)));
    clients.back()->start();
    return *clients.back();
  }
  // The reply of one command (a nil reply when it failed or timed out).
  Reply ask(Client& c, std::vector<std::string> argv, Failure* failure = nullptr) {
    bool done = false;
    Reply out;
    c.command(std::move(argv), [&](Failure f, Reply& r) {
      done = true;
      if (failure) *failure = f;
      out = std::move(r);
    });
    run_until([&] { return done; }, 5000);
    return out;
  }
  bool shutdown() {
    int closed = 0;
    for (auto& c : clients) c->close([&closed] { ++closed; });
    const bool ok = run_until([&] { return closed == static_cast<int>(clients.size()); }, 5000);
    if (!ok) {
      for (auto& c : clients) (void)c.release();
    }
    clients.clear();
    return close() && ok;
  }
};

// Options of a client that asks the Sentinel on `port` where master "m" is.
Client::Options via_sentinel(uint16_t port) {
  Client::Options o = plain(0);
  o.name = "via sentinel";
  o.endpoint.host = "m";
  o.endpoint.sentinel.addresses.push_back({"127.0.0.1", port});
  o.endpoint.sentinel.master_name = "m";
  return o;
}

// A primary and its replica (the Sentinel is the test's own: what it watches differs).
struct Pair {
  RedisServer primary;
  RedisServer replica{RedisServer::Options{{}, {"--replicaof", "127.0.0.1", std::to_string(primary.port())}}};
  bool ok() const { return primary.ok() && replica.ok(); }
};

std::string config_port(Loop& l, Client& c) {
  Reply r = l.ask(c, {"CONFIG", "GET", "port"});
  return r.type == Reply::Type::kArray && r.elements.size() == 2 ? r.elements[1].str : std::string();
}

}  // namespace

TEST_CASE("a client through Sentinel writes to the master and follows a failover", "[redis][sentinel]") {
  Pair servers;
  REQUIRE(servers.ok());
  RedisServer& primary = servers.primary;
  RedisServer& replica = servers.replica;
  SentinelProcess sentinel(free_port(), primary.port(), "m");
  REQUIRE(sentinel.started());
  Loop l;
  Client& to_replica = l.add(plain(replica.port()));
  Client& to_sentinel = l.add(plain(sentinel.port()));
  // The Sentinel knows the replica (from the primary's INFO) and the replica is in sync.
  REQUIRE(l.run_until(
      [&] {
        Reply info = l.ask(to_replica, {"INFO", "replication"});
        Reply replicas = l.ask(to_sentinel, {"SENTINEL", "replicas", "m"});
        return info.str.find("master_link_status:up") != std::string::npos &&
               replicas.type == Reply::Type::kArray && replicas.elements.size() == 1;
      },
      20000));

  Client& c = l.add(via_sentinel(sentinel.port()));
  REQUIRE(l.run_until([&] { return c.connected(); }, 10000));
  CHECK(config_port(l, c) == std::to_string(primary.port()));
  CHECK(fg::redis::role_of(l.ask(c, {"ROLE"})) == "master");
  CHECK(l.ask(c, {"SET", "k", "before"}).str == "OK");

  // A forced failover: the replica becomes master, the primary its replica.
  const uint64_t asked = fg::test::mono_ms();
  REQUIRE(l.ask(to_sentinel, {"SENTINEL", "FAILOVER", "m"}).str == "OK");
  REQUIRE(l.run_until([&] { return c.connected() && config_port(l, c) == std::to_string(replica.port()); }, 20000));
  const uint64_t moved = fg::test::mono_ms() - asked;
  WARN("SENTINEL FAILOVER -> the client writes to the new master after " << moved << " ms");
  CHECK(fg::redis::role_of(l.ask(c, {"ROLE"})) == "master");
  CHECK(l.ask(c, {"SET", "k", "after"}).str == "OK");
  CHECK(l.ask(to_replica, {"GET", "k"}).str == "after");
  CHECK(c.reconnects() >= 1);
  REQUIRE(l.shutdown());
}

TEST_CASE("a client through Sentinel refuses a server that is not the master", "[redis][sentinel]") {
  Pair servers;
  REQUIRE(servers.ok());
  // The Sentinel is told the replica is the master (as a stale one may say around a failover).
  SentinelProcess sentinel(free_port(), servers.replica.port(), "m");
  REQUIRE(sentinel.started());
  Loop l;
  Client& c = l.add(via_sentinel(sentinel.port()));
  Client& to_sentinel = l.add(plain(sentinel.port()));
  std::string host;
  uint16_t port = 0;
  REQUIRE(l.run_until(
      [&] {
        return fg::redis::parse_master_addr(l.ask(to_sentinel, {"SENTINEL", "get-master-addr-by-name", "m"}), &host,
                                            &port);
      },
      10000));
  REQUIRE(port == servers.replica.port());
  // Connected and answered, but ROLE says "slave": never counted as up.
  l.run_for(1500);
  CHECK_FALSE(c.connected());
  Failure f = Failure::kNone;
  l.ask(c, {"SET", "k", "v"}, &f);
  CHECK(f == Failure::kDisconnected);
  REQUIRE(l.shutdown());
}
