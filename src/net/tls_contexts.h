// The TLS contexts of one config: a ServerContext per TLS listener and a ClientContext
// per TLS upstream, built on the main thread (start, every reload, --check) and carried
// in the snapshot. A connection takes its listener's context at accept time and keeps
// it, so a reload that swaps certificates leaves open connections on the old ones.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "floodgate/config.h"
#include "floodgate/status.h"
#include "tls/context.h"

namespace fg::net {

struct TlsContexts {
  std::vector<std::shared_ptr<const tls::ServerContext>> listeners;  // per server.listen; null: plain
  std::vector<std::shared_ptr<const tls::ClientContext>> upstreams;  // per upstream; null: plain
  std::vector<std::string> warnings;  // "FILE:LINE:COL: server.tls: certificate ... expired ..."
  uint64_t rotation_ms = 0;           // shortest ticket_key_rotation; 0 without TLS listeners
};

// Reads and checks every certificate, key and CA file of `config`. Errors are
// "FILE:LINE:COL: key.path: message", one per line, every problem at once. Every server
// context shares `ticket_keys`, so tickets resume across listeners, workers and reloads.
Result<TlsContexts> build_tls_contexts(const Config& config, const std::shared_ptr<tls::TicketKeyRing>& ticket_keys);

}  // namespace fg::net
