// [pages] loading, and the built-in pages: they parse, render every placeholder, carry
// the CSP nonce on every script and style, and pass an HTML structure check.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "pages/pages_config.h"
#include "pages/strings.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
using fg::pages::Language;
using fg::pages::load_pages;
using fg::pages::Page;
using fg::pages::PagesConfig;
using fg::pages::PageValues;
using fg::pages_test::TempDir;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

// Every value set, each distinct so that its presence in the output can be checked.
PageValues all_values(Language lang) {
  PageValues v;
  v.lang = lang;
  v.position = 1234;
  v.wait_seconds = 125;
  v.retry_after = 7;
  v.status = 503;
  v.ticket_url = "/_floodgate/tickets/TICKET1";
  v.poll_url = "/_floodgate/tickets/POLL1";
  v.ticket_id = "TICKET1";
  v.nonce = "NONCE1";
  v.request_id = "REQID1";
  v.message = "MESSAGE1";
  v.detail = "DETAIL1";
  return v;
}

std::string render_builtin(Page p, Language lang) {
  PagesConfig cfg;
  cfg.shop_name = "Tea & <Cakes>";
  auto set = load_pages(cfg, "conf/floodgate.toml");
  INFO(set.message());
  REQUIRE(set.is_ok());
  std::string out;
  (*set)->render(p, all_values(lang), &out);
  return out;
}

}  // namespace

TEST_CASE("the built-in pages are the files in conf/pages", "[pages]") {
  const fs::path dir = fs::path(FG_SOURCE_ROOT) / "conf" / "pages";
  CHECK(fg::pages::builtin_source(Page::kWaiting) == slurp(dir / "waiting.html"));
  CHECK(fg::pages::builtin_source(Page::kDegraded) == slurp(dir / "degraded.html"));
  CHECK(fg::pages::builtin_source(Page::kError) == slurp(dir / "error.html"));
  PageValues v;
  v.nonce = "N";
  std::string out;
  REQUIRE(fg::pages::parse("{{style}}", "t").is_ok());
  fg::pages::parse("{{style}}", "t")->render(v, &out);
  CHECK(out == "<style nonce=\"N\">\n" + slurp(dir / "style.css") + "</style>");
}

TEST_CASE("the waiting page renders every value it needs", "[pages]") {
  const std::string out = render_builtin(Page::kWaiting, Language::kEn);
  CHECK(out.find("{{") == std::string::npos);
  CHECK(out.find("<html lang=\"en\">") != std::string::npos);
  CHECK(out.find("<dd id=\"position\">1234</dd>") != std::string::npos);
  CHECK(out.find("<dd id=\"wait\">about 3 min</dd>") != std::string::npos);
  CHECK(out.find("data-ticket=\"/_floodgate/tickets/TICKET1\"") != std::string::npos);
  CHECK(out.find("data-poll=\"/_floodgate/tickets/POLL1\"") != std::string::npos);
  CHECK(out.find("data-wait=\"125\"") != std::string::npos);
  CHECK(out.find("Tea &amp; &lt;Cakes&gt;") != std::string::npos);
  CHECK(out.find("<Cakes>") == std::string::npos);
  CHECK(out.find("aria-live=\"polite\"") != std::string::npos);
  CHECK(out.find("<meta http-equiv=\"refresh\" content=\"5;url=/_floodgate/tickets/TICKET1\">") !=
        std::string::npos);
  CHECK(out.find("fetch(url, { headers: { Accept: 'application/json' }") != std::string::npos);
  CHECK(out.find("'wait=' + waitFor") != std::string::npos);
  CHECK(out.find("Math.min(25, Math.max(2, s))") != std::string::npos);
  CHECK(out.find("method: 'DELETE'") != std::string::npos);
  CHECK(out.find("TICKET1</p>") != std::string::npos);
}

TEST_CASE("the waiting page in Chinese", "[pages]") {
  const std::string out = render_builtin(Page::kWaiting, Language::kZh);
  CHECK(out.find("<html lang=\"zh-CN\">") != std::string::npos);
  CHECK(out.find("<h1>您正在排队</h1>") != std::string::npos);
  CHECK(out.find("<dd id=\"wait\">约 3 分钟</dd>") != std::string::npos);
  CHECK(out.find("data-minutes=\"约 {n} 分钟\"") != std::string::npos);
}

TEST_CASE("every script and style of the built-in pages carries the nonce", "[pages]") {
  for (Page p : {Page::kWaiting, Page::kDegraded, Page::kError}) {
    const std::string out = render_builtin(p, Language::kEn);
    INFO(out.substr(0, 200));
    // Only the waiting page needs a script; the others work with scripts blocked.
    const size_t scripts = p == Page::kWaiting ? 1 : 0;
    CHECK(count(out, "<script") == scripts);
    CHECK(count(out, "<script nonce=\"NONCE1\">") == scripts);
    CHECK(count(out, "<style") == 1);
    CHECK(count(out, "<style nonce=\"NONCE1\">") == 1);
    // No external assets: nothing is loaded from another URL.
    CHECK(out.find(" src=") == std::string::npos);
    CHECK(out.find("<link") == std::string::npos);
    CHECK(out.find("{{") == std::string::npos);
  }
}

