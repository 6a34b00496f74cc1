// Sessions in memory: a server and a client Session pass ciphertext to each other through
// the test, so handshakes, resumption, SNI, ALPN, refusals, garbage, split records and
// close_notify are all exercised without a socket.
#include <catch2/catch.hpp>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "test_certs.h"
#include "tls/session.h"

using fg::tls::CertificateSpec;
using fg::tls::ClientContext;
using fg::tls::ClientOptions;
using fg::tls::Error;
using fg::tls::SavedSession;
using fg::tls::ServerContext;
using fg::tls::ServerOptions;
using fg::tls::Session;
using fg::tls::State;
using fg::tls::test::CertFactory;
using fg::tls::test::LeafOptions;

namespace {

std::shared_ptr<ServerContext> server_ctx(std::vector<CertificateSpec> certs,
                                          std::shared_ptr<fg::tls::TicketKeyRing> ring = nullptr) {
  ServerOptions o;
  o.certificates = std::move(certs);
  o.ticket_keys = std::move(ring);
  auto r = ServerContext::create(o);
  REQUIRE(r);
  return *r;
}

// max_version: 0 for the default (1.3), else e.g. TLS1_2_VERSION.
std::shared_ptr<ClientContext> client_ctx(const CertFactory& f, int max_version = 0, bool alpn = true) {
  ClientOptions o;
  o.ca_file = f.ca_file();
  o.offer_alpn = alpn;
  auto r = ClientContext::create(o);
  REQUIRE(r);
  if (max_version != 0) REQUIRE(SSL_CTX_set_max_proto_version((*r)->ssl_ctx(), max_version) == 1);
  return *r;
}

// Drains what `s` can decrypt into `got`.
void drain(Session& s, std::string& got) {
  char buf[4096];
  while (size_t n = s.read_plain(buf, sizeof buf)) got.append(buf, n);
}

// Moves ciphertext from `from` into `to`, `chunk` bytes per feed(), draining `to` after
// each. Returns how many bytes moved.
size_t transfer(Session& from, Session& to, std::string& to_got, size_t chunk) {
  std::string wire;
  from.take_ciphertext(wire);
  for (size_t i = 0; i < wire.size(); i += chunk) {
    to.feed(wire.data() + i, std::min(chunk, wire.size() - i));
    drain(to, to_got);
  }
  return wire.size();
}

struct Pair {
  std::unique_ptr<Session> server;
  std::unique_ptr<Session> client;
  std::string server_got;
  std::string client_got;

  Pair(std::shared_ptr<const ServerContext> s, std::shared_ptr<const ClientContext> c, std::string_view host,
       const SavedSession* resume = nullptr)
      : server(Session::server(std::move(s))), client(Session::client(std::move(c), host, resume)) {
    REQUIRE(server);
    REQUIRE(client);
  }

  // Passes ciphertext both ways until neither side has anything to send.
  void pump(size_t chunk = SIZE_MAX) {
    for (int round = 0; round < 50; ++round) {
      const size_t a = transfer(*client, *server, server_got, chunk);
      const size_t b = transfer(*server, *client, client_got, chunk);
      if (a == 0 && b == 0) return;
    }
    FAIL("the sessions kept talking");
  }

  bool established() const { return server->state() == State::kOpen && client->state() == State::kOpen; }
};

std::string cn_of(X509* cert) {
  if (cert == nullptr) return "";
  char buf[256];
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
  return buf;
}

std::string peer_cn(const Session& s) { return cn_of(SSL_get0_peer_certificate(s.ssl())); }
// The certificate a server session presents.
std::string own_cn(const Session& s) { return cn_of(SSL_get_certificate(s.ssl())); }

// A message whose bytes differ by position, so a misplaced byte shows.
std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + seed) & 0xff);
  return s;
}

}  // namespace

