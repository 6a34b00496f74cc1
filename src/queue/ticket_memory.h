// A worker's memory of the tickets it has read: polls of a ticket whose state it has
// seen are answered from here, and Redis is read only for tickets it has not seen (or
// whose state changed since). Kept correct by the ticket change channel: every state
// change of a ticket is published (queue_store.h), and a change drops the ticket from
// memory; the dispatch progress of each route (its `taken` counter, published by the
// scripts that take a ticket out of the queued state) keeps `position` fresh without
// a read per poll.
//
// Staleness bound: an answer from memory is at most as old as the delivery of the last
// published change (the same path that wakes long-polls, normally well under a
// millisecond), and never older than kMaxAgeMs for a ticket still owed a delivery, so
// a change lost without the notification connection noticing it (it is trusted only
// while subscribed; every (re)subscription forgets everything) is corrected within
// that time. Finished tickets (done, failed, cancelled) never change again; they are
// kept until their hash expires in Redis (its PTTL at the read).
//
// Bounded: at most kMaxEntries tickets and kMaxBytes of stored answers, least
// recently used first out; answers larger than kMaxEntryBytes are not kept.
// Loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

#include "queue/queue_store.h"

namespace fg::queue {

class TicketMemory {
 public:
  static constexpr uint64_t kMaxAgeMs = 2000;
  static constexpr size_t kMaxEntries = 100000;
  static constexpr size_t kMaxBytes = 64u << 20;
  static constexpr size_t kMaxEntryBytes = 256u << 10;

  // Copies the view of `ticket` as last read into `out`, with `taken` raised to the
  // route's published progress; false when it must be read from Redis.
  bool find(std::string_view ticket, uint64_t now_ms, TicketView* out);

  // A read of `ticket` from Redis is about to be sent. Pair it with exactly one
  // end_read(): a change published meanwhile keeps that read out of memory.
  void begin_read(const std::string& ticket);
  // The read's answer, `ttl_ms` the hash's PTTL then (-1: none). Kept when it is a
  // ticket's state, no change of it was published since begin_read(), and the change
  // channel was up all along. Returns true when a change of the ticket was published
  // (or the channel went down) while the read was out: the answer may be older than
  // that change, whose notification has already passed, so a long-poll must read again
  // rather than wait on it.
  bool end_read(const std::string& ticket, const TicketView& v, int64_t ttl_ms, uint64_t now_ms);

  // A change published on the ticket channel: "<ticket>", optionally followed by
  // " <route> <taken>" (the route's taken counter after the change).
  void changed(std::string_view payload);
  // Drops `ticket` (its state is being changed here, e.g. a lazy expiry).
  void forget(std::string_view ticket);
  // The change channel is (re)subscribed or lost: changes may have been missed, so
  // everything is forgotten and reads in flight are not kept.
  void reset();
  // Whether changes are being received; while not, find() answers nothing and nothing
  // is kept.
  void set_live(bool live);
  // The route's dispatch progress as published (0: nothing seen).
  int64_t taken(std::string_view route) const;

  size_t size() const { return entries_.size(); }
  size_t bytes() const { return bytes_; }

 private:
  struct Entry {
    TicketView view;
    uint64_t expires_ms;
    size_t bytes;
    std::list<std::string>::iterator lru;
  };
  void erase(std::unordered_map<std::string, Entry>::iterator it);
  static bool final_state(TicketView::Kind k);

  bool live_ = false;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // front: most recently used
  size_t bytes_ = 0;
  // Reads in flight per ticket: count, and whether a change was published meanwhile.
  struct Reading {
    int count = 0;
    bool changed = false;
  };
  std::unordered_map<std::string, Reading> reading_;
  std::unordered_map<std::string, int64_t> taken_;  // route -> progress
};

}  // namespace fg::queue
