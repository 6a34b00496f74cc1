// HTML-or-JSON and language choice on header sets captured from real browsers and clients.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "pages/negotiation.h"

using fg::http::Header;
using fg::pages::Language;
using fg::pages::pick_language;
using fg::pages::wants_html;

namespace {

constexpr const char* kChromeNavAccept =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,"
    "application/signed-exchange;v=b3;q=0.7";
constexpr const char* kFirefoxNavAccept =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
constexpr const char* kSafariNavAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

}  // namespace

TEST_CASE("browser navigations get a page", "[pages]") {
  SECTION("Chrome form POST") {
    std::vector<Header> h = {{"Host", "shop.example"},
                             {"Content-Type", "application/x-www-form-urlencoded"},
                             {"Accept", kChromeNavAccept},
                             {"Sec-Fetch-Site", "same-origin"},
                             {"Sec-Fetch-Mode", "navigate"},
                             {"Sec-Fetch-User", "?1"},
                             {"Sec-Fetch-Dest", "document"},
                             {"Accept-Language", "zh-CN,zh;q=0.9,en;q=0.8"}};
    CHECK(wants_html(h));
  }
  SECTION("Firefox navigation") {
    std::vector<Header> h = {{"accept", kFirefoxNavAccept}, {"sec-fetch-mode", "navigate"},
                             {"sec-fetch-dest", "document"}};
    CHECK(wants_html(h));
  }
  SECTION("Safari navigation without Sec-Fetch headers decides by Accept alone") {
    std::vector<Header> h = {{"Accept", kSafariNavAccept}, {"User-Agent", "Mozilla/5.0 (iPhone) Safari/604.1"}};
    CHECK(wants_html(h));
  }
  SECTION("a navigation without Accept") { CHECK(wants_html("navigate", "")); }
  SECTION("a navigation accepting anything") { CHECK(wants_html("navigate", "*/*")); }
  SECTION("Accept preferring html by q-value") {
    CHECK(wants_html("", "application/json;q=0.5, text/html"));
    CHECK(wants_html("", "TEXT/HTML"));
    CHECK(wants_html("", "text/*"));
    CHECK(wants_html("", "application/xhtml+xml"));
  }
}

TEST_CASE("API clients and scripts keep JSON", "[pages]") {
  SECTION("curl") {
    std::vector<Header> h = {{"Host", "shop.example"}, {"User-Agent", "curl/7.88.1"}, {"Accept", "*/*"}};
    CHECK_FALSE(wants_html(h));
  }
  SECTION("Python requests") {
    std::vector<Header> h = {{"User-Agent", "python-requests/2.28.1"},
                             {"Accept-Encoding", "gzip, deflate"},
                             {"Accept", "*/*"},
                             {"Connection", "keep-alive"}};
    CHECK_FALSE(wants_html(h));
  }
  SECTION("Go net/http sends no Accept") {
    std::vector<Header> h = {{"User-Agent", "Go-http-client/1.1"}, {"Accept-Encoding", "gzip"}};
    CHECK_FALSE(wants_html(h));
  }
  SECTION("Chrome fetch() with default headers") {
    std::vector<Header> h = {{"Accept", "*/*"}, {"Sec-Fetch-Mode", "cors"}, {"Sec-Fetch-Dest", "empty"}};
    CHECK_FALSE(wants_html(h));
  }
  SECTION("the waiting page's own long-poll") {
    std::vector<Header> h = {{"Accept", "application/json"}, {"Sec-Fetch-Mode", "same-origin"},
                             {"Sec-Fetch-Dest", "empty"}};
    CHECK_FALSE(wants_html(h));
  }
  SECTION("Firefox XHR") {
    std::vector<Header> h = {{"Accept", "*/*"}, {"X-Requested-With", "XMLHttpRequest"}, {"Sec-Fetch-Mode", "cors"}};
    CHECK_FALSE(wants_html(h));
  }
  SECTION("Safari fetch()") { CHECK_FALSE(wants_html("", "*/*")); }
  SECTION("axios and jQuery") {
    CHECK_FALSE(wants_html("cors", "application/json, text/plain, */*"));
    CHECK_FALSE(wants_html("cors", "application/json, text/javascript, */*; q=0.01"));
  }
  SECTION("a navigation that asks for JSON only") { CHECK_FALSE(wants_html("navigate", "application/json")); }
  SECTION("html refused with q=0") { CHECK_FALSE(wants_html("", "text/html;q=0, */*")); }
  SECTION("html ranked below json") { CHECK_FALSE(wants_html("", "text/html;q=0.5, application/json")); }
  SECTION("a malformed q-value drops its element") {
    CHECK_FALSE(wants_html("", "text/html;q=abc, application/json"));
    CHECK_FALSE(wants_html("", "text/html;q=1.5"));
  }
}

TEST_CASE("several Accept header lines count as one list", "[pages]") {
  std::vector<Header> tie = {{"Accept", "application/json"}, {"Accept", "text/html"}};
  CHECK_FALSE(wants_html(tie));
  std::vector<Header> html = {{"Accept", "application/json;q=0.5"}, {"Accept", "text/html;q=0.9"}};
  CHECK(wants_html(html));
}

TEST_CASE("Chinese for zh tags, English otherwise, by q-value", "[pages]") {
  CHECK(pick_language("zh") == Language::kZh);
  CHECK(pick_language("zh-CN") == Language::kZh);
  CHECK(pick_language("zh-TW") == Language::kZh);
  CHECK(pick_language("zh-Hans-CN") == Language::kZh);
  CHECK(pick_language("zh_CN") == Language::kZh);
  CHECK(pick_language("ZH-cn") == Language::kZh);
  CHECK(pick_language("zh-CN,zh;q=0.9,en;q=0.8") == Language::kZh);  // Chrome in Chinese
  CHECK(pick_language("zh-TW,zh;q=0.9,en-US;q=0.8,en;q=0.7") == Language::kZh);
  CHECK(pick_language("en-US,en;q=0.9,zh-CN;q=0.8,zh;q=0.7") == Language::kEn);
  CHECK(pick_language("en;q=0.3, zh;q=0.8") == Language::kZh);
  CHECK(pick_language("fr-FR,fr;q=0.9,zh;q=0.5") == Language::kZh);
  CHECK(pick_language("fr-FR,fr;q=0.9") == Language::kEn);
  CHECK(pick_language("") == Language::kEn);
  CHECK(pick_language("*") == Language::kEn);
  CHECK(pick_language("zh;q=0") == Language::kEn);
  CHECK(pick_language("en;q=0, *;q=0.5") == Language::kZh);
  CHECK(pick_language("zh, en") == Language::kZh);  // equal q: the earlier range
  CHECK(pick_language("en, zh") == Language::kEn);
  CHECK(pick_language("zh;q=oops, en;q=0.1") == Language::kEn);
}

TEST_CASE("language from the request headers", "[pages]") {
  CHECK(pick_language(std::vector<Header>{{"accept-language", "zh-CN"}}) == Language::kZh);
  CHECK(pick_language(std::vector<Header>{{"Accept", "*/*"}}) == Language::kEn);
  CHECK(fg::pages::language_tag(Language::kZh) == "zh-CN");
  CHECK(fg::pages::language_tag(Language::kEn) == "en");
}