TEST_CASE("a TLS 1.3 handshake in memory, ALPN http/1.1, data both ways", "[tls]") {
  CertFactory f;
  Pair p(server_ctx({f.leaf("shop", {"shop.example"})}), client_ctx(f), "shop.example");
  CHECK(p.server->state() == State::kHandshaking);
  p.pump();
  REQUIRE(p.established());
  CHECK(p.server->handshake_done());
  CHECK(p.server->version() == "TLSv1.3");
  CHECK(p.client->version() == "TLSv1.3");
  CHECK(p.server->alpn() == "http/1.1");
  CHECK(p.client->alpn() == "http/1.1");
  CHECK(p.server->server_name() == "shop.example");
  CHECK_FALSE(p.server->resumed());

  REQUIRE(p.client->write_plain("GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n"));
  p.pump();
  CHECK(p.server_got == "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n");
  REQUIRE(p.server->write_plain("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
  p.pump();
  CHECK(p.client_got == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");

  // A megabyte each way: many records, the receiver's buffer smaller than a record.
  const std::string big = pattern(1 << 20, 7);
  p.server_got.clear();
  p.client_got.clear();
  REQUIRE(p.client->write_plain(big));
  REQUIRE(p.server->write_plain(big));
  p.pump();
  CHECK(p.server_got == big);
  CHECK(p.client_got == big);
}

TEST_CASE("a TLS 1.2 handshake uses an ECDHE AEAD cipher and ALPN", "[tls]") {
  CertFactory f;
  Pair p(server_ctx({f.leaf("shop", {"shop.example"})}), client_ctx(f, TLS1_2_VERSION), "shop.example");
  p.pump();
  REQUIRE(p.established());
  CHECK(p.server->version() == "TLSv1.2");
  CHECK(p.server->cipher().substr(0, 6) == "ECDHE-");
  const bool aead = p.server->cipher().find("GCM") != std::string_view::npos ||
                    p.server->cipher().find("CHACHA20") != std::string_view::npos;
  CHECK(aead);
  CHECK(p.server->alpn() == "http/1.1");
  REQUIRE(p.server->write_plain("hello"));
  p.pump();
  CHECK(p.client_got == "hello");
}

TEST_CASE("TLS 1.2: the server's cipher order wins over the client's", "[tls]") {
  CertFactory f;
  auto cli = client_ctx(f, TLS1_2_VERSION);
  REQUIRE(SSL_CTX_set_cipher_list(cli->ssl_ctx(),
                                  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:"
                                  "ECDHE-ECDSA-AES128-GCM-SHA256") == 1);
  Pair p(server_ctx({f.leaf("shop", {"shop.example"})}), cli, "shop.example");
  p.pump();
  REQUIRE(p.established());
  CHECK(p.server->cipher() == "ECDHE-ECDSA-AES128-GCM-SHA256");
}

TEST_CASE("TLS 1.2: a client's renegotiation is refused and the connection goes on", "[tls]") {
  CertFactory f;
  Pair p(server_ctx({f.leaf("shop", {"shop.example"})}), client_ctx(f, TLS1_2_VERSION), "shop.example");
  p.pump();
  REQUIRE(p.established());
  SSL* c = p.client->ssl();
  SSL_clear_options(c, SSL_OP_NO_RENEGOTIATION);  // this client insists
  REQUIRE(SSL_renegotiate(c) == 1);
  SSL_do_handshake(c);
  std::string wire;
  p.client->take_ciphertext(wire);
  REQUIRE_FALSE(wire.empty());
  p.server->feed(wire.data(), wire.size());
  drain(*p.server, p.server_got);
  CHECK(p.server->state() == State::kOpen);
  CHECK(SSL_total_renegotiations(p.server->ssl()) == 0);
  CHECK(p.server->pending_ciphertext() > 0);  // the no_renegotiation alert
  CHECK(p.server->write_plain("still talking"));
}

TEST_CASE("the handshake and data survive records split at every byte", "[tls]") {
  CertFactory f;
  for (int max_version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    Pair p(server_ctx({f.leaf("shop", {"shop.example"})}), client_ctx(f, max_version), "shop.example");
    p.pump(1);  // every handshake message one byte at a time
    REQUIRE(p.established());

    // Each record split into two feeds at every possible point, both directions.
    const std::string msg = pattern(100, 3);
    for (Session* from : {p.client.get(), p.server.get()}) {
      Session* to = from == p.client.get() ? p.server.get() : p.client.get();
      std::string wire;
      REQUIRE(from->write_plain(msg));
      from->take_ciphertext(wire);
      const size_t record = wire.size();
      for (size_t cut = 0; cut <= record; ++cut) {
        if (cut > 0) {
          wire.clear();
          REQUIRE(from->write_plain(msg));
          from->take_ciphertext(wire);
          REQUIRE(wire.size() == record);
        }
        std::string got;
        CHECK(to->feed(wire.data(), cut) == Error::kNone);
        drain(*to, got);
        if (cut < record) CHECK(got.empty());  // part of a record decrypts nothing
        CHECK(to->feed(wire.data() + cut, record - cut) == Error::kNone);
        drain(*to, got);
        REQUIRE(got == msg);
      }
    }
  }
}

TEST_CASE("plaintext written during the handshake is sent once it completes", "[tls]") {
  CertFactory f;
  Pair p(server_ctx({f.leaf("shop", {"shop.example"})}), client_ctx(f), "shop.example");
  REQUIRE(p.client->write_plain("early request"));
  p.pump();
  REQUIRE(p.established());
  CHECK(p.server_got == "early request");
}

TEST_CASE("ALPN: no ALPN is accepted, an h2-only client is refused cleanly", "[tls]") {
  CertFactory f;
  auto srv = server_ctx({f.leaf("shop", {"shop.example"})});

  // A browser offers h2 first; it gets http/1.1.
  auto both = client_ctx(f, 0, false);
  static const unsigned char kBoth[] = "\x02h2\x08http/1.1";
  REQUIRE(SSL_CTX_set_alpn_protos(both->ssl_ctx(), kBoth, sizeof kBoth - 1) == 0);
  Pair browser(srv, both, "shop.example");
  browser.pump();
  REQUIRE(browser.established());
  CHECK(browser.server->alpn() == "http/1.1");
  CHECK(browser.client->alpn() == "http/1.1");

  Pair plain(srv, client_ctx(f, 0, false), "shop.example");
  plain.pump();
  REQUIRE(plain.established());
  CHECK(plain.server->alpn().empty());

  auto h2 = client_ctx(f, 0, false);
  static const unsigned char kH2[] = "\x02h2";
  REQUIRE(SSL_CTX_set_alpn_protos(h2->ssl_ctx(), kH2, sizeof kH2 - 1) == 0);
  Pair p(srv, h2, "shop.example");
  p.pump();
  CHECK(p.server->state() == State::kFailed);
  CHECK(p.server->error() == Error::kHandshakeFailed);
  CHECK(p.server->error_detail() == "no application protocol");
  // The client was told why (the no_application_protocol alert), not just cut off.
  CHECK(p.client->error() == Error::kHandshakeFailed);
  CHECK(p.client->error_detail() == "tlsv1 alert no application protocol");
}

TEST_CASE("SNI chooses between certificates; an unknown name gets the first", "[tls]") {
  CertFactory f;
  LeafOptions a, b;
  a.common_name = "cert-a";
  b.common_name = "cert-b";
  auto srv = server_ctx({f.leaf("a", {"a.example"}, a), f.leaf("b", {"b.example", "*.wild.example"}, b)});

  for (auto [host, cn] : {std::pair{"a.example", "cert-a"}, {"b.example", "cert-b"}, {"x.wild.example", "cert-b"}}) {
    Pair p(srv, client_ctx(f), host);
    p.pump();
    REQUIRE(p.established());  // the client verified the name against the chosen certificate
    CHECK(peer_cn(*p.client) == cn);
    CHECK(own_cn(*p.server) == cn);
    CHECK(p.server->server_name() == host);
  }

  // Not ours: the default certificate, which the client's name check then refuses.
  Pair p(srv, client_ctx(f), "c.example");
  p.pump();
  CHECK(own_cn(*p.server) == "cert-a");
  CHECK(p.client->error() == Error::kHandshakeFailed);
  CHECK(p.client->error_detail() == "certificate verify failed");
  CHECK(p.server->error() == Error::kHandshakeFailed);
}

TEST_CASE("the client checks the chain and the name", "[tls]") {
  CertFactory f;
  LeafOptions o;
  o.via_intermediate = true;
  auto srv = server_ctx({f.leaf("chained", {"shop.example"}, o)});

  // Trusting only the root works because the server sends the intermediate.
  Pair chained(srv, client_ctx(f), "shop.example");
  chained.pump();
  REQUIRE(chained.established());
  CHECK(sk_X509_num(SSL_get_peer_cert_chain(chained.client->ssl())) == 2);

  Pair wrong_name(srv, client_ctx(f), "other.example");
  wrong_name.pump();
  CHECK(wrong_name.client->error() == Error::kHandshakeFailed);

  ClientOptions untrusting;
  untrusting.ca_file = f.other_ca("other");
  Pair untrusted(srv, *ClientContext::create(untrusting), "shop.example");
  untrusted.pump();
  CHECK(untrusted.client->error() == Error::kHandshakeFailed);
  CHECK(untrusted.client->error_detail() == "certificate verify failed");
}

TEST_CASE("tickets resume, also after one key rotation, not after two", "[tls]") {
  CertFactory f;
  for (int max_version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    INFO("max version " << max_version);
    auto srv = server_ctx({f.leaf("shop", {"shop.example"})});
    auto cli = client_ctx(f, max_version);

    Pair first(srv, cli, "shop.example");
    first.pump();
    REQUIRE(first.established());
    CHECK_FALSE(first.client->resumed());
    const SavedSession ticket = first.client->saved_session();
    REQUIRE_FALSE(ticket.empty());

    Pair again(srv, cli, "shop.example", &ticket);
    again.pump();
    REQUIRE(again.established());
    CHECK(again.server->resumed());
    CHECK(again.client->resumed());
    CHECK(again.server->alpn() == "http/1.1");

    srv->rotate_ticket_keys();
    Pair after_one(srv, cli, "shop.example", &ticket);
    after_one.pump();
    REQUIRE(after_one.established());
    CHECK(after_one.server->resumed());
    // Resumed under the previous key, the client is given a ticket under the current one.
    const SavedSession renewed = after_one.client->saved_session();
    REQUIRE_FALSE(renewed.empty());

    srv->rotate_ticket_keys();
    Pair after_two(srv, cli, "shop.example", &ticket);
    after_two.pump();
    REQUIRE(after_two.established());  // a full handshake instead, not a failure
    CHECK_FALSE(after_two.server->resumed());
    CHECK_FALSE(after_two.client->resumed());

    Pair with_renewed(srv, cli, "shop.example", &renewed);
    with_renewed.pump();
    REQUIRE(with_renewed.established());
    CHECK(with_renewed.server->resumed());
  }
}

TEST_CASE("a saved session resumes after its connection ended without close_notify", "[tls]") {
  CertFactory f;
  auto srv = server_ctx({f.leaf("shop", {"shop.example"})});
  auto cli = client_ctx(f);
  SavedSession ticket;
  {
    Pair first(srv, cli, "shop.example");
    first.pump();
    REQUIRE(first.established());
    ticket = first.client->saved_session();
  }  // both sides dropped, as when the peer closes an idle connection with a bare FIN
  REQUIRE_FALSE(ticket.empty());
  Pair again(srv, cli, "shop.example", &ticket);
  again.pump();
  REQUIRE(again.established());
  CHECK(again.client->resumed());
}

TEST_CASE("a reloaded context keeps resuming tickets when it is given the old key ring", "[tls]") {
  CertFactory f;
  const CertificateSpec spec = f.leaf("shop", {"shop.example"});
  auto old_ctx = server_ctx({spec});
  auto cli = client_ctx(f);
  Pair first(old_ctx, cli, "shop.example");
  first.pump();
  REQUIRE(first.established());
  const SavedSession ticket = first.client->saved_session();
  REQUIRE_FALSE(ticket.empty());

  Pair same_ring(server_ctx({spec}, old_ctx->ticket_keys()), cli, "shop.example", &ticket);
  same_ring.pump();
  REQUIRE(same_ring.established());
  CHECK(same_ring.server->resumed());

  Pair new_ring(server_ctx({spec}), cli, "shop.example", &ticket);
  new_ring.pump();
  REQUIRE(new_ring.established());
  CHECK_FALSE(new_ring.server->resumed());
}

TEST_CASE("a session outlives the context it was made from", "[tls]") {
  CertFactory f;
  auto srv = server_ctx({f.leaf("a", {"a.example"}), f.leaf("b", {"b.example"})});
  Pair p(srv, client_ctx(f), "b.example");
  std::weak_ptr<ServerContext> watch = srv;
  srv.reset();  // a reload replaced it: only the session holds it now
  REQUIRE_FALSE(watch.expired());
  p.pump();
  REQUIRE(p.established());
  CHECK(peer_cn(*p.client) == "leaf");
  REQUIRE(p.client->write_plain("still here"));
  p.pump();
  CHECK(p.server_got == "still here");
  p.server.reset();
  CHECK(watch.expired());  // freed with its last session
}

TEST_CASE("a TLS 1.0/1.1-only client is refused", "[tls]") {
  CertFactory f;
  auto srv = server_ctx({f.leaf("shop", {"shop.example"})});
  for (int version : {TLS1_VERSION, TLS1_1_VERSION}) {
    auto old = client_ctx(f);
    REQUIRE(SSL_CTX_set_min_proto_version(old->ssl_ctx(), TLS1_VERSION) == 1);
    REQUIRE(SSL_CTX_set_max_proto_version(old->ssl_ctx(), version) == 1);
    // Debian's default security level would stop such a client before it says hello.
    REQUIRE(SSL_CTX_set_cipher_list(old->ssl_ctx(), "DEFAULT:@SECLEVEL=0") == 1);
    Pair p(srv, old, "shop.example");
    REQUIRE(p.client->pending_ciphertext() > 0);
    p.pump();
    CHECK(p.server->error() == Error::kHandshakeFailed);
    CHECK(p.server->error_detail() == "unsupported protocol");
    CHECK(p.client->error() == Error::kHandshakeFailed);
    CHECK(p.client->error_detail() == "tlsv1 alert protocol version");
  }
}

TEST_CASE("garbage fed to the server is a protocol error, never a crash", "[tls]") {
  CertFactory f;
  auto srv = server_ctx({f.leaf("shop", {"shop.example"})});

  SECTION("plain HTTP to the TLS port") {
    auto s = Session::server(srv);
    const std::string req = "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n";
    CHECK(s->feed(req.data(), req.size()) == Error::kProtocolError);
    CHECK(s->state() == State::kFailed);
    CHECK(s->error_detail() == "http request");
    char buf[64];
    CHECK(s->read_plain(buf, sizeof buf) == 0);
    CHECK_FALSE(s->write_plain("x"));
    CHECK(s->feed(req.data(), req.size()) == Error::kProtocolError);  // ignored after failing
  }

  SECTION("random bytes, whole or byte by byte") {
    std::mt19937 rng(13);
    int judged = 0;
    for (int i = 0; i < 200; ++i) {
      std::string junk(1 + rng() % 600, '\0');
      for (char& c : junk) c = static_cast<char>(rng());
      if (i % 10 == 0) junk[0] = 0x16;  // looks like a handshake record
      auto s = Session::server(srv);
      Error e = Error::kNone;
      if (i % 2 == 0) {
        e = s->feed(junk.data(), junk.size());
      } else {
        for (size_t k = 0; k < junk.size() && e == Error::kNone; ++k) e = s->feed(&junk[k], 1);
      }
      // Too short to be judged yet is fine; judged, it is a protocol error.
      if (e != Error::kNone) {
        ++judged;
        CHECK(e == Error::kProtocolError);
        CHECK_FALSE(s->error_detail().empty());
      }
      CHECK(s->state() != State::kOpen);
    }
    CHECK(judged > 150);
  }

  SECTION("a corrupted record after the handshake") {
    Pair p(srv, client_ctx(f), "shop.example");
    p.pump();
    REQUIRE(p.established());
    REQUIRE(p.client->write_plain("payload"));
    std::string wire;
    p.client->take_ciphertext(wire);
    wire[wire.size() - 3] ^= 0x40;
    p.server->feed(wire.data(), wire.size());
    drain(*p.server, p.server_got);
    CHECK(p.server_got.empty());
    CHECK(p.server->error() == Error::kProtocolError);
    CHECK(p.server->error_detail() == "decryption failed or bad record mac");
  }
}

TEST_CASE("close_notify ends the session cleanly both ways", "[tls]") {
  CertFactory f;
  auto srv = server_ctx({f.leaf("shop", {"shop.example"})});
  auto cli = client_ctx(f);

  SECTION("the client closes") {
    Pair p(srv, cli, "shop.example");
    p.pump();
    REQUIRE(p.established());
    REQUIRE(p.client->write_plain("last words"));
    p.client->close();
    p.client->close();  // idempotent
    CHECK(p.client->state() == State::kClosed);
    CHECK_FALSE(p.client->write_plain("more"));
    transfer(*p.client, *p.server, p.server_got, SIZE_MAX);
    CHECK(p.server_got == "last words");  // data before close_notify is delivered
    CHECK(p.server->state() == State::kClosed);
    CHECK(p.server->error() == Error::kPeerClosed);
    CHECK(p.server->pending_ciphertext() > 0);  // its own close_notify in reply
    CHECK_FALSE(p.server->write_plain("too late"));
  }

  SECTION("the server closes") {
    Pair p(srv, cli, "shop.example");
    p.pump();
    REQUIRE(p.established());
    p.server->close();
    p.pump();
    CHECK(p.client->error() == Error::kPeerClosed);
    CHECK(p.client->state() == State::kClosed);
    CHECK(p.server->error() == Error::kNone);
  }

  SECTION("closing mid-handshake sends nothing and fails nothing") {
    Pair p(srv, cli, "shop.example");
    p.client->close();
    CHECK(p.client->state() == State::kClosed);
    CHECK(p.client->error() == Error::kNone);
  }
}

TEST_CASE("one context serves handshakes on several threads while its keys rotate", "[tls]") {
  CertFactory f;
  auto srv = server_ctx({f.leaf("shop", {"shop.example"})});
  auto cli = client_ctx(f);
  // Catch2's assertions are not thread-safe: the threads count, the test checks.
  std::vector<int> established(2, 0), resumed(2, 0);
  auto run = [&](int t) {
    SavedSession ticket;
    for (int i = 0; i < 30; ++i) {
      auto server = Session::server(srv);
      auto client = Session::client(cli, "shop.example", &ticket);
      std::string sink;
      for (int round = 0; round < 10; ++round) {
        std::string wire;
        client->take_ciphertext(wire);
        server->feed(wire.data(), wire.size());
        drain(*server, sink);
        wire.clear();
        server->take_ciphertext(wire);
        client->feed(wire.data(), wire.size());
        drain(*client, sink);
      }
      if (server->state() == State::kOpen && client->state() == State::kOpen) ++established[t];
      if (server->resumed()) ++resumed[t];
      ticket = client->saved_session();
    }
  };
  std::thread a(run, 0), b(run, 1);
  for (int i = 0; i < 20; ++i) {
    srv->rotate_ticket_keys();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  a.join();
  b.join();
  CHECK(established[0] == 30);
  CHECK(established[1] == 30);
  // Each thread renews its ticket on every connection, so rotations rarely outrun it.
  CHECK(resumed[0] + resumed[1] > 0);
}
