// Floodgate's own answers as pages: whether a request gets one, and the complete
// response (status line, page headers, the kept headers of the JSON answer, body).
// Every own answer that may become a page (tickets, [degrade], 429/503) goes through
// these two calls; forwarded and replayed shop answers never do.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "http/message.h"
#include "pages/pages_config.h"

namespace fg::pages {

// The page set to answer `head` with, or null when it gets JSON: no set loaded,
// [pages] enabled = false, or not a browser navigation (wants_html).
const PageSet* page_set_for(const PageSet* set, const http::RequestHead& head);

// The values every page of an answer to `head` carries: its language, the shop name
// fallback (the Host), the request id. The caller adds the page's own fields.
PageValues request_values(const http::RequestHead& head, std::string_view request_id);

// The seconds of a "Retry-After: N\r\n" line among `header_lines`, if any.
std::optional<uint64_t> retry_after_in(std::string_view header_lines);

// How the answer is framed for the request it answers.
struct Framing {
  int status = 200;
  bool http10 = false;
  bool keep_alive = true;
  bool head = false;              // HEAD: the headers only (Content-Length of the page)
  std::string_view request_id;
  std::string_view extra;         // header lines kept from the JSON answer: Location, Retry-After, ...
};

// The whole response: page `p` rendered for `v` (with a fresh CSP nonce and the status
// of `f`), Content-Length, the page headers (pages/page_response.h), `f.extra`,
// X-Request-Id and Connection. No ETag: it would name the JSON representation.
std::string page_answer(const PageSet& set, Page p, PageValues v, const Framing& f);

}  // namespace fg::pages
