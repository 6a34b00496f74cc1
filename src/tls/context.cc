// Server and client contexts: certificate loading with errors that name the file, SNI
// selection, ALPN, the ticket key ring and its OpenSSL callback.
//
// What happens on failure (all at load time; nothing here fails on a connection):
//   cert or key file missing/unreadable     error "cannot read certificate file 'F': why"
//   file without a PEM certificate / key    error naming the file
//   key not matching its certificate        error naming both files
//   certificate expired / not yet valid     warning (the operator may be mid-renewal; a
//                                           refusal to start would take the whole shop down)
//   intermediate that did not issue the     warning: clients will likely fail to verify
//   certificate before it in the chain file
//   cipher list OpenSSL rejects             error quoting the list
//   system RNG failure (ticket keys)        abort: no key material can be trusted
#include "tls/context.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <utility>

namespace fg::tls {

namespace {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct CtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;
using CtxPtr = std::unique_ptr<SSL_CTX, CtxFree>;

// The reason of the oldest queued OpenSSL error, and an empty queue afterwards (the queue
// is per thread; a stale entry would be blamed on the next caller).
std::string take_openssl_reason() {
  const unsigned long code = ERR_peek_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  const char* reason = ERR_reason_error_string(code);
  return reason != nullptr ? reason : "OpenSSL error " + std::to_string(code);
}

// Reads a whole file, so that "missing" and "unreadable" get errno's words rather than a
// PEM parser's guess.
Status read_file(const std::string& path, const char* what, std::string* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return Status::error(std::string("cannot read ") + what + " '" + path + "': " + std::strerror(errno));
  }
  char buf[16384];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, n);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) return Status::error(std::string("cannot read ") + what + " '" + path + "': " + std::strerror(err));
  return Status::ok();
}

std::string format_time(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "an unreadable date";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// A certificate file's leaf and chain, and its key, checked against each other.
struct Loaded {
  X509Ptr leaf;
  std::vector<X509Ptr> chain;
  PkeyPtr key;
};

Status load_pair(const std::string& cert_file, const std::string& key_file, Loaded* out,
                 std::vector<std::string>* warnings) {
  std::string pem;
  if (Status s = read_file(cert_file, "certificate file", &pem); !s) return s;
  ERR_clear_error();
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return Status::error("out of memory reading '" + cert_file + "'");
  out->leaf.reset(PEM_read_bio_X509_AUX(bio.get(), nullptr, nullptr, nullptr));
  if (!out->leaf) {
    return Status::error("certificate file '" + cert_file + "' holds no PEM certificate (" +
                         take_openssl_reason() + ")");
  }
  // Everything after the leaf is the chain, in the order it is sent.
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out->chain.emplace_back(x);
  const unsigned long tail = ERR_peek_last_error();
  if (tail != 0 && !(ERR_GET_LIB(tail) == ERR_LIB_PEM && ERR_GET_REASON(tail) == PEM_R_NO_START_LINE)) {
    return Status::error("certificate file '" + cert_file + "': certificate " +
                         std::to_string(out->chain.size() + 2) + " in the chain is malformed (" +
                         take_openssl_reason() + ")");
  }
  ERR_clear_error();

  std::string key_pem;
  if (Status s = read_file(key_file, "key file", &key_pem); !s) return s;
  BioPtr kbio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  if (!kbio) return Status::error("out of memory reading '" + key_file + "'");
  // A null password callback would prompt on the terminal; an encrypted key must fail.
  out->key.reset(PEM_read_bio_PrivateKey(kbio.get(), nullptr,
                                         [](char*, int, int, void*) { return 0; }, nullptr));
  if (!out->key) {
    return Status::error("key file '" + key_file + "' holds no unencrypted PEM private key (" +
                         take_openssl_reason() + ")");
  }
  if (X509_check_private_key(out->leaf.get(), out->key.get()) != 1) {
    ERR_clear_error();
    return Status::error("key file '" + key_file + "' does not match the certificate in '" + cert_file + "'");
  }

  if (warnings != nullptr) {
    if (X509_cmp_current_time(X509_get0_notAfter(out->leaf.get())) < 0) {
      warnings->push_back("certificate '" + cert_file + "' expired on " +
                          format_time(X509_get0_notAfter(out->leaf.get())));
    }
    if (X509_cmp_current_time(X509_get0_notBefore(out->leaf.get())) > 0) {
      warnings->push_back("certificate '" + cert_file + "' is not valid before " +
                          format_time(X509_get0_notBefore(out->leaf.get())));
    }
    X509* child = out->leaf.get();
    for (size_t i = 0; i < out->chain.size(); ++i) {
      if (X509_check_issued(out->chain[i].get(), child) != X509_V_OK) {
        warnings->push_back("certificate file '" + cert_file + "': certificate " + std::to_string(i + 2) +
                            " did not issue the one before it; clients expect the leaf first, then "
                            "each issuer in order");
        break;
      }
      child = out->chain[i].get();
    }
  }
  return Status::ok();
}

// The DNS subjectAltNames, or the subject CN when there are none (as RFC 6125 allows only
// in that case).
std::vector<std::string> names_of(X509* cert) {
  std::vector<std::string> names;
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
      if (gn->type != GEN_DNS) continue;
      const ASN1_IA5STRING* s = gn->d.dNSName;
      names.push_back(lower(std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                             static_cast<size_t>(ASN1_STRING_length(s)))));
    }
    GENERAL_NAMES_free(sans);
  }
  if (names.empty()) {
    X509_NAME* subject = X509_get_subject_name(cert);
    const int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (idx >= 0) {
      const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
      names.push_back(lower(std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                             static_cast<size_t>(ASN1_STRING_length(s)))));
    }
  }
  return names;
}

