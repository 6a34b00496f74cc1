// Sentinel discovery shared by the clients of a process (see sentinel.h).
#include "redis/sentinel.h"

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "core/log.h"

namespace fg::redis {

namespace {

// After a +switch-master, query answers still naming the old master are ignored this
// long: the Sentinels that have not heard of the failover catch up well within it.
constexpr uint64_t kRetiredMs = 10000;
// Every Sentinel is asked at least this often, so a missed announcement (all
// subscriptions down at the moment of the failover) is noticed anyway.
constexpr uint64_t kRefreshMs = 1000;
constexpr uint64_t kSentinelTimeoutMs = 1000;

bool parse_port(std::string_view s, uint16_t* port) {
  if (s.empty() || s.size() > 5) return false;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v == 0 || v > 65535) return false;
  *port = static_cast<uint16_t>(v);
  return true;
}

bool is_text(const Reply& r) { return r.type == Reply::Type::kString || r.type == Reply::Type::kStatus; }

std::string key_of(const SentinelSet& set) {
  std::string k = set.master_name;
  k += '\n';
  k += set.password;
  for (const SentinelSet::Address& a : set.addresses) {
    k += '\n';
    k += a.host;
    k += ':';
    k += std::to_string(a.port);
  }
  return k;
}

std::mutex registry_mu;
std::map<std::string, std::weak_ptr<SentinelWatch>>& registry() {
  static auto* r = new std::map<std::string, std::weak_ptr<SentinelWatch>>;
  return *r;
}

}  // namespace

bool parse_master_addr(const Reply& reply, std::string* host, uint16_t* port) {
  if (reply.type != Reply::Type::kArray || reply.elements.size() != 2) return false;
  const Reply& h = reply.elements[0];
  const Reply& p = reply.elements[1];
  if (!is_text(h) || !is_text(p) || h.str.empty()) return false;
  uint16_t v = 0;
  if (!parse_port(p.str, &v)) return false;
  *host = h.str;
  *port = v;
  return true;
}

bool parse_switch_master(std::string_view payload, std::string_view name, std::string* old_host,
                         uint16_t* old_port, std::string* host, uint16_t* port) {
  std::string_view parts[5];
  size_t n = 0;
  while (!payload.empty()) {
    size_t sp = payload.find(' ');
    std::string_view word = payload.substr(0, sp);
    if (!word.empty()) {
      if (n == 5) return false;
      parts[n++] = word;
    }
    if (sp == std::string_view::npos) break;
    payload.remove_prefix(sp + 1);
  }
  if (n != 5 || parts[0] != name) return false;
  uint16_t op = 0, np = 0;
  if (!parse_port(parts[2], &op) || !parse_port(parts[4], &np)) return false;
  old_host->assign(parts[1]);
  *old_port = op;
  host->assign(parts[3]);
  *port = np;
  return true;
}

std::string role_of(const Reply& reply) {
  if (reply.type != Reply::Type::kArray || reply.elements.empty() || !is_text(reply.elements[0])) return {};
  return reply.elements[0].str;
}

struct SentinelWatch::Impl {
  explicit Impl(SentinelSet s) : set(std::move(s)) {}

  SentinelSet set;

  // Shared with the clients' threads.
  mutable std::mutex mu;
  bool known = false;
  std::string host;
  uint16_t port = 0;
  uint64_t generation = 0;
  std::vector<uv_async_t*> listeners;
  std::atomic<bool> stopping{false};

  // The watch's own thread and loop.
  std::thread thread;
  uv_loop_t loop;
  uv_async_t wake;
  uv_timer_t tick;
  std::vector<Client*> queries;      // one per Sentinel, same order as set.addresses
  std::vector<Client*> subscribers;  // +switch-master, one per Sentinel
  size_t first = 0;                  // the Sentinel asked first (the last that answered)
  bool querying = false;
  bool again = false;
  bool unreachable_logged = false;
  std::string retired_host;
  uint16_t retired_port = 0;
  uint64_t retired_until = 0;

  void run();
  void shutdown();
  void discover();
  void ask(size_t i, size_t tried);
  void publish(const std::string& h, uint16_t p, const char* source);
  Client::Options options_for(const SentinelSet::Address& a) const;
};

Client::Options SentinelWatch::Impl::options_for(const SentinelSet::Address& a) const {
  Client::Options o;
  o.endpoint.host = a.host;
  o.endpoint.port = a.port;
  o.endpoint.password = set.password;
  o.command_timeout_ms = kSentinelTimeoutMs;
  o.connect_timeout_ms = kSentinelTimeoutMs;
  o.backoff_min_ms = 100;
  o.backoff_max_ms = 2000;
  o.name = "sentinel " + a.host + ":" + std::to_string(a.port);
  return o;
}

