#include "test_certs.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace fg::tls::test {

namespace {

// Test setup failing is a broken test environment, not a test result: throw (Catch2
// reports it with the message).
void need(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string("test certificate setup failed: ") + what);
}

EVP_PKEY* new_key() {
  EVP_PKEY* k = EVP_EC_gen("P-256");  // fast to generate, unlike RSA
  need(k != nullptr, "EC key");
  return k;
}

void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  need(ext != nullptr, "extension");
  need(X509_add_ext(cert, ext, -1) == 1, "add extension");
  X509_EXTENSION_free(ext);
}

// issuer == nullptr: self-signed.
X509* make_cert(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key, bool ca,
                const std::vector<std::string>& dns, bool expired, long serial) {
  X509* x = X509_new();
  need(x != nullptr, "X509_new");
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  const long day = 86400;
  X509_gmtime_adj(X509_getm_notBefore(x), expired ? -30 * day : -day);
  X509_gmtime_adj(X509_getm_notAfter(x), expired ? -day : 30 * day);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer != nullptr ? issuer : x;
  add_ext(x, signer, NID_subject_key_identifier, "hash");
  add_ext(x, signer, NID_authority_key_identifier, "keyid:always");
  if (ca) {
    add_ext(x, signer, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x, signer, NID_basic_constraints, "CA:FALSE");
    add_ext(x, signer, NID_ext_key_usage, "serverAuth");
    if (!dns.empty()) {
      std::string san;
      for (const std::string& d : dns) san += (san.empty() ? "DNS:" : ",DNS:") + d;
      add_ext(x, signer, NID_subject_alt_name, san);
    }
  }
  need(X509_sign(x, issuer_key != nullptr ? issuer_key : key, EVP_sha256()) > 0, "sign");
  return x;
}

void write_pem(const std::string& path, const std::vector<X509*>& certs, EVP_PKEY* key) {
  BIO* b = BIO_new_file(path.c_str(), "w");
  need(b != nullptr, "open PEM file");
  for (X509* c : certs) need(PEM_write_bio_X509(b, c) == 1, "write certificate");
  if (key != nullptr) need(PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr) == 1, "write key");
  BIO_free(b);
}

}  // namespace

CertFactory::CertFactory() {
  char tmpl[] = "/tmp/fg_tls_test_XXXXXX";
  need(mkdtemp(tmpl) != nullptr, "mkdtemp");
  dir_ = tmpl;
  ca_key_ = new_key();
  ca_cert_ = make_cert(ca_key_, "Floodgate Test Root", nullptr, nullptr, true, {}, false, serial_++);
  int_key_ = new_key();
  int_cert_ = make_cert(int_key_, "Floodgate Test Intermediate", ca_cert_, ca_key_, true, {}, false, serial_++);
  ca_file_ = path("ca.crt");
  write_pem(ca_file_, {ca_cert_}, nullptr);
}

CertFactory::~CertFactory() {
  X509_free(ca_cert_);
  X509_free(int_cert_);
  EVP_PKEY_free(ca_key_);
  EVP_PKEY_free(int_key_);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

CertificateSpec CertFactory::leaf(const std::string& stem, const std::vector<std::string>& dns_names,
                                  const LeafOptions& options) {
  EVP_PKEY* key = new_key();
  X509* issuer = options.via_intermediate ? int_cert_ : ca_cert_;
  EVP_PKEY* issuer_key = options.via_intermediate ? int_key_ : ca_key_;
  X509* cert = make_cert(key, options.common_name, issuer, issuer_key, false, dns_names, options.expired, serial_++);
  CertificateSpec spec{path(stem + ".crt"), path(stem + ".key"), {}};
  if (!options.via_intermediate) {
    write_pem(spec.cert_file, {cert}, nullptr);
  } else if (options.chain_reversed) {
    write_pem(spec.cert_file, {cert, ca_cert_, int_cert_}, nullptr);
  } else {
    write_pem(spec.cert_file, {cert, int_cert_}, nullptr);
  }
  write_pem(spec.key_file, {}, key);
  X509_free(cert);
  EVP_PKEY_free(key);
  return spec;
}

std::string CertFactory::other_ca(const std::string& stem) {
  EVP_PKEY* key = new_key();
  X509* cert = make_cert(key, "Some Other Root", nullptr, nullptr, true, {}, false, serial_++);
  const std::string file = path(stem + ".crt");
  write_pem(file, {cert}, nullptr);
  X509_free(cert);
  EVP_PKEY_free(key);
  return file;
}

std::string CertFactory::write(const std::string& name, const std::string& content) const {
  const std::string file = path(name);
  FILE* f = std::fopen(file.c_str(), "wb");
  need(f != nullptr, "write file");
  std::fwrite(content.data(), 1, content.size(), f);
  std::fclose(f);
  return file;
}

}  // namespace fg::tls::test
