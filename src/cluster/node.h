// The cluster side of one instance (one per process, on the main loop): its own Redis
// connection, the membership heartbeat, and the budget of every route with
// scope = "cluster" and the sync of their per-client limits. Workers only call the budgets' try_take() (any thread); everything
// else runs on the owner loop.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "admission/client_limiter.h"
#include "cluster/client_sync.h"
#include "cluster/cluster_budget.h"
#include "cluster/membership.h"
#include "redis/redis_client.h"
#include "redis/redis_config.h"

namespace fg::cluster {

// host:pid:start time in ms: unique per process start, so a restarted process never
// inherits the previous one's heartbeat or lease.
std::string make_instance_id();

class Node {
 public:
  Node(uv_loop_t* loop, const RedisConfig& redis, std::string instance_id);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Owner loop: connects and starts the heartbeat.
  void start();
  // Owner loop: the budget of a cluster-scope route, created (and started) on first
  // use, or given the new rate and burst. A budget lives until close(), also when its
  // route goes away in a reload: a worker may still hold a snapshot that points to it,
  // and an unused budget holds no tokens after its lease expired (0.5 s).
  ClusterBudget* budget(const std::string& route, double rate, double burst);
  // Owner loop: count the per-client limit of a cluster-scope route across instances:
  // `limiter` (the route's, shared with the workers) is synced every 100 ms from now
  // on; a later call with another limiter (a reload resized the table) follows that one,
  // and one with nullptr (a reload made the route's scope "instance" or dropped its
  // client_rate) stops the sync.
  void client_limits(const std::string& route, std::shared_ptr<admission::ClientLimiter> limiter);
  // Owner loop, once every worker stopped taking: destroys the budgets (pointers to
  // them are dangling from here on), leaves the membership and closes the connection;
  // `on_closed` runs when the loop may end.
  void close(std::function<void()> on_closed);

  const Membership& membership() const { return *membership_; }
  const std::string& instance_id() const { return instance_id_; }
  // Owner loop: the cluster metrics (Prometheus text).
  std::string metrics_text() const;

 private:
  uv_loop_t* loop_;
  std::string prefix_;
  std::string instance_id_;
  std::unique_ptr<redis::Client> redis_;
  std::unique_ptr<Membership> membership_;
  std::map<std::string, std::unique_ptr<ClusterBudget>> budgets_;
  std::map<std::string, std::unique_ptr<ClientSync>> client_syncs_;
  bool closed_ = false;
};

}  // namespace fg::cluster
