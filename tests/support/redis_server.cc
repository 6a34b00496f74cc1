// Starts and stops a real redis-server for the tests (see redis_server.h).
#include "redis_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace fg::test {

namespace {

std::string find_redis_server() {
  const char* path = std::getenv("PATH");
  if (path != nullptr) {
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':')) {
      if (dir.empty()) continue;
      std::string candidate = dir + "/redis-server";
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  if (::access("/usr/bin/redis-server", X_OK) == 0) return "/usr/bin/redis-server";
  return {};
}

// Asks the kernel for a free loopback port. Another process could take it before
// redis-server binds it; the caller retries with a new port when the server exits.
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  uint16_t port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// One blocking PING over a fresh TCP connection. A server that requires a password
// answers -NOAUTH, which also proves it is serving.
bool ping(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  timeval tv{0, 200 * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const char req[] = "PING\r\n";
    if (::send(fd, req, sizeof req - 1, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof req - 1)) {
      char buf[64];
      ssize_t n = ::recv(fd, buf, sizeof buf - 1, 0);
      if (n > 0) {
        buf[n] = '\0';
        ok = std::strncmp(buf, "+PONG", 5) == 0 || std::strncmp(buf, "-NOAUTH", 7) == 0;
      }
    }
  }
  ::close(fd);
  return ok;
}

}  // namespace

RedisServer::RedisServer() : RedisServer(Options{}) {}

RedisServer::RedisServer(Options options) : options_(std::move(options)) {
  // hiredis writes with write(2): a peer that was killed must not kill the test
  // binary with SIGPIPE (floodgate's main ignores it the same way).
  ::signal(SIGPIPE, SIG_IGN);
  binary_ = find_redis_server();
  if (binary_.empty()) {
    error_ = "redis-server not found in PATH or /usr/bin (install the redis-server package)";
    return;
  }
  // mkdtemp replaces the six trailing 'X' characters.
  std::string tmpl = (std::filesystem::temp_directory_path() / "fg-redis-").string() + std::string(6, 'X');
  if (::mkdtemp(tmpl.data()) == nullptr) {
    error_ = std::string("mkdtemp: ") + std::strerror(errno);
    return;
  }
  dir_ = tmpl;
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = free_port();
    if (port_ == 0) {
      error_ = "no free port";
      return;
    }
    error_.clear();
    if (spawn() && wait_ready(5000)) return;
    kill();
  }
}

RedisServer::~RedisServer() {
  kill();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string RedisServer::url(int db) const {
  std::string u = "redis://";
  if (!options_.requirepass.empty()) u.append(":").append(options_.requirepass).append("@");
  u.append("127.0.0.1:").append(std::to_string(port_));
  if (db != 0) u.append("/").append(std::to_string(db));
  return u;
}

bool RedisServer::spawn() {
  std::vector<std::string> args = {
      binary_,        "--port",          std::to_string(port_),
      "--bind",       "127.0.0.1",       "--save",
      "",             "--appendonly",    "no",
      "--dir",        dir_,              "--unixsocket",
      socket_path(),  "--unixsocketperm", "700",
      "--logfile",    dir_ + "/redis.log", "--daemonize",
      "no",
  };
  if (!options_.requirepass.empty()) {
    args.push_back("--requirepass");
    args.push_back(options_.requirepass);
  }
  for (const std::string& a : options_.extra_args) args.push_back(a);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  // Early output (before the logfile is open) goes to a file, not the test output.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  std::string out = dir_ + "/redis.out";
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, binary_.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    error_ = "posix_spawn " + binary_ + ": " + std::strerror(rc);
    return false;
  }
  pid_ = pid;
  return true;
}

bool RedisServer::wait_ready(int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      error_ = "redis-server exited during startup: " + log_tail();
      return false;
    }
    if (ping(port_)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  error_ = "redis-server did not answer within " + std::to_string(timeout_ms) + " ms: " + log_tail();
  return false;
}

std::string RedisServer::log_tail() const {
  std::string text;
  for (const char* name : {"/redis.out", "/redis.log"}) {
    std::ifstream in(dir_ + name);
    std::stringstream ss;
    ss << in.rdbuf();
    text += ss.str();
  }
  if (text.size() > 600) text = text.substr(text.size() - 600);
  return text;
}

bool RedisServer::pause() { return pid_ > 0 && ::kill(pid_, SIGSTOP) == 0; }

bool RedisServer::resume() { return pid_ > 0 && ::kill(pid_, SIGCONT) == 0; }

bool RedisServer::kill() {
  if (pid_ <= 0) return false;
  ::kill(pid_, SIGKILL);  // also ends a stopped process
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  return true;
}

bool RedisServer::restart() {
  if (binary_.empty() || dir_.empty() || port_ == 0) return false;
  kill();
  error_.clear();
  if (!spawn()) return false;
  return wait_ready(5000);
}

}  // namespace fg::test
