// The ticket endpoint stage of the request pipeline: requests under
// server.tickets_path are answered from Redis (poll, long-poll, cancel), never by the
// shop, and come before routing so that no route limit applies to them (a waiting
// user must never be locked out by refreshing). This part only reads the request
// line; the answers are built by the session. No libuv, no sockets.
#pragma once

#include <string>
#include <string_view>

namespace fg::queue {

struct TicketRequest {
  bool matches = false;         // the path is under tickets_path
  bool method_allowed = false;  // GET, HEAD or DELETE
  bool cancel = false;          // DELETE
  std::string id;               // the rest of the path (validated later, against Redis' format)
  int wait_s = 0;               // ?wait=N long-poll, capped at 30 s
};

inline constexpr int kMaxTicketWaitS = 30;

TicketRequest parse_ticket_request(std::string_view method, std::string_view target, std::string_view path,
                                   std::string_view tickets_path);

}  // namespace fg::queue
