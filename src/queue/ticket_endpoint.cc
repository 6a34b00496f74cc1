// Reading a ticket request (see ticket_endpoint.h).
#include "queue/ticket_endpoint.h"

#include <algorithm>

namespace fg::queue {

TicketRequest parse_ticket_request(std::string_view method, std::string_view target, std::string_view path,
                                   std::string_view tickets_path) {
  TicketRequest t;
  if (path.size() < tickets_path.size() || path.compare(0, tickets_path.size(), tickets_path) != 0) return t;
  t.matches = true;
  t.cancel = method == "DELETE";
  t.method_allowed = method == "GET" || method == "HEAD" || t.cancel;
  if (!t.method_allowed) return t;
  t.id = std::string(path.substr(tickets_path.size()));
  size_t q = target.find('?');
  if (q != std::string_view::npos) {
    std::string_view query = target.substr(q + 1);
    size_t w = query.find("wait=");
    if (w != std::string_view::npos && (w == 0 || query[w - 1] == '&')) {
      int v = 0;
      for (size_t i = w + 5; i < query.size() && query[i] >= '0' && query[i] <= '9' && v < 1000; i++)
        v = v * 10 + (query[i] - '0');
      t.wait_s = std::min(v, kMaxTicketWaitS);
    }
  }
  return t;
}

}  // namespace fg::queue
