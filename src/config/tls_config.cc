// Validation of the TLS keys (see tls_config.h). Only the shape is checked here; the
// files are read when the contexts are built (net/tls_contexts.cc), at --check, start
// and every reload.
#include "config/tls_config.h"

#include "config/reader.h"

namespace fg::config {
namespace {

constexpr uint64_t kMinRotationMs = 60 * 1000;

std::string where_of(const Reader& rd, const toml::node& n, const std::string& path) {
  std::string w = rd.name();
  const auto& at = n.source().begin;
  if (at.line != 0) w += ':' + std::to_string(at.line) + ':' + std::to_string(at.column);
  return w + ": " + path;
}

// Relative to the config file's directory, so a config works from any working directory.
std::string resolve(const Reader& rd, const std::string& file) {
  if (file.empty() || file.front() == '/') return file;
  auto slash = rd.name().rfind('/');
  if (slash == std::string::npos) return file;
  return rd.name().substr(0, slash + 1) + file;
}

bool read_file_name(Reader& rd, const toml::node& n, const std::string& path, std::string* out) {
  if (!rd.read_string(n, path, out)) return false;
  if (out->empty()) {
    rd.error(n, path, "must name a file");
    return false;
  }
  *out = resolve(rd, *out);
  return true;
}

void read_names(Reader& rd, const toml::node& n, const std::string& path, std::vector<std::string>* out) {
  const toml::array* arr = n.as_array();
  if (arr == nullptr) {
    rd.error(n, path, "expected an array of host names, got " + std::string(type_name(n)));
    return;
  }
  for (size_t i = 0; i < arr->size(); i++) {
    std::string name;
    if (!rd.read_string((*arr)[i], Reader::index(path, i), &name)) continue;
    std::string bare = name.rfind("*.", 0) == 0 ? name.substr(2) : name;
    if (!is_hostname(bare)) {
      rd.error((*arr)[i], Reader::index(path, i), "expected a host name or \"*.\" and a host name, got \"" + name + "\"");
      continue;
    }
    out->push_back(std::move(name));
  }
}

void read_certificate(Reader& rd, const toml::table& t, const std::string& path, bool allow_list_keys,
                      TlsCertificateConfig* out) {
  if (allow_list_keys) {
    rd.check_keys(t, path, {"cert", "key", "names", "certificates", "ciphers", "ticket_key_rotation"});
  } else {
    rd.check_keys(t, path, {"cert", "key", "names"});
  }
  out->where = where_of(rd, t, path);
  const toml::node* cert = t.get("cert");
  const toml::node* key = t.get("key");
  if (cert == nullptr) rd.error(t, path + ".cert", "required, e.g. cert = \"/etc/floodgate/shop.pem\"");
  if (key == nullptr) rd.error(t, path + ".key", "required, e.g. key = \"/etc/floodgate/shop.key\"");
  if (cert) read_file_name(rd, *cert, path + ".cert", &out->cert);
  if (key) read_file_name(rd, *key, path + ".key", &out->key);
  if (const toml::node* n = t.get("names")) read_names(rd, *n, path + ".names", &out->names);
}

}  // namespace

void read_listen_tls(Reader& rd, const Table& table, ListenTlsConfig* out) {
  const toml::table& t = table.toml();
  const std::string& path = table.path();
  out->enabled = true;
  if (const toml::node* list = t.get("certificates")) {
    rd.check_keys(t, path, {"certificates", "ciphers", "ticket_key_rotation"});
    const toml::array* arr = list->as_array();
    if (arr == nullptr || arr->empty()) {
      rd.error(*list, path + ".certificates", "expected a non-empty array of { cert, key, names } tables");
    } else {
      for (size_t i = 0; i < arr->size(); i++) {
        const std::string p = Reader::index(path + ".certificates", i);
        if (const toml::table* ct = rd.as_table((*arr)[i], p)) {
          TlsCertificateConfig c;
          read_certificate(rd, *ct, p, false, &c);
          out->certificates.push_back(std::move(c));
        }
      }
    }
  } else {
    TlsCertificateConfig c;
    read_certificate(rd, t, path, true, &c);
    out->certificates.push_back(std::move(c));
  }
  if (const toml::node* n = t.get("ciphers")) {
    if (rd.read_string(*n, path + ".ciphers", &out->ciphers)) out->ciphers_where = where_of(rd, *n, path + ".ciphers");
  }
  if (const toml::node* n = t.get("ticket_key_rotation")) {
    rd.read_duration(*n, path + ".ticket_key_rotation", kMinRotationMs, kMaxDurationMs, &out->ticket_key_rotation_ms);
  }
}

void read_upstream_tls(Reader& rd, const Table& upstream, UpstreamTlsConfig* out) {
  const toml::table& t = upstream.toml();
  const std::string& path = upstream.path();
  if (const toml::node* n = t.get("tls")) rd.read_bool(*n, path + ".tls", &out->enabled);
  const toml::node* ca = t.get("tls_ca");
  const toml::node* verify = t.get("tls_verify");
  const toml::node* name = t.get("tls_server_name");
  out->where = where_of(rd, ca ? *ca : (t.get("tls") ? *t.get("tls") : static_cast<const toml::node&>(t)),
                        path + (ca ? ".tls_ca" : ".tls"));
  if (ca) read_file_name(rd, *ca, path + ".tls_ca", &out->ca_file);
  if (verify) rd.read_bool(*verify, path + ".tls_verify", &out->verify);
  if (name && rd.read_string(*name, path + ".tls_server_name", &out->server_name) && !is_hostname(out->server_name)) {
    rd.error(*name, path + ".tls_server_name", "expected a host name, got \"" + out->server_name + "\"");
  }
  if (!out->enabled) {
    const std::pair<const toml::node*, const char*> set[] = {{ca, "tls_ca"}, {verify, "tls_verify"},
                                                            {name, "tls_server_name"}};
    for (const auto& [n, key] : set) {
      if (n) rd.error(*n, path + "." + key, "has no effect without tls = true");
    }
  }
}

}  // namespace fg::config