TEST_CASE("the degraded and error pages", "[pages]") {
  const std::string degraded = render_builtin(Page::kDegraded, Language::kEn);
  CHECK(degraded.find("<h1>The shop is very busy</h1>") != std::string::npos);
  CHECK(degraded.find("You can try again in 7 s.") != std::string::npos);
  CHECK(degraded.find("REQID1") != std::string::npos);
  const std::string error = render_builtin(Page::kError, Language::kZh);
  CHECK(error.find("<h1>MESSAGE1</h1>") != std::string::npos);
  CHECK(error.find("<p>DETAIL1</p>") != std::string::npos);
  CHECK(error.find("请在 7 秒后重试。") != std::string::npos);
  CHECK(error.find("data-status=\"503\"") != std::string::npos);
  CHECK(error.find("TICKET1") != std::string::npos);
}

TEST_CASE("the rendered built-in pages are well-formed HTML", "[pages]") {
  TempDir dir;
  std::string args;
  int n = 0;
  for (Page p : {Page::kWaiting, Page::kDegraded, Page::kError}) {
    for (Language lang : {Language::kEn, Language::kZh}) {
      args += " '" + dir.write("page" + std::to_string(++n) + ".html", render_builtin(p, lang)) + "'";
    }
  }
  const std::string check = "/usr/bin/python3 '" FG_SOURCE_ROOT "/tests/unit/pages/check_html.py'";
  CHECK(std::system((check + args).c_str()) == 0);

  // The checker itself fails on what it must catch.
  const std::string ok_head = "<!DOCTYPE html><html lang=\"en\"><head><title>t</title></head><body>";
  const std::string unbalanced = dir.write("bad1.html", ok_head + "<main><div></main></body></html>");
  const std::string two_mains = dir.write("bad2.html", ok_head + "<main></main><main></main></body></html>");
  const std::string no_lang = dir.write("bad3.html",
                                        "<!DOCTYPE html><html><head><title>t</title></head><body><main>"
                                        "</main></body></html>");
  const std::string good = dir.write("good.html", ok_head + "<main><p>x<br></p></main></body></html>");
  CHECK(std::system((check + " '" + good + "' >/dev/null 2>&1").c_str()) == 0);
  CHECK(std::system((check + " '" + unbalanced + "' >/dev/null 2>&1").c_str()) != 0);
  CHECK(std::system((check + " '" + two_mains + "' >/dev/null 2>&1").c_str()) != 0);
  CHECK(std::system((check + " '" + no_lang + "' >/dev/null 2>&1").c_str()) != 0);
}

TEST_CASE("[pages] reads templates relative to the config file", "[pages]") {
  TempDir dir;
  const std::string config = dir.write("floodgate.toml", "");
  dir.write("pages/w.html", "<p>{{shop_name}} #{{position}}</p>");
  PagesConfig cfg;
  cfg.waiting = "pages/w.html";
  cfg.shop_name = "Tea";
  auto set = load_pages(cfg, config);
  INFO(set.message());
  REQUIRE(set.is_ok());
  PageValues v;
  v.position = 3;
  std::string out;
  (*set)->render(Page::kWaiting, v, &out);
  CHECK(out == "<p>Tea #3</p>");
  CHECK((*set)->enabled());
  // Pages not configured stay the built-in ones.
  CHECK((*set)->page(Page::kError).uses(fg::pages::Field::k_message));
}

TEST_CASE("without shop_name the page shows the caller's fallback (the Host)", "[pages]") {
  PagesConfig cfg;
  cfg.enabled = false;
  auto set = load_pages(cfg, "floodgate.toml");
  REQUIRE(set.is_ok());
  CHECK_FALSE((*set)->enabled());
  PageValues v;
  v.shop_name = "shop.example";
  std::string out;
  (*set)->render(Page::kDegraded, v, &out);
  CHECK(out.find("<p class=\"shop\">shop.example</p>") != std::string::npos);
}

TEST_CASE("[pages] errors: every problem, one per line", "[pages]") {
  TempDir dir;
  const std::string config = dir.write("floodgate.toml", "");
  const std::string bad = dir.write("bad.html", "<p>ok</p>\n<p>{{positon}}</p>\n");
  PagesConfig cfg;
  cfg.waiting = "missing.html";
  cfg.error = bad;  // absolute
  cfg.shop_name = "Tea\nShop";
  auto set = load_pages(cfg, config);
  REQUIRE_FALSE(set.is_ok());
  const std::string base = dir.path.string();
  CHECK(set.message() ==
        config + ": pages.waiting: cannot read \"" + base + "/missing.html\": No such file or directory\n" +
            bad + ":2:4: unknown placeholder {{positon}}; known: position, wait_seconds, wait_text, "
                  "retry_after, retry_text, ticket_url, poll_url, ticket_id, shop_name, lang, nonce, "
                  "request_id, status, message, detail, open, style, t:NAME\n" +
            config + ": pages.shop_name: must not contain control characters");

  PagesConfig long_name;
  long_name.shop_name = std::string(201, 'x');
  auto too_long = load_pages(long_name, "f.toml");
  REQUIRE_FALSE(too_long.is_ok());
  CHECK(too_long.message() == "f.toml: pages.shop_name: longer than 200 bytes");
  long_name.shop_name.resize(200);
  CHECK(load_pages(long_name, "f.toml").is_ok());

  // Not a regular file: refused before it is opened (a FIFO would block the loader).
  const std::string fifo = base + "/pipe.html";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  PagesConfig odd;
  odd.waiting = fifo;
  odd.degraded = "/dev/null";
  odd.error = base;
  auto refused = load_pages(odd, config);
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.message() == config + ": pages.waiting: cannot read \"" + fifo + "\": not a regular file\n" + config +
                                 ": pages.degraded: cannot read \"/dev/null\": not a regular file\n" + config +
                                 ": pages.error: cannot read \"" + base + "\": not a regular file");
}
