// Reload, stop and the admin data. Parsing happens here on the main thread, never on a
// worker loop; workers only receive finished, validated snapshots.
#include "net/controller.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "cluster/node.h"
#include "core/log.h"
#include "floodgate_version.h"
#include "http/serialize.h"

namespace fg::net {
namespace {

constexpr uint64_t kDebounceMs = 300;

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void json_str(std::string& out, std::string_view s) {
  out += '"';
  http::append_json_escaped(out, s);
  out += '"';
}

}  // namespace

Controller::Controller(uv_loop_t* loop, std::string config_path, std::shared_ptr<const Config> config,
                       TlsContexts tls, std::shared_ptr<tls::TicketKeyRing> ticket_keys, ServiceFactory make_service)
    : loop_(loop), config_path_(std::move(config_path)), make_service_(std::move(make_service)),
      ticket_keys_(std::move(ticket_keys)) {
  ensure_cluster(*config);
  snapshot_ = Snapshot::build(std::move(config), nullptr, mono_ns(), std::move(tls), cluster_.get());
  loaded_at_ms_ = snapshot_->loaded_at_ms;
  auto& reg = metrics::Registry::get();
  reloads_ok_ = reg.counter("floodgate_config_reloads_total", "Configuration reloads by result.",
                            metrics::label("result", "ok"));
  reloads_failed_ = reg.counter("floodgate_config_reloads_total", "Configuration reloads by result.",
                                metrics::label("result", "failed"));
  uv_timer_init(loop_, &debounce_);
  debounce_.data = this;
  uv_timer_init(loop_, &rate_timer_);
  rate_timer_.data = this;
  uv_timer_init(loop_, &ticket_timer_);
  ticket_timer_.data = this;
  uv_async_init(loop_, &stopped_async_, [](uv_async_t* a) {
    auto* self = static_cast<Controller*>(a->data);
    if (self->joiner_.joinable()) self->joiner_.join();
    uv_close(reinterpret_cast<uv_handle_t*>(&self->stopped_async_), nullptr);
    // Every worker has stopped taking from the cluster budgets.
    if (self->cluster_) self->cluster_->close(nullptr);
    if (self->on_stopped_) self->on_stopped_();
  });
  stopped_async_.data = this;
}

Controller::~Controller() { join(); }

void Controller::ensure_cluster(const Config& config) {
  if (cluster_ || !config.redis.enabled) return;
  bool wanted = false;
  for (const auto& r : config.routes) wanted = wanted || r.cluster_scope;
  if (!wanted) return;
  // The connection is the one of the config that first needed it: a reload that moves
  // [redis] elsewhere applies to the cluster node at the next restart.
  cluster_ = std::make_unique<cluster::Node>(loop_, config.redis, cluster::make_instance_id());
  cluster_->start();
  log::event("info", "cluster_joined", [&](log::Line& l) { l.str("instance", cluster_->instance_id()); });
}

Status Controller::start() {
  int n = snapshot_->config->server.workers;
  instance_.workers.store(n);
  for (int i = 0; i < n; i++) {
    auto w = std::make_unique<Worker>(i, &instance_, snapshot_, make_service_);
    Status s = w->start();
    workers_.push_back(std::move(w));
    if (!s) return s;  // the caller stops the workers already started
  }
  uv_timer_start(&rate_timer_, on_rate_sample, 1000, 1000);
  schedule_ticket_rotation();
  if (snapshot_->config->reload.watch) start_watch();
  return Status::ok();
}

Status Controller::reload(const char* trigger) {
  if (stopping_) return Status::error("stopping");
  auto loaded = config::load_file(config_path_);
  auto& reg = metrics::Registry::get();
  if (!loaded) {
    reg.add(metrics::kMainThread, reloads_failed_);
    log::event("error", "reload_failed", [&](log::Line& l) {
      l.str("trigger", trigger).str("error", loaded.message());
    });
    return loaded.status();
  }
  // Certificates are read again on every reload, even when the config text is unchanged:
  // that is how a renewed certificate is taken in.
  auto tls = build_tls_contexts(*loaded.value(), ticket_keys_);
  if (!tls) {
    reg.add(metrics::kMainThread, reloads_failed_);
    log::event("error", "reload_failed", [&](log::Line& l) { l.str("trigger", trigger).str("error", tls.message()); });
    return tls.status();
  }
  for (const auto& w : tls.value().warnings) {
    log::event("warn", "tls_certificate", [&](log::Line& l) { l.str("warning", w); });
  }
  const Config& next = *loaded.value();
  if (next.server.workers != snapshot_->config->server.workers) {
    // Threads are not added or removed live; say so instead of pretending.
    log::event("warn", "reload_workers_unchanged", [&](log::Line& l) {
      l.num("running", snapshot_->config->server.workers).num("configured", next.server.workers)
          .str("note", "server.workers applies at the next restart");
    });
  }
  ensure_cluster(next);
  snapshot_ = Snapshot::build(loaded.value(), snapshot_.get(), mono_ns(), std::move(tls.value()), cluster_.get());
  schedule_ticket_rotation();
  loaded_at_ms_ = snapshot_->loaded_at_ms;
  for (auto& w : workers_) w->post_snapshot(snapshot_);
  reg.add(metrics::kMainThread, reloads_ok_);
  log::event("info", "reload_ok", [&](log::Line& l) {
    l.str("trigger", trigger).str("config_hash", snapshot_->config->hash);
  });
  if (on_reloaded) on_reloaded(*snapshot_->config);
  if (snapshot_->config->reload.watch && watch_ == nullptr) start_watch();
  if (!snapshot_->config->reload.watch && watch_ != nullptr) stop_watch();
  return Status::ok();
}

void Controller::stop(std::function<void()> on_stopped) {
  if (stopping_) return;
  stopping_ = true;
  on_stopped_ = std::move(on_stopped);
  for (auto& w : workers_) w->request_stop();
  // Workers are joined off the main loop; the loop hears about it through the async.
  joiner_ = std::thread([this] {
    for (auto& w : workers_) w->join();
    uv_async_send(&stopped_async_);
  });
  stop_watch();
  uv_timer_stop(&debounce_);
  uv_timer_stop(&rate_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&debounce_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&rate_timer_), nullptr);
  uv_timer_stop(&ticket_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&ticket_timer_), nullptr);
}

