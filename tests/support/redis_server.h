// A real redis-server for tests: its own temp dir and a free loopback port, stopped by
// PID when the object dies. A missing redis-server binary is reported through ok() /
// error() so that the test fails (Redis is never faked and never skipped).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace fg::test {

class RedisServer {
 public:
  struct Options {
    std::string requirepass;              // empty: no password
    std::vector<std::string> extra_args;  // appended to the command line
  };

  // Starts redis-server (from PATH, else /usr/bin/redis-server) on 127.0.0.1 and a
  // free port, plus a unix socket in its temp dir, and waits until it answers.
  // Blocking: call it before the test's loop runs, never from a loop callback.
  RedisServer();
  explicit RedisServer(Options options);
  ~RedisServer();  // SIGKILLs the process (also when stopped) and removes the temp dir
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  std::string socket_path() const { return dir_ + "/redis.sock"; }
  // redis://[:password@]127.0.0.1:PORT[/db]
  std::string url(int db = 0) const;

  // SIGSTOP / SIGCONT: the socket stays open but nothing is answered.
  bool pause();
  bool resume();
  // SIGKILL and reap; the port is kept for restart().
  bool kill();
  // Starts a fresh server on the same port and dir and waits until it answers.
  bool restart();

 private:
  bool spawn();
  bool wait_ready(int timeout_ms);
  std::string log_tail() const;

  Options options_;
  std::string binary_;
  std::string dir_;
  std::string error_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace fg::test
