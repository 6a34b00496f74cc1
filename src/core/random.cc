#include "core/random.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

namespace fg::random {
namespace {

void refill(unsigned char* pool, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = getrandom(pool + got, n - got, 0);
    if (r > 0) {
      got += static_cast<size_t>(r);
    } else if (r < 0 && errno != EINTR) {
      break;
    }
  }
  if (got == n) return;
  // getrandom failing means the OS is broken; still never hand out predictable zeros.
  std::random_device rd;
  for (size_t i = got; i < n; i++) pool[i] = static_cast<unsigned char>(rd());
}

}  // namespace

void bytes(unsigned char* out, size_t n) {
  static thread_local unsigned char pool[1024];
  static thread_local size_t used = sizeof pool;
  while (n > 0) {
    if (used == sizeof pool) {
      refill(pool, sizeof pool);
      used = 0;
    }
    size_t take = std::min(n, sizeof pool - used);
    std::memcpy(out, pool + used, take);
    std::memset(pool + used, 0, take);
    used += take;
    out += take;
    n -= take;
  }
}

}  // namespace fg::random