void Controller::schedule_ticket_rotation() {
  uint64_t every = snapshot_->tls.rotation_ms;
  if (every == ticket_rotation_ms_) return;
  ticket_rotation_ms_ = every;
  if (every == 0) {
    uv_timer_stop(&ticket_timer_);
  } else {
    uv_timer_start(&ticket_timer_, on_ticket_rotation, every, every);
  }
}

void Controller::on_ticket_rotation(uv_timer_t* t) {
  auto* self = static_cast<Controller*>(t->data);
  self->ticket_keys_->rotate();
  log::event("info", "tls_ticket_keys_rotated");
}

void Controller::join() {
  if (joiner_.joinable()) joiner_.join();
  for (auto& w : workers_) w->join();
}

void Controller::start_watch() {
  watch_ = new uv_fs_event_t;
  uv_fs_event_init(loop_, watch_);
  watch_->data = this;
  int r = uv_fs_event_start(watch_, on_fs_event, dir_of(config_path_).c_str(), 0);
  if (r != 0) {
    log::event("error", "watch_failed", [&](log::Line& l) { l.str("error", uv_strerror(r)); });
    stop_watch();
  }
}

void Controller::stop_watch() {
  if (watch_ == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(watch_), [](uv_handle_t* h) { delete reinterpret_cast<uv_fs_event_t*>(h); });
  watch_ = nullptr;
}

void Controller::on_fs_event(uv_fs_event_t* h, const char* filename, int, int status) {
  auto* self = static_cast<Controller*>(h->data);
  if (status < 0 || self->stopping_) return;
  if (filename != nullptr && base_of(self->config_path_) != filename) return;
  // Editors write in several steps: reload once things have been quiet for a moment.
  uv_timer_start(&self->debounce_, on_debounce, kDebounceMs, 0);
}

void Controller::on_debounce(uv_timer_t* t) {
  auto* self = static_cast<Controller*>(t->data);
  self->reload("watch");
}

