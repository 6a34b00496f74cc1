// The [pages] table as the config loader reads it: keys, types, template files resolved
// next to the config file, and template errors reported in the loader's FILE:LINE:COL
// form (so --check and reload refuse a broken template like any other config error).
#include <catch2/catch.hpp>

#include <string>

#include "../config/config_test_support.h"
#include "pages/pages_config.h"
#include "temp_dir.h"

using Catch::Matchers::Contains;
using fg::config_test::kMinimal;
using fg::config_test::load_error;
using fg::config_test::load_ok;
using fg::pages_test::TempDir;

namespace {

const std::string kGoodPage =
    "<!DOCTYPE html><html lang=\"{{lang}}\"><title>{{shop_name}}</title><main>{{position}}</main></html>\n";

}  // namespace

TEST_CASE("without [pages] the built-in pages are loaded and enabled", "[config][pages]") {
  auto cfg = load_ok(kMinimal);
  REQUIRE(cfg->pages != nullptr);
  CHECK(cfg->pages->enabled());
  CHECK(cfg->pages->shop_name().empty());
  CHECK(cfg->pages->page(fg::pages::Page::kWaiting).uses(fg::pages::Field::k_position));
}

TEST_CASE("[pages] keys: enabled, shop_name", "[config][pages]") {
  auto cfg = load_ok(kMinimal + "[pages]\nenabled = false\nshop_name = \"Starfall Games\"\n");
  REQUIRE(cfg->pages != nullptr);
  CHECK_FALSE(cfg->pages->enabled());
  CHECK(cfg->pages->shop_name() == "Starfall Games");
}

TEST_CASE("[pages] unknown keys and wrong types", "[config][pages]") {
  CHECK(load_error(kMinimal + "[pages]\nwaitng = \"w.html\"\n") ==
        "test.toml:12:1: pages.waitng: unknown key (did you mean \"waiting\"?)");
  CHECK(load_error(kMinimal + "[pages]\nenabled = \"yes\"\n") ==
        "test.toml:12:11: pages.enabled: expected true or false, got string");
  CHECK_THAT(load_error(kMinimal + "[pages]\nerror = 3\n"), Contains("test.toml:12:9: pages.error: expected a string"));
  CHECK_THAT(load_error("pages = 1\n" + kMinimal), Contains("test.toml:1:9: pages: expected a table"));
}

TEST_CASE("[pages] templates are read next to the config file and checked at load", "[config][pages]") {
  TempDir d;
  d.write("waiting.html", kGoodPage);
  const std::string conf = d.write("floodgate.toml", kMinimal + "[pages]\nwaiting = \"waiting.html\"\n");
  auto ok = fg::config::load_file(conf);
  INFO(ok.message());
  REQUIRE(ok.is_ok());
  fg::pages::PageValues v;
  v.position = 7;
  v.shop_name = "s";
  CHECK_THAT(ok.value()->pages->page(fg::pages::Page::kWaiting).render(v), Contains("<main>7</main>"));

  // A broken template fails the load with the template's own position; a missing one
  // names the key and the path it tried.
  d.write("waiting.html", "<!DOCTYPE html>\n<p>\n  {{postion}}</p>\n");
  const std::string conf2 =
      d.write("floodgate.toml", kMinimal + "[pages]\nwaiting = \"waiting.html\"\nerror = \"nope.html\"\n");
  auto bad = fg::config::load_file(conf2);
  REQUIRE_FALSE(bad.is_ok());
  CHECK_THAT(bad.message(), Contains(d.path.string() + "/waiting.html:3:3: unknown placeholder {{postion}}"));
  CHECK_THAT(bad.message(), Contains(conf2 + ": pages.error: cannot read \"" + d.path.string() + "/nope.html\": "));
}

TEST_CASE("[pages] errors are reported together with the rest of the file's", "[config][pages]") {
  const std::string msg =
      load_error(kMinimal + "[pages]\nshop_name = \"a\\u0007b\"\n\n[log]\nacces = true\n");
  CHECK_THAT(msg, Contains("test.toml:15:1: log.acces: unknown key"));
  CHECK_THAT(msg, Contains("test.toml: pages.shop_name: must not contain control characters"));
}
