// The admission stage of the request pipeline: one call per request decides, for the
// route it matched, whether it goes on (admit), waits in the route's queue (park), is
// refused (client limit or route budget) or gets the degrade answer, and which
// RateLimit headers go with the answer. Cheapest and most specific first: shedding
// under pressure (routes with core = false), then the client's own limit (so a
// hammering client cannot drain the route budget), then the route budget shared by
// every worker. Dry-run routes are decided and reported but always go on.
// No libuv and no sockets: the caller passes the time and what it knows.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "admission/budget.h"
#include "admission/client_limiter.h"
#include "admission/shared_budget.h"
#include "floodgate/config.h"

namespace fg::admission {

struct Verdict {
  enum class Kind { kAdmit, kPark, kDegrade, kClientLimited, kRateLimited } kind = Kind::kAdmit;
  uint64_t retry_after_ns = 0;  // kClientLimited, kRateLimited
  bool rated = false;           // the route budget was asked: `budget` is its answer
  Decision budget;              // for the RateLimit headers (Gate::append_headers)
  // Dry-run routes: what would have happened (the caller counts each).
  bool would_shed = false;
  bool would_client_limit = false;
  bool would_degrade = false;
  bool would_reject = false;
};

struct Request {
  uint64_t now_ns = 0;               // monotonic
  bool under_pressure = false;       // a [pressure] condition holds on this worker
  std::string_view client_key;       // used when the route has a client limit
  bool queue_waiting = false;        // tickets wait in the route's queue (FIFO: queue behind them)
};

class Gate {
 public:
  // Any of budget / clients may be null (the route has no rate / no client_rate).
  // `policy_header` is the route's precomputed "RateLimit-Policy: ...\r\n" line.
  // `shared`, when not null, is the route's cluster budget: it judges instead of
  // `budget` (scope = "cluster").
  Gate(const RouteConfig& route, Budget* budget, ClientLimiter* clients, std::string_view policy_header,
       SharedBudget* shared = nullptr)
      : route_(route), budget_(budget), clients_(clients), policy_header_(policy_header), shared_(shared) {}

  Verdict decide(const Request& r) const;

  // draft-ietf-httpapi-ratelimit-headers: appends the RateLimit-Policy and RateLimit
  // lines of a verdict for which the route budget was asked (nothing otherwise), so a
  // refusal can build its extra headers in a reused buffer.
  void append_headers(const Verdict& v, std::string& out) const;
  std::string headers(const Verdict& v) const {
    std::string out;
    append_headers(v, out);
    return out;
  }

 private:
  const RouteConfig& route_;
  Budget* budget_;
  ClientLimiter* clients_;
  std::string_view policy_header_;
  SharedBudget* shared_;

  Decision take(uint64_t now_ns) const;
};

}  // namespace fg::admission
