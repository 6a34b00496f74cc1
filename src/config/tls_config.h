// TLS settings: a listener's `tls = { cert, key }` (or several certificates chosen by
// SNI) and an upstream's `tls = true` with its trust settings; validation in
// tls_config.cc. The files themselves are loaded and checked by net/tls_contexts.cc
// (the config layer links toml++ only); `where` lets that step report its findings
// as "FILE:LINE:COL: key.path: message" like every other config error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/reader_fwd.h"

namespace fg {

struct TlsCertificateConfig {
  std::string cert;                // PEM: the leaf, then its intermediates
  std::string key;                 // PEM private key, unencrypted
  std::vector<std::string> names;  // SNI names; empty: the certificate's DNS SANs (or CN)
  std::string where;               // "FILE:LINE:COL: server.tls" for errors about the files
};

struct ListenTlsConfig {
  bool enabled = false;
  std::vector<TlsCertificateConfig> certificates;  // the first is the default
  std::string ciphers;                             // TLS 1.2 list; empty: the built-in modern one
  std::string ciphers_where;
  uint64_t ticket_key_rotation_ms = 3600 * 1000;   // tickets resume for at most twice this
};

struct UpstreamTlsConfig {
  bool enabled = false;
  std::string ca_file;      // empty: the system store
  bool verify = true;
  std::string server_name;  // SNI and the name checked; empty: the server's host
  std::string where;        // "FILE:LINE:COL: upstreams.X.tls_ca"
};

namespace config {
// `tls = { cert, key, names }` or `tls = { certificates = [{ cert, key, names }, ...],
// ciphers, ticket_key_rotation }`, the table at `table.path()`. Relative file names are
// taken from the directory of the config file.
void read_listen_tls(Reader& reader, const Table& table, ListenTlsConfig* out);
// The `tls`, `tls_ca`, `tls_verify` and `tls_server_name` keys of an upstream's table.
void read_upstream_tls(Reader& reader, const Table& upstream, UpstreamTlsConfig* out);
}  // namespace config

}  // namespace fg
