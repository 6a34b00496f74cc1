// Who gets a page instead of JSON, and in which language. Pure functions over request
// headers: no allocation, no libuv; any thread may call them.
#pragma once

#include <string_view>
#include <vector>

#include "http/message.h"
#include "pages/language.h"

namespace fg::pages {

// True when the request is a browser navigation that should see an HTML page:
// `Sec-Fetch-Mode: navigate` (unless Accept prefers JSON over HTML), or an Accept
// header that ranks text/html (or application/xhtml+xml) above application/json by
// q-value. `*/*` ranks both equally, so curl, Python requests, Go, fetch() and XHR
// with default headers keep the JSON contract. Several Accept headers count as one
// comma-joined list.
bool wants_html(const std::vector<http::Header>& headers);
bool wants_html(std::string_view sec_fetch_mode, std::string_view accept);

// The page language for an Accept-Language value: Chinese for any `zh` tag (zh,
// zh-CN, zh-TW, zh-Hans, ...), English for `en` tags; the higher q-value wins, the
// earlier range breaks a tie, and English is the default (also for an empty or
// unparsable header). `q=0` excludes a language.
Language pick_language(std::string_view accept_language);
Language pick_language(const std::vector<http::Header>& headers);

}  // namespace fg::pages
