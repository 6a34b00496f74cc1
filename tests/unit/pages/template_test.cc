// Template parsing (exact error messages) and rendering (escaping, numbers, languages).
#include <catch2/catch.hpp>

#include <string>

#include "pages/strings.h"
#include "pages/template.h"

using fg::pages::Field;
using fg::pages::Language;
using fg::pages::PageValues;
using fg::pages::parse;
using fg::pages::Template;

namespace {

std::string parse_error(std::string_view text) {
  auto r = parse(text, "shop/waiting.html");
  REQUIRE_FALSE(r.is_ok());
  return r.message();
}

std::string render(std::string_view text, const PageValues& v) {
  auto r = parse(text, "t.html");
  INFO(r.message());
  REQUIRE(r.is_ok());
  return r->render(v);
}

}  // namespace

TEST_CASE("template parse errors name FILE:LINE:COL", "[pages]") {
  CHECK(parse_error("<p>{{postion}}</p>") ==
        "shop/waiting.html:1:4: unknown placeholder {{postion}}; known: position, wait_seconds, wait_text, "
        "retry_after, retry_text, ticket_url, poll_url, ticket_id, shop_name, lang, nonce, request_id, "
        "status, message, detail, open, style, t:NAME");
  // Columns count characters, not bytes: the Chinese text is two characters.
  CHECK(parse_error("<p>\n排队 {{position</p>\n") ==
        "shop/waiting.html:2:4: unclosed placeholder: '{{' without '}}' on the same line");
  CHECK(parse_error("{{position\n}}") ==
        "shop/waiting.html:1:1: unclosed placeholder: '{{' without '}}' on the same line");
  CHECK(parse_error("a {{ {{position}}") ==
        "shop/waiting.html:1:3: unclosed placeholder: '{{' without '}}' on the same line");
  CHECK(parse_error("{{}}").rfind("shop/waiting.html:1:1: unknown placeholder {{}}; known: ", 0) == 0);
  CHECK(parse_error("<h1>{{t:titel}}</h1>") ==
        "shop/waiting.html:1:5: unknown language string {{t:titel}}; known: " + fg::pages::text_names());
  CHECK(fg::pages::text_names().rfind("title_waiting, waiting_intro, position, ", 0) == 0);
}

TEST_CASE("no placeholder inside a script or style element", "[pages]") {
  CHECK(parse_error("<script nonce=\"{{nonce}}\">var shop = '{{shop_name}}';</script>") ==
        "shop/waiting.html:1:39: {{shop_name}} inside a <script> element: HTML escaping does not make a "
        "value safe there; put it in a data- attribute and read it from the script");
  CHECK(parse_error("<STYLE nonce=\"{{nonce}}\">\nb::after { content: '{{t:cancel}}' }</STYLE>") ==
        "shop/waiting.html:2:22: {{t:cancel}} inside a <style> element: HTML escaping does not make a "
        "value safe there; put it in a data- attribute and read it from the script");
  // The start tag may carry the nonce, and text after the element may use anything.
  CHECK(parse("<script nonce=\"{{nonce}}\">go()</script><p>{{shop_name}}</p>", "t").is_ok());
  CHECK(parse("<style nonce=\"{{nonce}}\">b{}</style>{{position}}", "t").is_ok());
  // Neither <scripts> nor <styled> opens a raw-text element.
  CHECK(parse("<scripts>{{position}}</scripts>", "t").is_ok());
}

TEST_CASE("every script and style start tag carries the nonce", "[pages]") {
  CHECK(parse_error("<p>{{position}}</p>\n  <script>go()</script>") ==
        "shop/waiting.html:2:3: <script> without nonce=\"{{nonce}}\": the Content-Security-Policy of the "
        "pages would block it");
  CHECK(parse_error("<style media=\"screen\">b{}</style>") ==
        "shop/waiting.html:1:1: <style> without nonce=\"{{nonce}}\": the Content-Security-Policy of the "
        "pages would block it");
  // Another placeholder in the tag is not the nonce.
  CHECK(parse_error("<script data-x=\"{{lang}}\">go()</script>").rfind("shop/waiting.html:1:1: <script> without", 0) ==
        0);
  CHECK(parse("<script src=\"/a.js\" nonce=\"{{nonce}}\"></script>", "t").is_ok());
}