const ServerContext* context_of(SSL* ssl) {
  return static_cast<const ServerContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
}

// SNI: switch the connection to the context of the certificate that answers the name. An
// unknown name gets the default certificate rather than a refusal, as nginx does; the
// client's own name check decides.
int on_servername(SSL* ssl, int*, void*) {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) return SSL_TLSEXT_ERR_OK;
  const ServerContext* self = context_of(ssl);
  const size_t i = self->select(name);
  if (i != 0 && SSL_set_SSL_CTX(ssl, self->ssl_ctx(i)) == nullptr) return SSL_TLSEXT_ERR_ALERT_FATAL;
  return SSL_TLSEXT_ERR_OK;
}

// ALPN: http/1.1 or nothing. A client that offers ALPN without http/1.1 (h2 only) gets the
// no_application_protocol alert RFC 7301 asks for, instead of a connection it cannot use.
// A client offering no ALPN at all is not asked (HTTP/1.1 is implied).
int on_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
            unsigned int inlen, void*) {
  unsigned int i = 0;
  while (i < inlen) {
    const unsigned int len = in[i];
    if (len == 0 || i + 1 + len > inlen) break;
    if (std::string_view(reinterpret_cast<const char*>(in + i + 1), len) == kAlpnHttp11) {
      *out = in + i + 1;
      *outlen = static_cast<unsigned char>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

bool init_ticket_crypto(const TicketKeyRing::Key& k, const unsigned char* iv, EVP_CIPHER_CTX* cctx,
                        EVP_MAC_CTX* hctx, bool encrypt) {
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string("digest", const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_MAC_init(hctx, k.hmac.data(), k.hmac.size(), params) != 1) return false;
  return encrypt ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv) == 1
                 : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv) == 1;
}

// Ticket keys from the ring. Encrypting uses the current key. Decrypting accepts the
// current key (1) and the previous one (2: OpenSSL then issues a ticket under the current
// key, so an active client moves forward with the rotation); any other name is a full
// handshake (0), never an error.
int on_ticket_key(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx,
                  int enc) {
  const std::shared_ptr<const TicketKeyRing::Keys> keys = context_of(ssl)->ticket_keys()->snapshot();
  if (enc == 1) {
    const TicketKeyRing::Key& k = keys->current;
    std::memcpy(name, k.name.data(), k.name.size());
    if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1) return -1;
    return init_ticket_crypto(k, iv, cctx, hctx, true) ? 1 : -1;
  }
  if (std::memcmp(name, keys->current.name.data(), 16) == 0) {
    return init_ticket_crypto(keys->current, iv, cctx, hctx, false) ? 1 : -1;
  }
  if (keys->has_previous && std::memcmp(name, keys->previous.name.data(), 16) == 0) {
    return init_ticket_crypto(keys->previous, iv, cctx, hctx, false) ? 2 : -1;
  }
  return 0;
}