void SentinelWatch::Impl::run() {
  for (size_t i = 0; i < set.addresses.size(); ++i) {
    Client::Options qo = options_for(set.addresses[i]);
    // A Sentinel that (re)connects is asked at once: the first answer comes as soon as
    // one Sentinel is reachable, not a tick later.
    qo.on_state = [this](bool up) {
      if (up && !stopping.load()) discover();
    };
    Client* q = new Client(&loop, std::move(qo));
    q->start();
    queries.push_back(q);
    Client::Options so = options_for(set.addresses[i]);
    so.name += " events";
    Client* s = new Client(&loop, std::move(so));
    s->subscribe(
        {"+switch-master"},
        [this, i](std::string_view, std::string_view payload) {
          std::string old_host, h;
          uint16_t old_port = 0, p = 0;
          if (stopping.load() || !parse_switch_master(payload, set.master_name, &old_host, &old_port, &h, &p)) return;
          retired_host = old_host;
          retired_port = old_port;
          retired_until = uv_now(&loop) + kRetiredMs;
          first = i;
          publish(h, p, "switch-master");
        },
        [this] {
          if (!stopping.load()) discover();
        });
    s->start();
    subscribers.push_back(s);
  }
  uv_timer_init(&loop, &tick);
  tick.data = this;
  uv_timer_start(&tick, [](uv_timer_t* t) { static_cast<Impl*>(t->data)->discover(); }, kRefreshMs, kRefreshMs);
  uv_run(&loop, UV_RUN_DEFAULT);
}

void SentinelWatch::Impl::shutdown() {
  for (Client* c : queries) c->close([c] { delete c; });
  for (Client* c : subscribers) c->close([c] { delete c; });
  queries.clear();
  subscribers.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&wake), nullptr);
}

void SentinelWatch::Impl::discover() {
  if (stopping.load() || queries.empty()) return;
  if (querying) {
    again = true;
    return;
  }
  querying = true;
  ask(first, 0);
}

// Asks Sentinel `i`; on no answer, the next one, until each was asked once.
void SentinelWatch::Impl::ask(size_t i, size_t tried) {
  if (tried >= queries.size()) {
    querying = false;
    again = false;  // the next tick tries again; no tight loop while all are down
    if (!unreachable_logged) {
      unreachable_logged = true;
      log::event("warn", "redis_sentinels_unanswered", [&](log::Line& l) { l.str("master", set.master_name); });
    }
    return;
  }
  queries[i]->command({"SENTINEL", "get-master-addr-by-name", set.master_name},
                      [this, i, tried](Failure f, Reply& r) {
                        if (stopping.load()) return;
                        std::string h;
                        uint16_t p = 0;
                        if (f != Failure::kNone || !parse_master_addr(r, &h, &p)) {
                          ask((i + 1) % queries.size(), tried + 1);
                          return;
                        }
                        first = i;
                        querying = false;
                        unreachable_logged = false;
                        bool stale = h == retired_host && p == retired_port && uv_now(&loop) < retired_until;
                        if (!stale) publish(h, p, "query");
                        if (again) {
                          again = false;
                          discover();
                        }
                      });
}

void SentinelWatch::Impl::publish(const std::string& h, uint16_t p, const char* source) {
  std::string previous;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (known && host == h && port == p) return;
    previous = known ? host + ":" + std::to_string(port) : std::string();
    known = true;
    host = h;
    port = p;
    ++generation;
    // Under the lock: a client that returned from unlisten() is never signalled.
    for (uv_async_t* a : listeners) uv_async_send(a);
  }
  log::event("info", "redis_master", [&](log::Line& l) {
    l.str("master", set.master_name).str("address", h + ":" + std::to_string(p)).str("previous", previous)
        .str("source", source);
  });
}

std::shared_ptr<SentinelWatch> SentinelWatch::acquire(const SentinelSet& set) {
  std::lock_guard<std::mutex> lock(registry_mu);
  std::weak_ptr<SentinelWatch>& slot = registry()[key_of(set)];
  if (std::shared_ptr<SentinelWatch> w = slot.lock()) return w;
  std::shared_ptr<SentinelWatch> w(new SentinelWatch(set));
  slot = w;
  return w;
}

SentinelWatch::SentinelWatch(SentinelSet set) : impl_(std::make_unique<Impl>(std::move(set))) {
  Impl* m = impl_.get();
  uv_loop_init(&m->loop);
  uv_async_init(&m->loop, &m->wake, [](uv_async_t* a) {
    Impl* self = static_cast<Impl*>(a->data);
    if (self->stopping.load()) {
      self->shutdown();
    } else {
      self->discover();
    }
  });
  m->wake.data = m;
  m->thread = std::thread([m] { m->run(); });
}

SentinelWatch::~SentinelWatch() {
  impl_->stopping.store(true);
  uv_async_send(&impl_->wake);
  impl_->thread.join();
  uv_loop_close(&impl_->loop);
}

bool SentinelWatch::master(std::string* host, uint16_t* port, uint64_t* generation) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->known) return false;
  *host = impl_->host;
  *port = impl_->port;
  if (generation) *generation = impl_->generation;
  return true;
}

void SentinelWatch::listen(uv_async_t* async) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->listeners.push_back(async);
}

void SentinelWatch::unlisten(uv_async_t* async) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  std::erase(impl_->listeners, async);
}

void SentinelWatch::suspect() {
  if (!impl_->stopping.load()) uv_async_send(&impl_->wake);
}

}  // namespace fg::redis
