// Config::match_route: picks the route for a request. Runs once per request on
// the worker loops, so it only compares bytes and never allocates.
#include <algorithm>

#include "floodgate/config.h"

namespace fg {
namespace {

// A prefix matches on path-segment boundaries: "/api/products" takes
// "/api/products" and "/api/products/7" but not "/api/productsX", which
// would otherwise let a neighbouring path borrow another route's limits.
// A prefix ending in '/' already marks the boundary itself.
bool prefix_matches(std::string_view prefix, std::string_view path) {
  if (path.size() < prefix.size() || path.compare(0, prefix.size(), prefix) != 0) return false;
  if (prefix.empty() || prefix.back() == '/' || path.size() == prefix.size()) return true;
  return path[prefix.size()] == '/';
}

}  // namespace

int Config::match_route(std::string_view method, std::string_view path) const {
  for (size_t i = 0; i < routes.size(); ++i) {
    const RouteMatch& m = routes[i].match;
    if (!m.methods.empty() && std::find(m.methods.begin(), m.methods.end(), method) == m.methods.end()) {
      continue;
    }
    const bool hit = m.is_prefix ? prefix_matches(m.path, path) : path == m.path;
    if (hit) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace fg
