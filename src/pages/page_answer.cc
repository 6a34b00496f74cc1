// Framing of page answers; the rendering is PageSet's, the headers page_response's.
#include "pages/page_answer.h"

#include <charconv>

#include "http/serialize.h"
#include "pages/negotiation.h"
#include "pages/page_response.h"

namespace fg::pages {

const PageSet* page_set_for(const PageSet* set, const http::RequestHead& head) {
  if (set == nullptr || !set->enabled() || !wants_html(head.headers)) return nullptr;
  return set;
}

PageValues request_values(const http::RequestHead& head, std::string_view request_id) {
  PageValues v;
  v.lang = pick_language(head.headers);
  v.shop_name = head.host;
  v.request_id = request_id;
  return v;
}

std::optional<uint64_t> retry_after_in(std::string_view lines) {
  constexpr std::string_view kName = "Retry-After:";
  for (size_t at = 0; at < lines.size();) {
    size_t end = lines.find("\r\n", at);
    if (end == std::string_view::npos) end = lines.size();
    std::string_view line = lines.substr(at, end - at);
    at = end + 2;
    if (line.size() <= kName.size() || !http::iequals(line.substr(0, kName.size()), kName)) continue;
    std::string_view value = line.substr(kName.size());
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    uint64_t n = 0;
    auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (ec == std::errc() && ptr == value.data() + value.size()) return n;
  }
  return std::nullopt;
}

std::string page_answer(const PageSet& set, Page p, PageValues v, const Framing& f) {
  const Nonce nonce = new_nonce();
  v.nonce = nonce.view();
  v.status = f.status;
  std::string body;
  body.reserve(12 * 1024);
  set.render(p, v, &body);

  std::string out;
  out.reserve(640 + f.extra.size() + (f.head ? 0 : body.size()));
  out += f.http10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  out += std::to_string(f.status);
  out += ' ';
  out += http::reason_phrase(f.status);
  out += "\r\n";
  append_page_header_lines(nonce.view(), &out);
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out.append(f.extra);
  out += "X-Request-Id: ";
  out.append(f.request_id);
  out += "\r\n";
  if (!f.keep_alive) out += "Connection: close\r\n";
  else if (f.http10) out += "Connection: keep-alive\r\n";
  out += "\r\n";
  if (!f.head) out += body;
  return out;
}

}  // namespace fg::pages
