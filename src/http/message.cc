// Small helpers over the HTTP message value types: case-insensitive header lookup and
// the path part of a request-target.
#include "http/message.h"

namespace fg::http {

const Header* find_header(const std::vector<Header>& headers, std::string_view name) {
  for (const Header& h : headers) {
    if (iequals(h.name, name)) return &h;
  }
  return nullptr;
}

std::string_view RequestHead::path() const {
  std::string_view t = target;
  size_t q = t.find('?');
  return q == std::string_view::npos ? t : t.substr(0, q);
}

}  // namespace fg::http
