// What an HTML answer carries besides its body: a fresh CSP nonce and the headers that
// make the page safe to show (its own Content-Security-Policy, no caching, no sniffing,
// no Referer with the secret ticket URL). Any thread; nothing here blocks.
#pragma once

#include <string_view>
#include <vector>

#include "http/message.h"

namespace fg::pages {

// 128 random bits as 22 base64url characters: unguessable per answer, so an injected
// script without it does not run under the page's CSP.
struct Nonce {
  char text[23] = {};
  std::string_view view() const { return std::string_view(text, 22); }
};

// A new nonce from getrandom(2), which does not block once the kernel's pool is
// initialised (long before a server starts). Aborts if the kernel cannot give
// randomness, because a predictable nonce would silently void the CSP.
Nonce new_nonce();

// The Content-Security-Policy of Floodgate's pages: nothing loads from anywhere; only
// the inline script and style carrying `nonce` run; fetch() may reach this origin only.
std::string content_security_policy(std::string_view nonce);

// Appends the headers of an HTML page answer: Content-Type (text/html; charset=utf-8),
// Cache-Control: no-store, Content-Security-Policy for `nonce`, X-Content-Type-Options,
// Referrer-Policy: no-referrer, and Vary: Accept, Sec-Fetch-Mode, Accept-Language (the
// same URL answers JSON or a page in one of two languages). The caller keeps the
// headers of the JSON answer it replaces that are not about the body (Location,
// Retry-After, ETag) and adds Content-Length.
void add_page_headers(std::string_view nonce, std::vector<http::Header>* headers);

// The same headers as "Name: value\r\n" lines appended to *out, for answers built as
// text (the `extra` of http::make_error_response and its kin).
void append_page_header_lines(std::string_view nonce, std::string* out);

}  // namespace fg::pages