void Controller::on_rate_sample(uv_timer_t* t) {
  auto* self = static_cast<Controller*>(t->data);
  auto& reg = metrics::Registry::get();
  const auto& snap = *self->snapshot_;
  std::vector<std::pair<std::string, uint64_t>> now;
  std::vector<std::pair<std::string, double>> rates;
  for (size_t i = 0; i < snap.routes.size(); i++) {
    const std::string& name = snap.config->routes[i].name;
    uint64_t v = reg.value(snap.routes[i].requests[kForwarded]);
    double rate = 0;
    for (const auto& [n, old] : self->last_forwarded_) {
      if (n == name && v >= old) rate = static_cast<double>(v - old);
    }
    now.emplace_back(name, v);
    rates.emplace_back(name, rate);
  }
  self->last_forwarded_ = std::move(now);
  self->admitted_rate_ = std::move(rates);
}

bool Controller::ready(std::string* why) const {
  if (stopping_) {
    *why = "draining";
    return false;
  }
  const Config& cfg = *snapshot_->config;
  if (!cfg.redis.enabled || cfg.redis.fail_open) return true;
  bool needs = false;
  for (const auto& r : cfg.routes) needs = needs || r.queued() || r.idempotency.enabled;
  if (!needs) return true;
  for (size_t i = 0; i < workers_.size(); i++) {
    if (!instance_.redis_up[i].load(std::memory_order_relaxed)) {
      *why = "redis down";
      return false;
    }
  }
  return true;
}

namespace {

// process_* metrics as Prometheus' client libraries name them, read from /proc.
void append_process_metrics(std::string& out) {
  long ticks = sysconf(_SC_CLK_TCK);
  long page = sysconf(_SC_PAGESIZE);
  double cpu = 0, start = 0, rss = 0, vsize = 0;
  if (FILE* f = std::fopen("/proc/self/stat", "r")) {
    char stat[1024];
    size_t n = std::fread(stat, 1, sizeof stat - 1, f);
    std::fclose(f);
    stat[n] = 0;
    // Fields after the command name, which is in parentheses and may hold spaces.
    if (const char* p = std::strrchr(stat, ')')) {
      unsigned long utime = 0, stime = 0, vs = 0;
      unsigned long long starttime = 0;
      long rs = 0;
      if (std::sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %llu %lu %ld",
                      &utime, &stime, &starttime, &vs, &rs) == 5) {
        cpu = static_cast<double>(utime + stime) / static_cast<double>(ticks);
        vsize = static_cast<double>(vs);
        rss = static_cast<double>(rs) * static_cast<double>(page);
        double boot = 0;
        if (FILE* s = std::fopen("/proc/stat", "r")) {
          char line[256];
          while (std::fgets(line, sizeof line, s)) {
            if (std::sscanf(line, "btime %lf", &boot) == 1) break;
          }
          std::fclose(s);
        }
        start = boot + static_cast<double>(starttime) / static_cast<double>(ticks);
      }
    }
  }
  int fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d) != nullptr) fds++;
    closedir(d);
    fds = fds > 3 ? fds - 3 : 0;  // ".", ".." and the descriptor of the listing itself
  }
  rlimit rl{};
  double max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? static_cast<double>(rl.rlim_cur) : 0;
  auto metric = [&out](const char* name, const char* type, const char* help, double value, const char* fmt) {
    char num[64];
    std::snprintf(num, sizeof num, fmt, value);
    out.append("# HELP ").append(name).append(" ").append(help).append("\n# TYPE ").append(name).append(" ");
    out.append(type).append("\n").append(name).append(" ").append(num).append("\n");
  };
  metric("process_cpu_seconds_total", "counter", "User and system CPU time spent.", cpu, "%.2f");
  metric("process_resident_memory_bytes", "gauge", "Resident memory size.", rss, "%.0f");
  metric("process_virtual_memory_bytes", "gauge", "Virtual memory size.", vsize, "%.0f");
  metric("process_open_fds", "gauge", "Open file descriptors.", fds, "%.0f");
  metric("process_max_fds", "gauge", "The limit of open file descriptors.", max_fds, "%.0f");
  metric("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch.", start, "%.2f");
}

}  // namespace

void Controller::count_redelivered(const std::string& route, int64_t n) {
  for (size_t i = 0; i < snapshot_->config->routes.size(); i++) {
    if (snapshot_->config->routes[i].name != route || !snapshot_->routes[i].queue) continue;
    metrics::Registry::get().add(metrics::kMainThread, snapshot_->routes[i].tickets[kTicketRedelivered],
                                 static_cast<uint64_t>(n));
  }
}

