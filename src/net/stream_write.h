// Writing to a libuv stream without copying in the common case: uv_try_write first,
// and only what the socket did not take is copied into an owned request and queued.
// libuv refuses uv_try_write while writes are queued, so order is always kept.
#pragma once

#include <uv.h>

#include <cstring>
#include <string>

namespace fg::net {

struct OwnedWrite {
  uv_write_t req;
  std::string data;
};

// Writes `bufs` to `stream`. Returns 0 or a libuv error. `cb` runs for the queued part
// only (when nothing had to be queued it does not run); it must delete the OwnedWrite
// (req.data points to it). Callbacks may run with UV_ECANCELED when the handle closes,
// always before its close callback.
inline int write_bufs(uv_stream_t* stream, uv_buf_t* bufs, unsigned n, uv_write_cb cb) {
  size_t total = 0;
  for (unsigned i = 0; i < n; i++) total += bufs[i].len;
  if (total == 0) return 0;
  int r = uv_try_write(stream, bufs, n);
  size_t written = 0;
  if (r >= 0) {
    written = static_cast<size_t>(r);
    if (written == total) return 0;
  } else if (r != UV_EAGAIN && r != UV_ENOSYS) {
    return r;
  }
  auto* w = new OwnedWrite;
  w->data.reserve(total - written);
  size_t skip = written;
  for (unsigned i = 0; i < n; i++) {
    if (skip >= bufs[i].len) {
      skip -= bufs[i].len;
      continue;
    }
    w->data.append(bufs[i].base + skip, bufs[i].len - skip);
    skip = 0;
  }
  w->req.data = w;
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  r = uv_write(&w->req, stream, &b, 1, cb);
  if (r < 0) {
    delete w;
    return r;
  }
  return 0;
}

inline uv_buf_t buf_of(const char* p, size_t n) {
  return uv_buf_init(const_cast<char*>(p), static_cast<unsigned>(n));
}

}  // namespace fg::net
