// Loading `[pages]`: file reading and template parsing, reported in the loader's style.
#include "pages/pages_config.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "builtin_pages.h"  // generated from conf/pages/ by embed_pages.py

namespace fg::pages {
namespace {

// A template file larger than this is a wrong path; parse() repeats the bound for
// text that does not come from a file.
constexpr std::streamoff kMaxFileBytes = 1 << 20;

std::string resolve(const std::string& path, std::string_view config_file) {
  if (path.empty() || path.front() == '/') return path;
  const size_t slash = config_file.rfind('/');
  if (slash == std::string_view::npos) return path;
  return std::string(config_file.substr(0, slash + 1)) + path;
}

// Reads `path` into *out; on failure returns the reason. Only a regular file is opened:
// opening a FIFO or a terminal would block the loader (a reload runs on the main loop).
std::string read_file(const std::string& path, std::string* out) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::strerror(errno);
  if (!S_ISREG(st.st_mode)) return "not a regular file";
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::strerror(errno);
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) return "not a regular file";
  if (size > kMaxFileBytes) return "larger than 1 MiB";
  in.seekg(0);
  out->resize(static_cast<size_t>(size));
  if (!in.read(out->data(), size)) return "read failed";
  return {};
}

// Loads one page into *t; appends any error line to *errors.
void load_one(const std::string& key, const std::string& configured, Page which, std::string_view config_file,
              Template* t, std::string* errors) {
  auto add = [errors](const std::string& line) {
    if (!errors->empty()) *errors += '\n';
    *errors += line;
  };
  std::string source;
  std::string name;
  if (configured.empty()) {
    source = std::string(builtin_source(which));
    name = "<built-in " + key + ".html>";
  } else {
    name = resolve(configured, config_file);
    const std::string why = read_file(name, &source);
    if (!why.empty()) {
      add(std::string(config_file) + ": pages." + key + ": cannot read \"" + name + "\": " + why);
      return;
    }
  }
  auto parsed = parse(source, name);
  if (!parsed) {
    add(parsed.message());
    return;
  }
  *t = std::move(parsed.value());
}

}  // namespace

std::string_view builtin_source(Page p) {
  switch (p) {
    case Page::kWaiting: return kBuiltinWaiting;
    case Page::kDegraded: return kBuiltinDegraded;
    case Page::kError: return kBuiltinError;
  }
  return {};
}

const Template& PageSet::page(Page p) const {
  switch (p) {
    case Page::kWaiting: return waiting_;
    case Page::kDegraded: return degraded_;
    case Page::kError: return error_;
  }
  return error_;
}

void PageSet::render(Page p, PageValues v, std::string* out) const {
  if (!shop_name_.empty()) v.shop_name = shop_name_;
  page(p).render(v, out);
}

Result<std::shared_ptr<const PageSet>> load_pages(const PagesConfig& cfg, std::string_view config_file) {
  auto set = std::make_shared<PageSet>();
  std::string errors;
  load_one("waiting", cfg.waiting, Page::kWaiting, config_file, &set->waiting_, &errors);
  load_one("degraded", cfg.degraded, Page::kDegraded, config_file, &set->degraded_, &errors);
  load_one("error", cfg.error, Page::kError, config_file, &set->error_, &errors);

  std::string why;
  if (cfg.shop_name.size() > kMaxShopNameBytes) {
    why = "longer than " + std::to_string(kMaxShopNameBytes) + " bytes";
  }
  for (unsigned char c : cfg.shop_name) {
    if (c < 0x20 || c == 0x7f) why = "must not contain control characters";
  }
  if (!why.empty()) {
    if (!errors.empty()) errors += '\n';
    errors += std::string(config_file) + ": pages.shop_name: " + why;
  }
  if (!errors.empty()) return Status::error(std::move(errors));
  set->shop_name_ = cfg.shop_name;
  set->enabled_ = cfg.enabled;
  return std::shared_ptr<const PageSet>(std::move(set));
}

}  // namespace fg::pages
