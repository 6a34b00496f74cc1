// Validation of [redis] (see redis_config.h). Parses the URL with endpoint.h only:
// the config library does not link the client.
#include "redis/redis_config.h"

#include "config/host_port.h"
#include "config/reader.h"

namespace fg::redis {
namespace {

using config::Reader;
using config::Table;

constexpr int64_t kMaxWaitReplicas = 16;
constexpr int64_t kMaxInstances = 1000;

// redis.sentinels, master_name, sentinel_password. With Sentinel the url still gives
// the password and the database, and its host must name the master, so a url that
// points at one server is never silently ignored.
void load_sentinels(Reader& rd, const toml::table& t, RedisConfig& r) {
  const toml::node* list = t.get("sentinels");
  const toml::node* name = t.get("master_name");
  const toml::node* password = t.get("sentinel_password");
  if (list == nullptr) {
    if (name != nullptr) rd.error(*name, "redis.master_name", "only valid together with redis.sentinels");
    if (password != nullptr) rd.error(*password, "redis.sentinel_password", "only valid together with redis.sentinels");
    return;
  }
  std::vector<HostPort> addresses;
  rd.read_address_list(*list, "redis.sentinels", false, true, &addresses);
  SentinelSet& set = r.endpoint.sentinel;
  for (const HostPort& hp : addresses) set.addresses.push_back({hp.host, hp.port});
  if (name == nullptr) {
    rd.error(*list, "redis.sentinels", "needs redis.master_name, the name the Sentinels monitor the master under");
  } else if (rd.read_string(*name, "redis.master_name", &set.master_name)) {
    bool printable = !set.master_name.empty();
    for (char c : set.master_name) printable = printable && c > ' ' && c < 127;
    if (!printable) rd.error(*name, "redis.master_name", "expected a non-empty name without spaces");
  }
  if (password != nullptr && rd.read_string(*password, "redis.sentinel_password", &set.password) &&
      set.password.empty()) {
    rd.error(*password, "redis.sentinel_password", "empty password (leave the key out when the Sentinels need none)");
  }
  const toml::node* url = t.get("url");
  if (url == nullptr || set.master_name.empty()) {
    r.endpoint.host = set.master_name;
    return;
  }
  if (r.endpoint.unix_socket) {
    rd.error(*url, "redis.url", "a unix socket cannot be combined with redis.sentinels; use redis://[:password@]" +
                                    set.master_name + "[/db]");
  } else if (r.endpoint.host != set.master_name) {
    rd.error(*url, "redis.url",
             "with redis.sentinels the url gives only the password and database, and its host names the master: "
             "expected redis://[:password@]" + set.master_name + "[/db], got host \"" + r.endpoint.host + "\"");
  }
}

}  // namespace

void load_config(Reader& rd, const Table& table, RedisConfig& r) {
  const toml::table& t = table.toml();
  rd.check_keys(t, "redis", {"url", "prefix", "timeout", "on_failure", "wait_replicas", "wait_timeout",
                         "expected_instances", "sentinels", "master_name", "sentinel_password"});
  r.enabled = true;
  if (const toml::node* n = t.get("url")) {
    if (rd.read_string(*n, "redis.url", &r.url)) {
      Result<Endpoint> ep = parse_url(r.url);
      if (!ep) {
        // The message quotes the URL; a password in it must not reach logs
        // or the /reload answer.
        std::string message = ep.message();
        const std::string shown = redact_url(r.url);
        if (shown != r.url) {
          for (size_t at = message.find(r.url); at != std::string::npos;
               at = message.find(r.url, at + shown.size())) {
            message.replace(at, r.url.size(), shown);
          }
        }
        rd.error(*n, "redis.url", message);
      } else {
        r.endpoint = std::move(ep.value());
      }
    }
  }
  load_sentinels(rd, t, r);
  if (const toml::node* n = t.get("prefix")) {
    // Every key is "<prefix>...{<route>}...": a brace in the prefix would become the
    // hash tag and put every route's keys in one slot (or split a script's keys).
    if (rd.read_string(*n, "redis.prefix", &r.prefix) && r.prefix.find_first_of("{}") != std::string::npos)
      rd.error(*n, "redis.prefix", "must not contain '{' or '}' (the keys' hash tags are the route names)");
  }
  if (const toml::node* n = t.get("timeout")) rd.read_duration(*n, "redis.timeout", &r.timeout_ms);
  if (const toml::node* n = t.get("on_failure")) {
    std::string v;
    if (rd.read_string(*n, "redis.on_failure", &v)) {
      if (v == "open") r.fail_open = true;
      else if (v == "closed") r.fail_open = false;
      else rd.error(*n, "redis.on_failure", "expected \"closed\" (503 where Redis is needed) or \"open\" (forward without dedupe), got \"" + v + "\"");
    }
  }
  if (const toml::node* n = t.get("expected_instances"))
    rd.read_int(*n, "redis.expected_instances", 1, kMaxInstances, &r.expected_instances);
  const toml::node* replicas = t.get("wait_replicas");
  if (replicas != nullptr) rd.read_int(*replicas, "redis.wait_replicas", 0, kMaxWaitReplicas, &r.wait_replicas);
  if (const toml::node* n = t.get("wait_timeout")) {
    if (rd.read_duration(*n, "redis.wait_timeout", &r.wait_timeout_ms)) {
      if (replicas == nullptr) {
        rd.error(*n, "redis.wait_timeout", "only valid together with wait_replicas");
      } else if (r.wait_replicas > 0 && r.wait_timeout_ms >= r.timeout_ms) {
        // WAIT is one command: its answer must arrive within redis.timeout,
        // or the connection is counted as stalled and re-established.
        rd.error(*n, "redis.wait_timeout",
              "must be shorter than redis.timeout (" + config::format_ms(r.timeout_ms) +
                  "), which bounds every Redis command including WAIT");
      }
    }
  } else if (r.wait_replicas > 0 && r.wait_timeout_ms >= r.timeout_ms) {
    rd.error(*replicas, "redis.wait_replicas",
          "WAIT uses wait_timeout (" + config::format_ms(r.wait_timeout_ms) + " by default), which must be shorter than "
          "redis.timeout (" + config::format_ms(r.timeout_ms) + "); set a shorter wait_timeout or a longer timeout");
  }
}

}  // namespace fg::redis