std::string Controller::metrics_text() const {
  std::string out = metrics::Registry::get().render();
  char buf[128];
  out += "# HELP floodgate_build_info The running build (value 1).\n";
  out += "# TYPE floodgate_build_info gauge\n";
  out += "floodgate_build_info{" + metrics::label("version", FLOODGATE_VERSION) + "} 1\n";
  append_process_metrics(out);
  // One series read from the instance's counters: HELP, TYPE, then `series value`.
  auto instance_series = [&](const char* name, const char* type, const char* help, const char* series,
                             int64_t value) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n");
    out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
    std::snprintf(buf, sizeof buf, "%s %" PRId64 "\n", series, value);
    out += buf;
  };
  instance_series("floodgate_connections_active", "gauge", "Open client connections.",
                  "floodgate_connections_active", instance_.connections.load(std::memory_order_relaxed));
  instance_series("floodgate_connections_refused_total", "counter",
                  "Client connections closed at once because their address was at "
                  "server.max_connections_per_client.",
                  "floodgate_connections_refused_total{reason=\"per_client\"}",
                  static_cast<int64_t>(instance_.refused_per_client.load(std::memory_order_relaxed)));
  instance_series("floodgate_request_buffer_bytes", "gauge",
                  "Request body bytes read ahead under server.request_buffering.", "floodgate_request_buffer_bytes",
                  instance_.request_buffered.load(std::memory_order_relaxed));
  instance_series("floodgate_response_buffer_bytes", "gauge", "Response bytes queued towards clients.",
                  "floodgate_response_buffer_bytes", instance_.response_buffered.load(std::memory_order_relaxed));
  out += "# HELP floodgate_queue_depth Tickets waiting in each queued route (cluster-wide, sampled each second).\n";
  out += "# TYPE floodgate_queue_depth gauge\n";
  for (size_t i = 0; i < snapshot_->routes.size(); i++) {
    const auto& q = snapshot_->routes[i].queue;
    if (!q) continue;
    std::string line = "floodgate_queue_depth{" + metrics::label("route", snapshot_->config->routes[i].name) + "} " +
                       std::to_string(q->depth.load(std::memory_order_relaxed)) + "\n";
    out += line;
  }
  out += "# HELP floodgate_dispatch_leader 1 while this instance runs the route's dispatcher for the whole cluster.\n";
  out += "# TYPE floodgate_dispatch_leader gauge\n";
  out += "# HELP floodgate_dispatch_leader_token The fencing token of the route's dispatch lease held here (0: not held).\n";
  out += "# TYPE floodgate_dispatch_leader_token gauge\n";
  for (size_t i = 0; i < snapshot_->routes.size(); i++) {
    const auto& q = snapshot_->routes[i].queue;
    if (!q) continue;
    uint64_t token = q->leader_token.load(std::memory_order_relaxed);
    std::string label = "{" + metrics::label("route", snapshot_->config->routes[i].name) + "} ";
    out += "floodgate_dispatch_leader" + label + (token ? "1\n" : "0\n");
    out += "floodgate_dispatch_leader_token" + label + std::to_string(token) + "\n";
  }
  auto queue_gauge = [&](const char* name, const char* help, auto value) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n# TYPE ").append(name).append(" gauge\n");
    for (size_t i = 0; i < snapshot_->routes.size(); i++) {
      const auto& q = snapshot_->routes[i].queue;
      if (!q) continue;
      out.append(name).append("{").append(metrics::label("route", snapshot_->config->routes[i].name)).append("} ");
      out.append(std::to_string(value(*q))).append("\n");
    }
  };
  queue_gauge("floodgate_dead_letters",
              "Dead letters of each queued route: deliveries whose retry schedule ended, kept until re-delivered "
              "(cluster-wide, sampled each second).",
              [](const QueueState& q) { return q.dead.load(std::memory_order_relaxed); });
  queue_gauge("floodgate_tickets_parked",
              "Tickets of each queued route waiting in Redis for their next delivery attempt (cluster-wide, "
              "sampled each second).",
              [](const QueueState& q) { return q.parked.load(std::memory_order_relaxed); });
  out += "# HELP floodgate_breaker_state Circuit breaker per upstream server: 0 closed, 1 half-open, 2 open.\n";
  out += "# TYPE floodgate_breaker_state gauge\n";
  out += "# HELP floodgate_upstream_timeout_seconds The first-byte timeout in force per upstream (adaptive or fixed).\n";
  out += "# TYPE floodgate_upstream_timeout_seconds gauge\n";
  for (size_t u = 0; u < snapshot_->config->upstreams.size(); u++) {
    const UpstreamConfig& uc = snapshot_->config->upstreams[u];
    const auto& ut = snapshot_->upstreams[u];
    std::vector<HostPort> all = uc.servers;
    all.insert(all.end(), uc.backup.begin(), uc.backup.end());
    for (size_t i = 0; i < all.size(); i++) {
      int st = 0;
      if (auto* b = ut.counters->breaker_of(i)) st = static_cast<int>(b->state());
      out += "floodgate_breaker_state{" + metrics::label("upstream", uc.name) + "," +
             metrics::label("server", all[i].text) + "} " + std::to_string(st) + "\n";
    }
    std::snprintf(buf, sizeof buf, " %.3f\n", static_cast<double>(ut.timeout_ms(uc, mono_ns() / 1000000)) / 1000.0);
    out += "floodgate_upstream_timeout_seconds{" + metrics::label("upstream", uc.name) + "}" + buf;
  }
  bool redis_enabled = snapshot_->config->redis.enabled;
  bool all_up = redis_enabled && !workers_.empty();
  for (size_t i = 0; i < workers_.size(); i++) all_up = all_up && instance_.redis_up[i].load(std::memory_order_relaxed);
  out += "# HELP floodgate_redis_up 1 when every worker's Redis connection is up.\n";
  out += "# TYPE floodgate_redis_up gauge\n";
  out += all_up ? "floodgate_redis_up 1\n" : "floodgate_redis_up 0\n";
  out += "# HELP floodgate_loop_lag_seconds How late each worker's loop ran its periodic timer.\n";
  out += "# TYPE floodgate_loop_lag_seconds gauge\n";
  for (size_t i = 0; i < workers_.size(); i++) {
    std::snprintf(buf, sizeof buf, "floodgate_loop_lag_seconds{worker=\"%zu\"} %.6f\n", i,
                  static_cast<double>(instance_.loop_lag_ns[i].load(std::memory_order_relaxed)) / 1e9);
    out += buf;
  }
  if (cluster_) out += cluster_->metrics_text();
  return out;
}