TicketKeyRing::Key random_key() {
  TicketKeyRing::Key k;
  if (RAND_bytes(k.name.data(), static_cast<int>(k.name.size())) != 1 ||
      RAND_bytes(k.aes.data(), static_cast<int>(k.aes.size())) != 1 ||
      RAND_bytes(k.hmac.data(), static_cast<int>(k.hmac.size())) != 1) {
    std::fprintf(stderr, "fatal: the system random generator failed; no TLS ticket key can be made\n");
    std::abort();
  }
  return k;
}

// The settings every server context shares, so that a connection switched by SNI keeps
// the same protocol rules.
Status configure_server(SSL_CTX* ctx, const ServerOptions& options, const ServerContext* self) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  // Renegotiation is an old DoS lever and HTTP/1.1 never needs it (SSL_OP_NO_RENEGOTIATION
  // refuses it in both directions with a no_renegotiation alert); compression is CRIME.
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // SSL_MODE_RELEASE_BUFFERS is left off on purpose: it would free and reallocate the
  // record buffers around every read, an allocation per record on the steady path.
  const std::string ciphers = options.ciphers.empty() ? kDefaultCiphers12 : options.ciphers;
  if (SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1) {
    ERR_clear_error();
    return Status::error("cipher list '" + ciphers + "' selects no cipher OpenSSL supports");
  }
  // Stateless tickets only: no server-side cache, so resumption works across workers and
  // costs no memory per client.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  static const unsigned char kSidCtx[] = "floodgate";
  SSL_CTX_set_session_id_context(ctx, kSidCtx, sizeof kSidCtx - 1);
  SSL_CTX_set_timeout(ctx, options.ticket_lifetime_s);
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
  SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
  SSL_CTX_set_alpn_select_cb(ctx, on_alpn, nullptr);
  SSL_CTX_set_app_data(ctx, const_cast<ServerContext*>(self));
  return Status::ok();
}

}  // namespace

// ---------------------------------------------------------------------------------
// TicketKeyRing

TicketKeyRing::TicketKeyRing() {
  auto k = std::make_shared<Keys>();
  k->current = random_key();
  keys_.store(std::move(k), std::memory_order_release);
}

void TicketKeyRing::rotate() {
  // Readers take a snapshot; a rotation publishes a new one. Two rotations racing would
  // both derive from the same old ring and one would be lost: at worst a key lives one
  // period longer or shorter, which only changes how long a ticket resumes.
  std::shared_ptr<const Keys> old = keys_.load(std::memory_order_acquire);
  auto k = std::make_shared<Keys>();
  k->previous = old->current;
  k->has_previous = true;
  k->current = random_key();
  keys_.store(std::move(k), std::memory_order_release);
}

// ---------------------------------------------------------------------------------
// ServerContext

