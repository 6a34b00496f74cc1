// Redis Sentinel: where the master is, for every client of the process.
//
// One SentinelWatch per process and Sentinel set (shared by every Client whose
// endpoint names Sentinels: each worker's command and notification clients, the
// cluster node's, the admin's). It runs on a thread of its own with its own libuv
// loop, so discovery does not depend on any worker or on the main loop being idle:
//
//   - asks the Sentinels in turn `SENTINEL get-master-addr-by-name <name>`: at start,
//     once a second, and whenever a client reports trouble (suspect()): a ROLE that is
//     not "master", a READONLY reply, a lost or refused connection;
//   - subscribes to `+switch-master` on every Sentinel (any one of them announcing is
//     enough) and takes the new address from the announcement itself;
//   - publishes the address: each listening client has a uv_async_t on its own loop,
//     signalled when the address changes; the client then drops its connection and
//     connects to the new master at once (no backoff), checking ROLE first.
//
// After an announcement, answers naming the address the master moved away from are
// ignored for a while (a Sentinel that has not heard of the failover yet must not
// send the clients back to the old master, which may come back still calling itself
// master until the Sentinels reconfigure it).
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "redis/endpoint.h"
#include "redis/redis_client.h"

namespace fg::redis {

// The address in a `SENTINEL get-master-addr-by-name` answer ([ip, port]); false for
// a nil answer (unknown master name) or anything malformed.
bool parse_master_addr(const Reply& reply, std::string* host, uint16_t* port);

// The new address in a `+switch-master` message
// ("<name> <old-ip> <old-port> <new-ip> <new-port>") when it is about `name`.
bool parse_switch_master(std::string_view payload, std::string_view name, std::string* old_host,
                         uint16_t* old_port, std::string* host, uint16_t* port);

// The role in a ROLE answer ("master", "slave", "sentinel"), empty when malformed.
std::string role_of(const Reply& reply);

class SentinelWatch {
 public:
  // The watch of this Sentinel set, shared while any client holds it (started on the
  // first acquire, stopped and joined when the last holder lets go).
  static std::shared_ptr<SentinelWatch> acquire(const SentinelSet& set);
  ~SentinelWatch();
  SentinelWatch(const SentinelWatch&) = delete;
  SentinelWatch& operator=(const SentinelWatch&) = delete;

  // The current master; false while none is known. Any thread.
  bool master(std::string* host, uint16_t* port, uint64_t* generation = nullptr) const;
  // `async` (initialised on its own loop) is signalled after every change of address,
  // until unlisten() returned. Any thread.
  void listen(uv_async_t* async);
  void unlisten(uv_async_t* async);
  // Asks the Sentinels again soon (coalesced). Any thread.
  void suspect();

  struct Impl;

 private:
  explicit SentinelWatch(SentinelSet set);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fg::redis
