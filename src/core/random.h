// Random bytes from the OS CSPRNG for identifiers that must not be guessed (ticket
// ids, idempotency claim owners, request-id prefixes).
#pragma once

#include <cstddef>

namespace fg::random {

// Fills out[0..n) from a per-thread pool of getrandom(2) bytes, refilled 1 KiB at a
// time rather than one system call per identifier. Each byte is handed out once and
// wiped from the pool.
void bytes(unsigned char* out, size_t n);

}  // namespace fg::random
