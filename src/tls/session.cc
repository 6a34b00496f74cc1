// The memory-BIO engine. OpenSSL reads ciphertext from one memory BIO (filled by feed())
// and writes ciphertext to another (drained by take_ciphertext()); with memory BIOs no
// call ever blocks, and "want read" only means "feed me more".
//
// How failures are classed:
//   the peer's close_notify                  kPeerClosed; our close_notify is queued
//   during the handshake: no common version, kHandshakeFailed (the peer could talk TLS but
//   cipher, group or ALPN; certificate       we could not agree); an alert is queued
//   verification; an alert from the peer
//   anything else (not TLS at all, a bad     kProtocolError
//   record, a bad MAC, an unexpected message)
// Each failure is final: state() is kFailed and further input is ignored.
//
// OpenSSL's error queue is per thread: it is cleared before each call (SSL_get_error()
// reads it) and after a failure has been classed, so one connection's error never leaks
// into the next connection served by the same loop.
#include "tls/session.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>

#include <climits>

namespace fg::tls {

std::string_view error_name(Error e) {
  switch (e) {
    case Error::kNone: return "none";
    case Error::kHandshakeFailed: return "handshake_failed";
    case Error::kProtocolError: return "protocol_error";
    case Error::kPeerClosed: return "peer_closed";
  }
  return "unknown";
}

namespace {

// Reasons that mean the two sides speak TLS but could not agree.
bool is_negotiation_failure(unsigned long code) {
  if (ERR_GET_LIB(code) != ERR_LIB_SSL) return false;
  const int reason = ERR_GET_REASON(code);
  if (reason >= SSL_AD_REASON_OFFSET) return true;  // an alert the peer sent
  switch (reason) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_UNSUPPORTED_SSL_VERSION:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_INAPPROPRIATE_FALLBACK:
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_CIPHERS_AVAILABLE:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_GROUPS:
    case SSL_R_NO_SUITABLE_KEY_SHARE:
    case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
    case SSL_R_NO_SUITABLE_DIGEST_ALGORITHM:
    case SSL_R_NO_APPLICATION_PROTOCOL:
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_CALLBACK_FAILED:
      return true;
    default:
      return false;
  }
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

// ---------------------------------------------------------------------------------
// SavedSession

SavedSession::~SavedSession() { SSL_SESSION_free(session_); }

SavedSession::SavedSession(const SavedSession& other) : session_(other.session_) {
  if (session_ != nullptr) SSL_SESSION_up_ref(session_);
}

SavedSession& SavedSession::operator=(const SavedSession& other) {
  if (this != &other) {
    if (other.session_ != nullptr) SSL_SESSION_up_ref(other.session_);
    SSL_SESSION_free(session_);
    session_ = other.session_;
  }
  return *this;
}

// ---------------------------------------------------------------------------------
// Session

std::unique_ptr<Session> Session::server(std::shared_ptr<const ServerContext> context) {
  std::unique_ptr<Session> s(new Session());
  if (!s->init(context->ssl_ctx(0), true)) return nullptr;
  s->server_ctx_ = std::move(context);
  return s;
}

std::unique_ptr<Session> Session::client(std::shared_ptr<const ClientContext> context, std::string_view host,
                                         const SavedSession* resume) {
  std::unique_ptr<Session> s(new Session());
  if (!s->init(context->ssl_ctx(), false)) return nullptr;
  const std::string name(host);
  const bool ip = is_ip_literal(name);
  // RFC 6066 forbids IP literals in SNI.
  if (!ip && !name.empty() && SSL_set_tlsext_host_name(s->ssl_, name.c_str()) != 1) return nullptr;
  if (context->verify() && !name.empty()) {
    const int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl_), name.c_str())
                      : SSL_set1_host(s->ssl_, name.c_str());
    if (ok != 1) return nullptr;
  }
  if (resume != nullptr && !resume->empty()) SSL_set_session(s->ssl_, resume->session_);
  s->client_ctx_ = std::move(context);
  s->advance_handshake();  // puts the ClientHello into the output
  ERR_clear_error();
  return s;
}

bool Session::init(ssl_ctx_st* ctx, bool server) {
  ERR_clear_error();
  ssl_ = SSL_new(ctx);
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  if (ssl_ == nullptr || rbio_ == nullptr || wbio_ == nullptr) {
    BIO_free(rbio_);
    BIO_free(wbio_);
    rbio_ = wbio_ = nullptr;
    ERR_clear_error();
    return false;
  }
  // An empty memory BIO reports "retry" rather than end of file: more may arrive.
  BIO_set_mem_eof_return(rbio_, -1);
  BIO_set_mem_eof_return(wbio_, -1);
  SSL_set_bio(ssl_, rbio_, wbio_);
  if (server) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
  }
  return true;
}

Session::~Session() {
  // OpenSSL marks a session unresumable when its connection is freed without close_notify,
  // an SSLv3 rule that TLS 1.1 dropped (RFC 4346, 7.2.1). Upstreams routinely end idle
  // keep-alive connections with a bare FIN, so a client would then never resume; only a
  // failed connection keeps that penalty.
  if (ssl_ != nullptr && state_ != State::kFailed) SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(ssl_);  // frees both BIOs
  ERR_clear_error();
}

