// The `[pages]` table: which templates Floodgate renders for browsers, and the shop
// name they show. Loading reads and parses the templates once, off the loops; the
// resulting PageSet is immutable and shared by every worker through the config
// snapshot, so a reload swaps pages together with the rest of the config.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "floodgate/status.h"
#include "pages/template.h"

namespace fg::pages {

// The keys of `[pages]`, as the TOML loader reads them. An empty path means the
// built-in page compiled from conf/pages/.
struct PagesConfig {
  std::string waiting;    // pages.waiting: 202 ticket answers and queued/processing ticket polls
  std::string degraded;   // pages.degraded: the [degrade] answer
  std::string error;      // pages.error: Floodgate's own 429 and 503
  std::string shop_name;  // pages.shop_name: shown in titles and headings; "": the request's Host
  bool enabled = true;    // pages.enabled: false keeps JSON for every client, browsers included
};

// Every key of `[pages]`, for the loader's unknown-key check.
inline constexpr std::string_view kPagesKeys[] = {"waiting", "degraded", "error", "shop_name", "enabled"};

// Longest accepted shop_name, in bytes.
inline constexpr size_t kMaxShopNameBytes = 200;

enum class Page { kWaiting, kDegraded, kError };

class PageSet {
 public:
  const Template& page(Page p) const;
  const std::string& shop_name() const { return shop_name_; }
  bool enabled() const { return enabled_; }

  // Appends page `p` for `v` to *out. A configured shop_name replaces v.shop_name (which
  // the caller sets to the request's Host, the fallback when none is configured).
  // Any thread; no allocation beyond the growth of *out.
  void render(Page p, PageValues v, std::string* out) const;

 private:
  friend Result<std::shared_ptr<const PageSet>> load_pages(const PagesConfig&, std::string_view);
  Template waiting_;
  Template degraded_;
  Template error_;
  std::string shop_name_;
  bool enabled_ = true;
};

// Validates `cfg` and reads and parses its templates. Relative paths are resolved
// against the directory of `config_file` (the TOML file the keys came from). Every
// problem is reported, one per line:
//   "CONFIG: pages.waiting: cannot read \"PATH\": REASON"
//   "PATH:LINE:COL: unknown placeholder {{...}}; known: ..."   (template errors)
//   "CONFIG: pages.shop_name: ..."
// Called at startup, by --check and on reload; never on a loop.
Result<std::shared_ptr<const PageSet>> load_pages(const PagesConfig& cfg, std::string_view config_file);

// The built-in page sources (conf/pages/*.html as they were at build time).
std::string_view builtin_source(Page p);

}  // namespace fg::pages
