// TLS contexts: what a listener (server side) or an upstream (client side) shares between
// its connections — certificates, SNI names, ciphers, ALPN, session-ticket keys, trust.
// Built and checked off the loops (startup, config reload, --check); immutable afterwards
// except for the ticket key ring, which any thread may rotate.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "floodgate/status.h"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX; the header stays free of OpenSSL includes.

namespace fg::tls {

// One certificate of a server: a PEM file holding the leaf first and then any
// intermediates (the chain sent to clients, in that order), and its PEM private key.
// `names` are the SNI names it answers; empty means "read them from the certificate"
// (its DNS subjectAltNames, else its subject CN). A name may be a wildcard "*.shop.example",
// matching exactly one extra label, as browsers do.
struct CertificateSpec {
  std::string cert_file;
  std::string key_file;
  std::vector<std::string> names;
};

// Session-ticket keys: a ring of the current key (encrypts new tickets) and the previous
// one (still decrypts, and such a resumption is given a fresh ticket). Two rotations
// retire a key, so a ticket lives at most two rotation periods. One ring is meant to
// outlive certificate reloads: pass the old context's ring to the new one so that tickets
// keep resuming across a reload. Thread-safe: handshakes on any worker read it while
// another thread rotates.
class TicketKeyRing {
 public:
  struct Key {
    std::array<unsigned char, 16> name;  // sent in the ticket, selects the key
    std::array<unsigned char, 32> aes;   // AES-256-CBC
    std::array<unsigned char, 32> hmac;  // HMAC-SHA256
  };
  struct Keys {
    Key current;
    Key previous;
    bool has_previous = false;
  };

  // Starts with one fresh random key. Aborts if the system RNG fails (nothing can work).
  TicketKeyRing();

  // current becomes previous, a fresh random key becomes current. The caller drives it on a
  // timer (a few hours is usual). Any thread.
  void rotate();

  // The keys as they are now; a handshake holds this snapshot while it uses it.
  std::shared_ptr<const Keys> snapshot() const { return keys_.load(std::memory_order_acquire); }

 private:
  std::atomic<std::shared_ptr<const Keys>> keys_;
};

struct ServerOptions {
  // At least one. The first is the default, used when the client sends no SNI or a name no
  // certificate has.
  std::vector<CertificateSpec> certificates;
  // TLS 1.2 cipher list (OpenSSL syntax); empty means kDefaultCiphers12. TLS 1.3 keeps
  // OpenSSL's default suites (all AEAD).
  std::string ciphers;
  // Lifetime of a ticket as stated to clients, in seconds.
  uint32_t ticket_lifetime_s = 2 * 3600;
  // The ring to use; null means a new one. See TicketKeyRing about reloads.
  std::shared_ptr<TicketKeyRing> ticket_keys;
};

// ECDHE only (forward secrecy), AEAD only; ECDSA before RSA so that a shop with both kinds
// of certificate gets the cheaper handshake.
inline constexpr const char* kDefaultCiphers12 =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// The only protocol offered and accepted by ALPN.
inline constexpr std::string_view kAlpnHttp11 = "http/1.1";

// A server-side context. Immutable once created, so one instance serves every worker's
// connections at once; sessions hold a shared_ptr to it, so replacing it (a certificate
// reload) leaves the sessions of the old one untouched until they end, and the old one is
// freed with the last of them.
class ServerContext {
 public:
  // Loads and checks every certificate. Errors name the file: unreadable, not PEM, key not
  // matching its certificate, a cipher list OpenSSL rejects, no certificate at all.
  // Non-fatal findings (an expired or not yet valid certificate, an intermediate that did
  // not issue the certificate before it) are in warnings().
  static Result<std::shared_ptr<ServerContext>> create(const ServerOptions& options);

  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  const std::vector<std::string>& warnings() const { return warnings_; }

  // Rotates the ticket keys (see TicketKeyRing::rotate). Any thread.
  void rotate_ticket_keys() const { ticket_keys_->rotate(); }
  const std::shared_ptr<TicketKeyRing>& ticket_keys() const { return ticket_keys_; }

  // The names each certificate answers, in the order of options.certificates.
  const std::vector<std::vector<std::string>>& names() const { return names_; }

  // Index of the certificate that answers `host` (exact name first, then a wildcard);
  // 0 (the default) when none does. `host` may be in any case.
  size_t select(std::string_view host) const;

  // For Session: the OpenSSL context of certificate `i` (the first is the one sessions
  // start on).
  ssl_ctx_st* ssl_ctx(size_t i = 0) const { return ctxs_[i]; }

 private:
  ServerContext() = default;

  std::vector<ssl_ctx_st*> ctxs_;
  std::vector<std::vector<std::string>> names_;
  std::unordered_map<std::string, size_t> exact_;
  std::unordered_map<std::string, size_t> wildcard_;  // "shop.example" for "*.shop.example"
  std::vector<std::string> warnings_;
  std::shared_ptr<TicketKeyRing> ticket_keys_;
};

struct ClientOptions {
  // PEM file of trusted CAs; empty means the system store (/etc/ssl/certs).
  std::string ca_file;
  // Off only for tests or a deliberate "trust anything" upstream: no chain or name check.
  bool verify = true;
  // Offer ALPN http/1.1 (some servers require ALPN).
  bool offer_alpn = true;
};

// A client-side context for TLS to upstreams. Immutable once created; shared like
// ServerContext.
class ClientContext {
 public:
  // Errors name the CA file when it cannot be read or holds no certificate.
  static Result<std::shared_ptr<ClientContext>> create(const ClientOptions& options);

  ~ClientContext();
  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;

  bool verify() const { return verify_; }
  ssl_ctx_st* ssl_ctx() const { return ctx_; }

 private:
  ClientContext() = default;
  ssl_ctx_st* ctx_ = nullptr;
  bool verify_ = true;
};

// For `--check`: loads `cert_file` (leaf and chain) and `key_file` as a ServerContext would
// and reports the first error, naming the file. Warnings (expired, bad chain order) are
// appended to `warnings` when it is not null; they do not make the result an error.
Status check_certificate(const std::string& cert_file, const std::string& key_file,
                         std::vector<std::string>* warnings = nullptr);

}  // namespace fg::tls
