// Contexts: certificate loading and its errors (each naming the file), warnings for an
// expired certificate and a misordered chain, SNI names and their selection, the ticket
// key ring, and the client context's CA file.
#include <catch2/catch.hpp>

#include "test_certs.h"
#include "tls/context.h"

using fg::Status;
using fg::tls::CertificateSpec;
using fg::tls::check_certificate;
using fg::tls::ClientContext;
using fg::tls::ClientOptions;
using fg::tls::ServerContext;
using fg::tls::ServerOptions;
using fg::tls::TicketKeyRing;
using fg::tls::test::CertFactory;
using fg::tls::test::LeafOptions;

namespace {

ServerOptions options_for(std::vector<CertificateSpec> certs) {
  ServerOptions o;
  o.certificates = std::move(certs);
  return o;
}

}  // namespace

TEST_CASE("a certificate and its key load, names come from the subjectAltNames", "[tls]") {
  CertFactory f;
  const CertificateSpec spec = f.leaf("shop", {"shop.example", "WWW.Shop.Example"});
  auto ctx = ServerContext::create(options_for({spec}));
  REQUIRE(ctx);
  CHECK((*ctx)->warnings().empty());
  REQUIRE((*ctx)->names().size() == 1);
  CHECK((*ctx)->names()[0] == std::vector<std::string>{"shop.example", "www.shop.example"});
  std::vector<std::string> warnings;
  CHECK(check_certificate(spec.cert_file, spec.key_file, &warnings).is_ok());
  CHECK(warnings.empty());
}

TEST_CASE("without subjectAltNames the subject CN names the certificate", "[tls]") {
  CertFactory f;
  LeafOptions o;
  o.common_name = "Legacy.Example";
  auto ctx = ServerContext::create(options_for({f.leaf("legacy", {}, o)}));
  REQUIRE(ctx);
  CHECK((*ctx)->names()[0] == std::vector<std::string>{"legacy.example"});
}

TEST_CASE("an unreadable certificate or key file is an error naming the file", "[tls]") {
  CertFactory f;
  const CertificateSpec good = f.leaf("shop", {"shop.example"});
  const std::string missing = f.path("missing.crt");

  Status s = check_certificate(missing, good.key_file);
  CHECK(s.message() == "cannot read certificate file '" + missing + "': No such file or directory");

  s = check_certificate(good.cert_file, f.path("missing.key"));
  CHECK(s.message() == "cannot read key file '" + f.path("missing.key") + "': No such file or directory");

  // A directory opens but cannot be read: errno's words, not a parser's guess.
  s = check_certificate(f.path(""), good.key_file);
  CHECK(s.message() == "cannot read certificate file '" + f.path("") + "': Is a directory");

  auto ctx = ServerContext::create(options_for({good, {missing, good.key_file, {}}}));
  REQUIRE_FALSE(ctx);
  CHECK(ctx.message() == "cannot read certificate file '" + missing + "': No such file or directory");
}

TEST_CASE("a file without PEM content is an error naming the file", "[tls]") {
  CertFactory f;
  const CertificateSpec good = f.leaf("shop", {"shop.example"});
  const std::string junk = f.write("junk.pem", "this is not a certificate\n");

  Status s = check_certificate(junk, good.key_file);
  CHECK(s.message().rfind("certificate file '" + junk + "' holds no PEM certificate (", 0) == 0);
  s = check_certificate(good.cert_file, junk);
  CHECK(s.message().rfind("key file '" + junk + "' holds no unencrypted PEM private key (", 0) == 0);
  // A key where the certificate should be.
  s = check_certificate(good.key_file, good.key_file);
  CHECK(s.message().rfind("certificate file '" + good.key_file + "' holds no PEM certificate", 0) == 0);
}

TEST_CASE("a key that does not match its certificate is an error naming both files", "[tls]") {
  CertFactory f;
  const CertificateSpec a = f.leaf("a", {"a.example"});
  const CertificateSpec b = f.leaf("b", {"b.example"});
  const Status s = check_certificate(a.cert_file, b.key_file);
  CHECK(s.message() == "key file '" + b.key_file + "' does not match the certificate in '" + a.cert_file + "'");
  auto ctx = ServerContext::create(options_for({{a.cert_file, b.key_file, {}}}));
  REQUIRE_FALSE(ctx);
  CHECK(ctx.message() == s.message());
}