TEST_CASE("every value is HTML-escaped", "[pages]") {
  PageValues v;
  v.shop_name = "<script>alert(\"x\")</script> & 'co'";
  v.message = "<b>";
  v.ticket_url = "/_floodgate/tickets/a\"b";
  const std::string out = render("<h1>{{shop_name}}</h1><a href=\"{{ticket_url}}\">{{message}}</a>", v);
  CHECK(out ==
        "<h1>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;co&#39;</h1>"
        "<a href=\"/_floodgate/tickets/a&quot;b\">&lt;b&gt;</a>");
}

TEST_CASE("rendering numbers, derived sentences and languages", "[pages]") {
  const char* text =
      "<html lang=\"{{lang}}\">{{ position }}|{{wait_seconds}}|{{wait_text}}|{{retry_after}}|{{retry_text}}|"
      "{{status}}|{{t:title_waiting}}|{{open}}x}}";
  PageValues v;
  v.position = 42;
  v.wait_seconds = 61;
  v.retry_after = 5;
  v.status = 503;
  CHECK(render(text, v) ==
        "<html lang=\"en\">42|61|about 2 min|5|You can try again in 5 s.|503|You are in line|{{x}}");
  v.lang = Language::kZh;
  v.wait_seconds = 59;
  CHECK(render(text, v) == "<html lang=\"zh-CN\">42|59|不到 1 分钟|5|请在 5 秒后重试。|503|您正在排队|{{x}}");
  SECTION("missing values render as nothing") {
    CHECK(render(text, PageValues{}) == "<html lang=\"en\">||||||You are in line|{{x}}");
  }
  SECTION("a position of zero is a value") {
    PageValues z;
    z.position = 0;
    CHECK(render("{{position}}", z) == "0");
  }
}

TEST_CASE("render appends and a template reports what it uses", "[pages]") {
  auto t = parse("a{{nonce}}b", "t");
  REQUIRE(t.is_ok());
  PageValues v;
  v.nonce = "N1";
  std::string out = "head:";
  t->render(v, &out);
  t->render(v, &out);
  CHECK(out == "head:aN1baN1b");
  CHECK(t->uses(Field::k_nonce));
  CHECK_FALSE(t->uses(Field::k_position));
}

TEST_CASE("{{style}} writes the built-in stylesheet with the nonce", "[pages]") {
  PageValues v;
  v.nonce = "a\"b";
  const std::string out = render("<head>{{style}}</head>", v);
  CHECK(out.rfind("<head><style nonce=\"a&quot;b\">\n/* The stylesheet of the built-in pages;", 0) == 0);
  CHECK(out.find("--accent") != std::string::npos);
  CHECK(out.size() - out.rfind("</style></head>") == 15);
  CHECK(render("{{style}}", PageValues{}).rfind("<style>\n/*", 0) == 0);
}

TEST_CASE("wait phrases and refusal sentences", "[pages]") {
  std::string s;
  fg::pages::format_wait(0, Language::kEn, &s);
  CHECK(s == "less than a minute");
  s.clear();
  fg::pages::format_wait(60, Language::kEn, &s);
  CHECK(s == "about 1 min");
  s.clear();
  fg::pages::format_wait(3601, Language::kZh, &s);
  CHECK(s == "约 61 分钟");
  using fg::pages::refusal_message;
  CHECK(refusal_message(429, "too_many_tickets", Language::kEn) ==
        "You already have requests waiting in line. Please wait for them to finish.");
  CHECK(refusal_message(503, "queue_full", Language::kZh) == "当前排队人数已满。");
  CHECK(refusal_message(429, "", Language::kEn) == "You are sending requests faster than the shop can take them.");
  CHECK(refusal_message(503, "busy", Language::kEn) == "The service is temporarily unavailable.");
}
