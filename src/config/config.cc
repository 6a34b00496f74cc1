// Loading of the TOML configuration into an immutable fg::Config: the file's bytes
// are checked, parsed, and each top-level table is handed to the loader of the
// feature that owns it (server_config.cc, upstream_config.cc, route_config.cc and
// the features' *_config.cc). Every key is checked against the set this version
// understands, so that a typo fails the load instead of silently leaving a
// protection switched off.
#include "floodgate/config.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>

#include "config/reader.h"
#include "config/source_text.h"
#include "pages/pages_config.h"

namespace fg::config {
namespace {

// The shared toml++ library is built with exceptions, so parse errors arrive as
// toml::parse_error; they are caught right at the call and never leave this file.

// Config files are small; a bound keeps a wrong path (a disk image, /dev/zero)
// from being read into memory.
constexpr size_t kMaxFileBytes = 16 * 1024 * 1024;

std::string hash_hex(std::string_view bytes) {
  // 64-bit FNV-1a: a fingerprint to tell two loaded versions apart, not a
  // security measure.
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[static_cast<size_t>(i)] = kHex[h & 0xf];
    h >>= 4;
  }
  return out;
}

// [pages]: the keys here, the templates by pages::load_pages (relative paths from the
// directory of the config file), whose errors are complete lines naming the template.
void load_pages_table(Reader& rd, const toml::table& root, Config& cfg) {
  pages::PagesConfig pc;
  if (const toml::node* n = root.get("pages")) {
    const toml::table* t = rd.as_table(*n, "pages");
    if (t == nullptr) return;
    rd.check_keys(*t, "pages", {"waiting", "degraded", "error", "shop_name", "enabled"});
    const size_t before = rd.error_count();
    std::string* paths[] = {&pc.waiting, &pc.degraded, &pc.error, &pc.shop_name};
    const char* keys[] = {"waiting", "degraded", "error", "shop_name"};
    for (size_t i = 0; i < std::size(keys); ++i) {
      if (const toml::node* v = t->get(keys[i])) rd.read_string(*v, Reader::join("pages", keys[i]), paths[i]);
    }
    if (const toml::node* v = t->get("enabled")) rd.read_bool(*v, "pages.enabled", &pc.enabled);
    if (rd.error_count() != before) return;
  }
  auto loaded = pages::load_pages(pc, rd.name());
  if (!loaded) {
    std::string_view all = loaded.message();
    while (!all.empty()) {
      const size_t nl = all.find('\n');
      rd.error_line(std::string(all.substr(0, nl)));
      all = nl == std::string_view::npos ? std::string_view() : all.substr(nl + 1);
    }
    return;
  }
  cfg.pages = std::move(loaded.value());
}

void load_root(Reader& rd, const toml::table& root, Config& cfg) {
  rd.check_keys(root, "", {"server", "upstreams", "routes", "admin", "redis", "degrade", "pressure", "reload", "log",
                          "pages"});

  if (const toml::node* n = root.get("server")) {
    if (const toml::table* t = rd.as_table(*n, "server")) load_server(rd, Table(*t, "server"), cfg.server, &cfg.client_table_size);
  } else {
    rd.error_no_pos("server", "missing [server] table");
  }

  if (const toml::node* n = root.get("upstreams")) {
    if (const toml::table* t = rd.as_table(*n, "upstreams")) load_upstreams(rd, Table(*t, "upstreams"), cfg.upstreams);
  } else {
    rd.error_no_pos("upstreams", "at least one [upstreams.NAME] table is required");
  }

  if (root.get("routes") != nullptr) {
    load_routes(rd, Table(root, ""), cfg);
  } else {
    rd.error_no_pos("routes", "at least one [[routes]] entry is required");
  }

  // After [server]: the admin address is checked against server.listen.
  if (const toml::node* n = root.get("admin")) {
    if (const toml::table* t = rd.as_table(*n, "admin")) load_admin(rd, Table(*t, "admin"), cfg.server, cfg.admin);
  }
  if (const toml::node* n = root.get("redis")) {
    if (const toml::table* t = rd.as_table(*n, "redis")) redis::load_config(rd, Table(*t, "redis"), cfg.redis);
  }
  // Walks the file's routes rather than cfg.routes, which leaves out broken
  // ones: the message names the route by its position in the file.
  const toml::node* routes_node = root.get("routes");
  const toml::array* routes = routes_node ? routes_node->as_array() : nullptr;
  if (routes != nullptr && !root.contains("redis")) {
    for (size_t i = 0; i < routes->size(); ++i) {
      const toml::table* rt = routes->get(i)->as_table();
      const toml::node* idem = rt ? rt->get("idempotency") : nullptr;
      if (idem != nullptr && idem->is_table()) {
        rd.error(*idem, Reader::index("routes", i) + ".idempotency",
              "idempotency keys live in Redis: add a [redis] table (url = \"redis://host:port/db\")");
      }
      const toml::node* overflow = rt ? rt->get("overflow") : nullptr;
      if (overflow != nullptr && overflow->value<std::string>() == "queue") {
        rd.error(*overflow, Reader::index("routes", i) + ".overflow",
              "the ticket queue lives in Redis: add a [redis] table (url = \"redis://host:port/db\")");
      }
      const toml::node* mode = rt ? rt->get("mode") : nullptr;
      if (mode != nullptr && mode->value<std::string>() == "store_and_forward") {
        rd.error(*mode, Reader::index("routes", i) + ".mode",
              "the ticket queue lives in Redis: add a [redis] table (url = \"redis://host:port/db\")");
      }
      const toml::node* scope = rt ? rt->get("scope") : nullptr;
      if (scope != nullptr && scope->value<std::string>() == "cluster") {
        rd.error(*scope, Reader::index("routes", i) + ".scope",
              "a cluster budget lives in Redis: add a [redis] table (url = \"redis://host:port/db\")");
      }
      const toml::node* unavailable = rt ? rt->get("on_unavailable") : nullptr;
      if (unavailable != nullptr && unavailable->value<std::string>() == "queue") {
        rd.error(*unavailable, Reader::index("routes", i) + ".on_unavailable",
              "the ticket queue lives in Redis: add a [redis] table (url = \"redis://host:port/db\")");
      }
    }
  }
  if (const toml::node* n = root.get("degrade")) {
    if (const toml::table* t = rd.as_table(*n, "degrade")) admission::load_degrade(rd, Table(*t, "degrade"), cfg.degrade);
  }
  if (const toml::node* n = root.get("pressure")) {
    if (const toml::table* t = rd.as_table(*n, "pressure")) admission::load_pressure(rd, Table(*t, "pressure"), cfg.pressure);
  }
  if (const toml::node* n = root.get("reload")) {
    if (const toml::table* t = rd.as_table(*n, "reload")) load_reload(rd, Table(*t, "reload"), cfg.reload);
  }

  if (const toml::node* n = root.get("log")) {
    if (const toml::table* t = rd.as_table(*n, "log")) load_log(rd, Table(*t, "log"), cfg.log);
  }
  load_pages_table(rd, root, cfg);
}

Result<std::shared_ptr<const Config>> load_checked(const std::string& text, const std::string& name) {
  Reader rd(name);
  // toml++ 3.3 trusts its input to be UTF-8: malformed sequences reach undefined
  // behaviour inside its decoder, so they are reported here instead.
  if (std::optional<TextProblem> bad = find_text_problem(text)) {
    rd.error_at_position(bad->line, bad->column, bad->message);
    return rd.finish();
  }
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    rd.error_at(e.source(), "", std::string(e.description()));
    return rd.finish();
  }
  auto cfg = std::make_shared<Config>();
  cfg->source_path = name;
  cfg->hash = hash_hex(text);
  load_root(rd, root, *cfg);
  if (!rd.ok()) return rd.finish();
  return std::shared_ptr<const Config>(std::move(cfg));
}

}  // namespace

Result<std::shared_ptr<const Config>> load_string(const std::string& text, const std::string& name) {
  try {
    return load_checked(text, name);
  } catch (const std::exception& e) {
    // Only allocation failure can get here; the loader itself reports errors
    // as values.
    return Status::error(name + ": " + e.what());
  }
}

Result<std::shared_ptr<const Config>> load_file(const std::string& path) {
  try {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::error(path + ": cannot read: " + std::strerror(errno));
    std::string text;
    char buf[16384];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::close(fd);
        return Status::error(path + ": cannot read: " + std::strerror(err));
      }
      if (n == 0) break;
      text.append(buf, static_cast<size_t>(n));
      if (text.size() > kMaxFileBytes) {
        ::close(fd);
        return Status::error(path + ": cannot read: larger than 16 MiB, not a config file");
      }
    }
    ::close(fd);
    return load_string(text, path);
  } catch (const std::exception& e) {
    return Status::error(path + ": " + e.what());
  }
}

}  // namespace fg::config
