// A route budget kept outside the instance (scope = "cluster"): the gate and the queue
// dispatcher only take from it. The implementation (cluster::ClusterBudget) leases
// tokens from Redis; this interface keeps admission free of Redis and libuv.
#pragma once

#include <cstdint>

namespace fg::admission {

class SharedBudget {
 public:
  virtual ~SharedBudget() = default;
  // Any thread, never blocks: true when one request is admitted.
  virtual bool try_take(uint64_t now_ns) = 0;
  // Requests this instance can still admit at once (what it holds now).
  virtual uint64_t available() const = 0;
  // A refused request's Retry-After: when the instance's share would have a token.
  virtual uint64_t retry_after_ns() const = 0;
};

}  // namespace fg::admission
