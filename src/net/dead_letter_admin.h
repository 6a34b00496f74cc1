// The dead-letter endpoints of the admin listener (SPEC §6, last paragraph): list a
// queued route's dead letters page by page, and queue one or all of them again. Runs on
// the main thread's loop with its own Redis connection (opened when the config has a
// [redis] table, re-opened when its URL changes on reload).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "floodgate/config.h"
#include "queue/dead_letter.h"
#include "redis/redis_client.h"

namespace fg::net {

class DeadLetterAdmin {
 public:
  // `on_redelivered(route, n)`: n tickets of `route` were queued again (for the counter).
  DeadLetterAdmin(uv_loop_t* loop, std::function<void(const std::string& route, int64_t n)> on_redelivered);
  ~DeadLetterAdmin();
  DeadLetterAdmin(const DeadLetterAdmin&) = delete;
  DeadLetterAdmin& operator=(const DeadLetterAdmin&) = delete;

  // Opens, re-opens or closes the Redis connection to follow `cfg.redis`.
  void configure(const Config& cfg);
  // Closes the Redis connection (pending commands fail with 503 answers).
  void close();

  // `done(status, json body)` runs exactly once, on the loop.
  using Answer = std::function<void(int status, std::string body)>;
  // GET /dead-letters?route=NAME[&offset=N][&limit=N] (limit 1..1000, default 100).
  void list(const Config& cfg, std::string_view query, Answer done);
  // POST /dead-letters/redeliver?route=NAME[&ticket=ID]: one ticket, or every dead letter
  // of the route (in batches of 500, at most 100 batches per call).
  void redeliver(const Config& cfg, std::string_view query, Answer done);

 private:
  // The route named by the query if it is queued in `cfg`; otherwise answers 400/404/503.
  const RouteConfig* route_of(const Config& cfg, std::string_view query, const Answer& done);
  void redeliver_batches(std::string route, std::string prefix, int rounds_left, int64_t moved_so_far,
                         Answer done);

  uv_loop_t* loop_;
  std::function<void(const std::string&, int64_t)> on_redelivered_;
  std::unique_ptr<redis::Client> redis_;
  std::string redis_url_;
  redis::SentinelSet sentinels_;
  queue::RetryScripts scripts_;
};

// The value of `name` in a query string ("a=1&b=2") into `out`; false when absent.
bool query_value(std::string_view query, std::string_view name, std::string* out);

}  // namespace fg::net
