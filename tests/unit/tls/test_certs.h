// Test certificates made at test time with OpenSSL's API: a root CA, an intermediate, and
// leaves with chosen names and validity, written as PEM files into a private temporary
// directory that is removed with the factory.
#pragma once

#include <string>
#include <vector>

#include "tls/context.h"

struct evp_pkey_st;
struct x509_st;

namespace fg::tls::test {

struct LeafOptions {
  std::string common_name = "leaf";
  bool expired = false;
  bool via_intermediate = false;  // signed by the intermediate; the file holds leaf + it
  bool chain_reversed = false;    // with via_intermediate: the intermediate first (wrong)
};

class CertFactory {
 public:
  CertFactory();
  ~CertFactory();
  CertFactory(const CertFactory&) = delete;
  CertFactory& operator=(const CertFactory&) = delete;

  // The root CA certificate, to trust on the client side.
  const std::string& ca_file() const { return ca_file_; }

  // Issues a leaf with these DNS subjectAltNames (none: only the CN names it) and writes
  // <stem>.crt and <stem>.key. The spec's names are left empty (read from the certificate).
  CertificateSpec leaf(const std::string& stem, const std::vector<std::string>& dns_names,
                       const LeafOptions& options = {});

  // A fresh CA unrelated to ca_file() (for "untrusted" tests); writes <stem>.crt.
  std::string other_ca(const std::string& stem);

  // A path inside the directory, and a file written there.
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  std::string write(const std::string& name, const std::string& content) const;

 private:
  std::string dir_;
  std::string ca_file_;
  evp_pkey_st* ca_key_ = nullptr;
  x509_st* ca_cert_ = nullptr;
  evp_pkey_st* int_key_ = nullptr;
  x509_st* int_cert_ = nullptr;
  long serial_ = 1;
};

}  // namespace fg::tls::test
