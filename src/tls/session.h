// One TLS connection driven through memory: ciphertext in from the socket (feed), plaintext
// out (read_plain), plaintext in (write_plain), ciphertext out for the socket
// (take_ciphertext). No sockets, no loop, no blocking, no exceptions, so the same engine
// serves a libuv connection and an in-memory test.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "tls/context.h"

struct ssl_st;          // OpenSSL's SSL
struct bio_st;          // OpenSSL's BIO
struct ssl_session_st;  // OpenSSL's SSL_SESSION

namespace fg::tls {

// Why a session stopped. Anything but kNone is final.
enum class Error : uint8_t {
  kNone,
  kHandshakeFailed,  // no common version/cipher/ALPN, a refused or unverifiable
                     // certificate, or the peer's alert during the handshake
  kProtocolError,    // bytes that are not TLS (garbage, plain HTTP to a TLS port), a bad
                     // record or MAC, an unexpected message
  kPeerClosed,       // the peer sent close_notify: a clean end
};

std::string_view error_name(Error e);

enum class State : uint8_t {
  kHandshaking,
  kOpen,    // application data flows both ways
  kClosed,  // close_notify sent or received; nothing more is read or written
  kFailed,  // see error()
};

// A client's resumable session (a ticket), to offer on the next connection to the same
// upstream. Copyable; empty when there is nothing to resume.
class SavedSession {
 public:
  SavedSession() = default;
  ~SavedSession();
  SavedSession(const SavedSession& other);
  SavedSession& operator=(const SavedSession& other);
  bool empty() const { return session_ == nullptr; }

 private:
  friend class Session;
  explicit SavedSession(ssl_session_st* adopted) : session_(adopted) {}
  ssl_session_st* session_ = nullptr;
};

// Owned and used by one thread (the connection's loop). Keeps its context alive: a session
// of a replaced ServerContext runs on the old certificates until it is destroyed.
class Session {
 public:
  // A server side session. Returns null only if OpenSSL cannot allocate.
  static std::unique_ptr<Session> server(std::shared_ptr<const ServerContext> context);

  // A client side session to `host`: sent as SNI (unless it is an IP address) and, when
  // the context verifies, checked against the certificate. `resume` may offer a session
  // from an earlier connection. An empty `host` sends no SNI and skips the name check (the
  // chain is still verified). The ClientHello is ready in take_ciphertext() at once.
  static std::unique_ptr<Session> client(std::shared_ptr<const ClientContext> context,
                                         std::string_view host, const SavedSession* resume = nullptr);

  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Ciphertext from the socket. Advances the handshake; once it is done, the application
  // data is decrypted by read_plain(). Returns the session's error (kNone while healthy).
  // After a failure the pending ciphertext may hold an alert worth sending before the
  // socket is closed.
  Error feed(const char* data, size_t len);

  // Decrypts into `out` (the caller's buffer, e.g. the HTTP parser's read buffer; no copy
  // in between). Returns the number of bytes written; 0 means nothing more until the next
  // feed(), or the session ended: check state()/error(). Call it until it returns 0 after
  // every feed(). When the peer's close_notify arrives our own is queued in reply.
  size_t read_plain(char* out, size_t cap);

  // Encrypts application data. Before the handshake is done the data is held and sent as
  // soon as it completes (a client can write its request at once). Returns false when the
  // session is closed or failed (nothing is queued).
  bool write_plain(const char* data, size_t len);
  bool write_plain(std::string_view data) { return write_plain(data.data(), data.size()); }

  // Ciphertext waiting for the socket: after feed(), read_plain(), write_plain() and
  // close() the caller moves it to the socket.
  size_t pending_ciphertext() const;
  // Moves up to `cap` bytes into `out`; returns how many.
  size_t take_ciphertext(char* out, size_t cap);
  // Appends everything pending to `out`.
  void take_ciphertext(std::string& out);

  // Queues close_notify (idempotent). The caller sends the pending ciphertext and may close
  // the socket without waiting for the peer's reply.
  void close();

  State state() const { return state_; }
  Error error() const { return error_; }
  bool handshake_done() const { return handshake_completed_; }
  // OpenSSL's reason for the failure, for logs ("wrong version number"); empty if none.
  const std::string& error_detail() const { return error_detail_; }

  // Facts about the negotiated connection, valid once the handshake is done.
  bool resumed() const;
  std::string_view alpn() const;         // "http/1.1", or empty if none was negotiated
  std::string_view server_name() const;  // SNI the client sent; empty if none
  std::string_view version() const;      // "TLSv1.3"
  std::string_view cipher() const;
  // The client's ticket after the handshake (TLS 1.3 sends it just after: call this once
  // some data has been read). Empty when the server gave none.
  SavedSession saved_session() const;

  // The OpenSSL connection, for diagnostics and tests; the session stays its only owner.
  ssl_st* ssl() const { return ssl_; }

 private:
  Session() = default;
  bool init(ssl_ctx_st* ctx, bool server);
  void advance_handshake();
  void fail(Error e, int ssl_error);
  void flush_early_writes();

  ssl_st* ssl_ = nullptr;
  bio_st* rbio_ = nullptr;  // ciphertext in, owned by ssl_
  bio_st* wbio_ = nullptr;  // ciphertext out, owned by ssl_
  std::shared_ptr<const ServerContext> server_ctx_;
  std::shared_ptr<const ClientContext> client_ctx_;
  std::string early_writes_;  // plaintext written during the handshake
  std::string error_detail_;
  State state_ = State::kHandshaking;
  Error error_ = Error::kNone;
  bool handshake_completed_ = false;
};

}  // namespace fg::tls