Result<std::shared_ptr<ServerContext>> ServerContext::create(const ServerOptions& options) {
  if (options.certificates.empty()) return Status::error("TLS needs at least one certificate");
  std::shared_ptr<ServerContext> self(new ServerContext());
  self->ticket_keys_ = options.ticket_keys ? options.ticket_keys : std::make_shared<TicketKeyRing>();

  for (const CertificateSpec& spec : options.certificates) {
    Loaded loaded;
    if (Status s = load_pair(spec.cert_file, spec.key_file, &loaded, &self->warnings_); !s) return s;

    CtxPtr ctx(SSL_CTX_new(TLS_server_method()));
    if (!ctx) return Status::error("cannot create a TLS context: " + take_openssl_reason());
    if (Status s = configure_server(ctx.get(), options, self.get()); !s) return s;
    if (SSL_CTX_use_certificate(ctx.get(), loaded.leaf.get()) != 1 ||
        SSL_CTX_use_PrivateKey(ctx.get(), loaded.key.get()) != 1) {
      return Status::error("certificate '" + spec.cert_file + "' cannot be used: " + take_openssl_reason());
    }
    for (const X509Ptr& x : loaded.chain) {
      if (SSL_CTX_add1_chain_cert(ctx.get(), x.get()) != 1) {
        return Status::error("certificate file '" + spec.cert_file + "': chain rejected: " + take_openssl_reason());
      }
    }

    const size_t index = self->ctxs_.size();
    std::vector<std::string> names;
    if (spec.names.empty()) {
      names = names_of(loaded.leaf.get());
    } else {
      for (const std::string& n : spec.names) names.push_back(lower(n));
    }
    // The first certificate that claims a name keeps it, so the order of the list decides.
    for (const std::string& n : names) {
      if (n.size() > 2 && n[0] == '*' && n[1] == '.') {
        self->wildcard_.emplace(n.substr(2), index);
      } else {
        self->exact_.emplace(n, index);
      }
    }
    self->names_.push_back(std::move(names));
    self->ctxs_.push_back(ctx.release());
  }
  return self;
}

ServerContext::~ServerContext() {
  for (SSL_CTX* c : ctxs_) SSL_CTX_free(c);
}

size_t ServerContext::select(std::string_view host) const {
  if (host.empty()) return 0;
  if (host.back() == '.') host.remove_suffix(1);  // "shop.example." is the same name
  const std::string name = lower(host);
  if (auto it = exact_.find(name); it != exact_.end()) return it->second;
  const size_t dot = name.find('.');
  if (dot != std::string::npos && dot > 0) {
    if (auto it = wildcard_.find(name.substr(dot + 1)); it != wildcard_.end()) return it->second;
  }
  return 0;
}

// ---------------------------------------------------------------------------------
// ClientContext

Result<std::shared_ptr<ClientContext>> ClientContext::create(const ClientOptions& options) {
  std::shared_ptr<ClientContext> self(new ClientContext());
  self->verify_ = options.verify;
  CtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return Status::error("cannot create a TLS context: " + take_openssl_reason());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (options.verify) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    if (!options.ca_file.empty()) {
      std::string pem;
      if (Status s = read_file(options.ca_file, "CA file", &pem); !s) return s;
      if (SSL_CTX_load_verify_locations(ctx.get(), options.ca_file.c_str(), nullptr) != 1) {
        return Status::error("CA file '" + options.ca_file + "' holds no usable PEM certificate (" +
                             take_openssl_reason() + ")");
      }
    } else if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1) {
      return Status::error("cannot load the system CA store: " + take_openssl_reason());
    }
  }
  if (options.offer_alpn) {
    static const unsigned char kProtos[] = "\x08http/1.1";
    // Unlike most of OpenSSL, this one returns 0 on success.
    if (SSL_CTX_set_alpn_protos(ctx.get(), kProtos, sizeof kProtos - 1) != 0) {
      return Status::error("cannot set ALPN: " + take_openssl_reason());
    }
  }
  self->ctx_ = ctx.release();
  return self;
}

ClientContext::~ClientContext() { SSL_CTX_free(ctx_); }

// ---------------------------------------------------------------------------------

Status check_certificate(const std::string& cert_file, const std::string& key_file,
                         std::vector<std::string>* warnings) {
  Loaded loaded;
  return load_pair(cert_file, key_file, &loaded, warnings);
}

}  // namespace fg::tls
