// Building the TLS contexts of a config (see tls_contexts.h).
#include "net/tls_contexts.h"

#include <algorithm>

namespace fg::net {

Result<TlsContexts> build_tls_contexts(const Config& config, const std::shared_ptr<tls::TicketKeyRing>& ticket_keys) {
  TlsContexts out;
  std::vector<std::string> errors;
  const auto& listen_tls = config.server.listen_tls;
  out.listeners.resize(config.server.listen.size());
  for (size_t i = 0; i < listen_tls.size() && i < out.listeners.size(); i++) {
    const ListenTlsConfig& lt = listen_tls[i];
    if (!lt.enabled) continue;
    // Each certificate on its own first, so an error points at the entry that has it.
    bool files_ok = true;
    tls::ServerOptions o;
    for (const TlsCertificateConfig& c : lt.certificates) {
      std::vector<std::string> warnings;
      Status s = tls::check_certificate(c.cert, c.key, &warnings);
      for (const auto& w : warnings) out.warnings.push_back(c.where + ": " + w);
      if (!s) {
        errors.push_back(c.where + ": " + s.message());
        files_ok = false;
      }
      o.certificates.push_back({c.cert, c.key, c.names});
    }
    if (!files_ok || o.certificates.empty()) continue;
    o.ciphers = lt.ciphers;
    o.ticket_keys = ticket_keys;
    o.ticket_lifetime_s = static_cast<uint32_t>(lt.ticket_key_rotation_ms * 2 / 1000);
    auto ctx = tls::ServerContext::create(o);
    if (!ctx) {
      const std::string& where = lt.ciphers_where.empty() ? lt.certificates.front().where : lt.ciphers_where;
      errors.push_back(where + ": " + ctx.message());
      continue;
    }
    out.listeners[i] = std::move(ctx.value());
    out.rotation_ms = out.rotation_ms == 0 ? lt.ticket_key_rotation_ms : std::min(out.rotation_ms, lt.ticket_key_rotation_ms);
  }
  out.upstreams.resize(config.upstreams.size());
  for (size_t i = 0; i < config.upstreams.size(); i++) {
    const UpstreamTlsConfig& ut = config.upstreams[i].tls;
    if (!ut.enabled) continue;
    auto ctx = tls::ClientContext::create({ut.ca_file, ut.verify, true});
    if (!ctx) {
      errors.push_back(ut.where + ": " + ctx.message());
      continue;
    }
    out.upstreams[i] = std::move(ctx.value());
  }
  if (!errors.empty()) {
    std::string all;
    for (const auto& e : errors) all += (all.empty() ? "" : "\n") + e;
    return Status::error(std::move(all));
  }
  return out;
}

}  // namespace fg::net