std::string Controller::status_json() const {
  const Config& cfg = *snapshot_->config;
  std::string out;
  out.reserve(2048);
  char buf[256];
  out += "{\"version\":";
  json_str(out, FLOODGATE_VERSION);
  out += ",\"config\":{\"path\":";
  json_str(out, config_path_);
  out += ",\"hash\":";
  json_str(out, cfg.hash);
  out += ",\"loaded_at\":";
  std::string ts;
  log::append_timestamp(ts, loaded_at_ms_);
  json_str(out, ts);
  std::snprintf(buf, sizeof buf, "},\"workers\":%zu,\"draining\":%s,\"connections\":%" PRId64 ",\"routes\":[",
                workers_.size(), stopping_ ? "true" : "false",
                instance_.connections.load(std::memory_order_relaxed));
  out += buf;
  uint64_t now = mono_ns();
  for (size_t i = 0; i < cfg.routes.size(); i++) {
    const auto& r = cfg.routes[i];
    const auto& rt = snapshot_->routes[i];
    if (i) out += ',';
    out += "{\"name\":";
    json_str(out, r.name);
    out += ",\"upstream\":";
    json_str(out, r.upstream);
    double admitted = 0;
    for (const auto& [n, v] : admitted_rate_)
      if (n == r.name) admitted = v;
    std::snprintf(buf, sizeof buf, ",\"rate\":%g,\"burst\":%g,\"admitted_rate\":%g,\"dry_run\":%s,\"core\":%s",
                  r.rate, r.burst, admitted, r.dry_run ? "true" : "false", r.core ? "true" : "false");
    out += buf;
    if (rt.budget) {
      auto d = rt.budget->peek(now);
      std::snprintf(buf, sizeof buf, ",\"budget_remaining\":%" PRIu64, d.remaining);
      out += buf;
    }
    if (rt.clients) {
      std::snprintf(buf, sizeof buf, ",\"client_rate\":%g,\"client_table_bytes\":%zu", r.client_rate,
                    rt.clients->memory_bytes());
      out += buf;
    }
    if (rt.queue) {
      std::snprintf(buf, sizeof buf,
                    ",\"queue_depth\":%" PRId64 ",\"dispatch_rate\":%.1f,\"dead_letters\":%" PRId64
                    ",\"parked\":%" PRId64 "}",
                    rt.queue->depth.load(std::memory_order_relaxed), rt.queue->rate.load(std::memory_order_relaxed),
                    rt.queue->dead.load(std::memory_order_relaxed), rt.queue->parked.load(std::memory_order_relaxed));
      out += buf;
    } else {
      out += ",\"queue_depth\":0}";
    }
  }
  out += "],\"upstreams\":[";
  for (size_t i = 0; i < cfg.upstreams.size(); i++) {
    const auto& u = cfg.upstreams[i];
    if (i) out += ',';
    out += "{\"name\":";
    json_str(out, u.name);
    out += ",\"servers\":[";
    std::vector<HostPort> all = u.servers;
    all.insert(all.end(), u.backup.begin(), u.backup.end());
    const auto& counters = *snapshot_->upstreams[i].counters;
    for (size_t s = 0; s < all.size(); s++) {
      if (s) out += ',';
      out += "{\"address\":";
      json_str(out, all[s].text);
      static const char* kStates[] = {"closed", "half_open", "open"};
      const char* breaker = "disabled";
      if (auto* b = counters.breaker_of(s)) breaker = kStates[static_cast<int>(b->state())];
      std::snprintf(buf, sizeof buf, ",\"backup\":%s,\"connections\":%" PRId64 ",\"health\":\"%s\",\"breaker\":\"%s\"}",
                    s >= u.servers.size() ? "true" : "false", counters.count[s].load(std::memory_order_relaxed),
                    counters.down[s].load(std::memory_order_relaxed) ? "down" : "up", breaker);
      out += buf;
    }
    std::snprintf(buf, sizeof buf, "],\"timeout_ms\":%" PRIu64 "}",
                  snapshot_->upstreams[i].timeout_ms(u, mono_ns() / 1000000));
    out += buf;
  }
  out += "],\"breakers\":[";
  bool first = true;
  for (size_t i = 0; i < cfg.upstreams.size(); i++) {
    const auto& u = cfg.upstreams[i];
    const auto& counters = *snapshot_->upstreams[i].counters;
    std::vector<HostPort> all = u.servers;
    all.insert(all.end(), u.backup.begin(), u.backup.end());
    for (size_t s = 0; s < counters.breakers.size() && s < all.size(); s++) {
      static const char* kStates[] = {"closed", "half_open", "open"};
      auto c = counters.breakers[s]->counts(mono_ns() / 1000000);
      if (!first) out += ',';
      first = false;
      out += "{\"upstream\":";
      json_str(out, u.name);
      out += ",\"server\":";
      json_str(out, all[s].text);
      std::snprintf(buf, sizeof buf, ",\"state\":\"%s\",\"requests\":%" PRIu64 ",\"errors\":%" PRIu64
                    ",\"timeouts\":%" PRIu64 "}",
                    kStates[static_cast<int>(counters.breakers[s]->state())], static_cast<uint64_t>(c.requests),
                    static_cast<uint64_t>(c.errors), static_cast<uint64_t>(c.timeouts));
      out += buf;
    }
  }
  out += "],\"redis\":{\"state\":";
  if (!cfg.redis.enabled) {
    out += "\"not_configured\"";
  } else {
    size_t up = 0;
    for (size_t i = 0; i < workers_.size(); i++) up += instance_.redis_up[i].load(std::memory_order_relaxed) ? 1 : 0;
    out += up == workers_.size() ? "\"up\"" : (up == 0 ? "\"down\"" : "\"partial\"");
    std::snprintf(buf, sizeof buf, ",\"workers_connected\":%zu", up);
    out += buf;
  }
  out += "}}";
  return out;
}

}  // namespace fg::net