void Session::fail(Error e, int ssl_error) {
  const unsigned long code = ERR_peek_error();
  if (e == Error::kNone) {
    e = (!handshake_completed_ && is_negotiation_failure(code)) ? Error::kHandshakeFailed : Error::kProtocolError;
  }
  if (code != 0) {
    const char* reason = ERR_reason_error_string(code);
    error_detail_ = reason != nullptr ? reason : "OpenSSL error " + std::to_string(code);
  } else if (ssl_error == SSL_ERROR_SYSCALL) {
    error_detail_ = "unexpected end of input";
  }
  ERR_clear_error();
  error_ = e;
  state_ = State::kFailed;
  early_writes_.clear();
  early_writes_.shrink_to_fit();
}

void Session::advance_handshake() {
  ERR_clear_error();
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    handshake_completed_ = true;
    state_ = State::kOpen;
    flush_early_writes();
    return;
  }
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
  fail(e == SSL_ERROR_ZERO_RETURN ? Error::kPeerClosed : Error::kNone, e);
}

void Session::flush_early_writes() {
  if (early_writes_.empty()) return;
  std::string pending;
  pending.swap(early_writes_);
  write_plain(pending.data(), pending.size());
}

Error Session::feed(const char* data, size_t len) {
  if (state_ == State::kFailed || state_ == State::kClosed) return error_;
  while (len > 0) {
    const int chunk = len > INT_MAX ? INT_MAX : static_cast<int>(len);
    // A memory BIO grows as needed; it only fails when memory runs out.
    if (BIO_write(rbio_, data, chunk) != chunk) {
      fail(Error::kProtocolError, SSL_ERROR_SSL);
      error_detail_ = "out of memory";
      return error_;
    }
    data += chunk;
    len -= static_cast<size_t>(chunk);
  }
  if (!handshake_completed_) advance_handshake();
  return error_;
}

size_t Session::read_plain(char* out, size_t cap) {
  if (state_ != State::kOpen || cap == 0) return 0;
  ERR_clear_error();
  size_t n = 0;
  const int r = SSL_read_ex(ssl_, out, cap, &n);
  if (r == 1) return n;
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
  if (e == SSL_ERROR_ZERO_RETURN) {
    // The peer's close_notify: answer with ours so the caller can end the connection
    // cleanly after sending what is pending.
    error_ = Error::kPeerClosed;
    state_ = State::kClosed;
    SSL_shutdown(ssl_);
    ERR_clear_error();
    return 0;
  }
  fail(Error::kNone, e);
  return 0;
}

bool Session::write_plain(const char* data, size_t len) {
  if (state_ == State::kFailed || state_ == State::kClosed) return false;
  if (!handshake_completed_) {
    early_writes_.append(data, len);
    return true;
  }
  if (len == 0) return true;
  ERR_clear_error();
  size_t written = 0;
  // Without SSL_MODE_ENABLE_PARTIAL_WRITE and with a memory BIO that never refuses, a
  // write either encrypts everything or fails.
  const int r = SSL_write_ex(ssl_, data, len, &written);
  if (r == 1) return true;
  fail(Error::kNone, SSL_get_error(ssl_, r));
  return false;
}

size_t Session::pending_ciphertext() const { return BIO_ctrl_pending(wbio_); }

size_t Session::take_ciphertext(char* out, size_t cap) {
  size_t n = 0;
  if (cap == 0 || BIO_read_ex(wbio_, out, cap, &n) != 1) return 0;
  return n;
}

void Session::take_ciphertext(std::string& out) {
  const size_t pending = BIO_ctrl_pending(wbio_);
  if (pending == 0) return;
  const size_t old = out.size();
  out.resize(old + pending);
  const size_t n = take_ciphertext(out.data() + old, pending);
  out.resize(old + n);
}

void Session::close() {
  if (state_ == State::kFailed || state_ == State::kClosed) return;
  state_ = State::kClosed;
  early_writes_.clear();
  // Mid-handshake there is no close_notify to send; OpenSSL would only complain.
  if (handshake_completed_) SSL_shutdown(ssl_);
  ERR_clear_error();
}

bool Session::resumed() const { return SSL_session_reused(ssl_) == 1; }

std::string_view Session::alpn() const {
  const unsigned char* p = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl_, &p, &len);
  return p == nullptr ? std::string_view() : std::string_view(reinterpret_cast<const char*>(p), len);
}

std::string_view Session::server_name() const {
  const char* name = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
  return name == nullptr ? std::string_view() : std::string_view(name);
}

std::string_view Session::version() const { return SSL_get_version(ssl_); }

std::string_view Session::cipher() const {
  const char* name = SSL_get_cipher_name(ssl_);
  return name == nullptr ? std::string_view() : std::string_view(name);
}

SavedSession Session::saved_session() const {
  SSL_SESSION* s = SSL_get1_session(ssl_);
  if (s == nullptr) return SavedSession();
  if (SSL_SESSION_is_resumable(s) != 1) {
    SSL_SESSION_free(s);
    return SavedSession();
  }
  return SavedSession(s);
}

}  // namespace fg::tls