TEST_CASE("an expired certificate loads with a warning", "[tls]") {
  CertFactory f;
  LeafOptions o;
  o.expired = true;
  const CertificateSpec spec = f.leaf("old", {"old.example"}, o);
  auto ctx = ServerContext::create(options_for({spec}));
  REQUIRE(ctx);
  REQUIRE((*ctx)->warnings().size() == 1);
  CHECK((*ctx)->warnings()[0].rfind("certificate '" + spec.cert_file + "' expired on 20", 0) == 0);
  std::vector<std::string> warnings;
  CHECK(check_certificate(spec.cert_file, spec.key_file, &warnings).is_ok());
  CHECK(warnings == (*ctx)->warnings());
}

TEST_CASE("a chain file with an intermediate loads; a misordered one warns", "[tls]") {
  CertFactory f;
  LeafOptions o;
  o.via_intermediate = true;
  std::vector<std::string> warnings;
  const CertificateSpec chained = f.leaf("chained", {"shop.example"}, o);
  CHECK(check_certificate(chained.cert_file, chained.key_file, &warnings).is_ok());
  CHECK(warnings.empty());

  o.chain_reversed = true;
  const CertificateSpec reversed = f.leaf("reversed", {"shop.example"}, o);
  CHECK(check_certificate(reversed.cert_file, reversed.key_file, &warnings).is_ok());
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0] == "certificate file '" + reversed.cert_file +
                           "': certificate 2 did not issue the one before it; clients expect the leaf "
                           "first, then each issuer in order");
}

TEST_CASE("no certificate, or a cipher list OpenSSL rejects, is an error", "[tls]") {
  CHECK(ServerContext::create(ServerOptions{}).message() == "TLS needs at least one certificate");
  CertFactory f;
  ServerOptions o = options_for({f.leaf("shop", {"shop.example"})});
  o.ciphers = "NOT-A-CIPHER";
  CHECK(ServerContext::create(o).message() == "cipher list 'NOT-A-CIPHER' selects no cipher OpenSSL supports");
}

TEST_CASE("SNI selection: exact names, then wildcards, else the first certificate", "[tls]") {
  CertFactory f;
  CertificateSpec explicit_names = f.leaf("c", {"ignored.example"});
  explicit_names.names = {"Api.Shop.Example"};
  auto ctx = ServerContext::create(options_for({
      f.leaf("a", {"shop.example"}),
      f.leaf("b", {"*.shop.example", "other.example"}),
      explicit_names,
  }));
  REQUIRE(ctx);
  const ServerContext& c = **ctx;
  CHECK(c.select("shop.example") == 0);
  CHECK(c.select("www.shop.example") == 1);
  CHECK(c.select("WWW.SHOP.EXAMPLE.") == 1);  // any case, a trailing dot
  CHECK(c.select("other.example") == 1);
  CHECK(c.select("api.shop.example") == 2);   // exact beats wildcard
  CHECK(c.select("ignored.example") == 0);    // explicit names replace the certificate's
  CHECK(c.select("a.b.shop.example") == 0);   // a wildcard covers one label only
  CHECK(c.select("unknown.example") == 0);
  CHECK(c.select("") == 0);
}

TEST_CASE("the ticket key ring keeps the previous key for one rotation", "[tls]") {
  TicketKeyRing ring;
  auto k0 = ring.snapshot();
  CHECK_FALSE(k0->has_previous);
  ring.rotate();
  auto k1 = ring.snapshot();
  REQUIRE(k1->has_previous);
  CHECK(k1->previous.name == k0->current.name);
  CHECK(k1->current.name != k0->current.name);
  CHECK(k1->current.aes != k0->current.aes);
  ring.rotate();
  auto k2 = ring.snapshot();
  CHECK(k2->previous.name == k1->current.name);
  CHECK(k2->current.name != k0->current.name);
  // A snapshot held by a handshake stays valid after rotations.
  CHECK(k0->current.name != k2->previous.name);
}

TEST_CASE("a client context names an unreadable or empty CA file", "[tls]") {
  CertFactory f;
  ClientOptions o;
  o.ca_file = f.path("nope.crt");
  CHECK(ClientContext::create(o).message() ==
        "cannot read CA file '" + o.ca_file + "': No such file or directory");
  o.ca_file = f.write("empty.crt", "");
  CHECK(ClientContext::create(o).message().rfind("CA file '" + o.ca_file + "' holds no usable PEM certificate", 0) == 0);
  o.ca_file = f.ca_file();
  CHECK(ClientContext::create(o).is_ok());
  CHECK(ClientContext::create(ClientOptions{}).is_ok());  // the system store
}
