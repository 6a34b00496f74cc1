// floodgate: parse the command line, load the config, start one worker per core, the
// admin listener, and wait for signals. Everything else lives in the modules.
#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "core/log.h"
#include "floodgate/config.h"
#include "floodgate_version.h"
#include "gateway/worker_context.h"
#include "net/admin_server.h"
#include "net/controller.h"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: floodgate [-c FILE | --config FILE] [--check] [--version]\n"
               "  -c, --config FILE  configuration file (default conf/floodgate.toml)\n"
               "  --check            validate the configuration and exit (prints ok)\n"
               "  --version          print the version and exit\n"
               "signals: SIGHUP reloads the config; SIGUSR1 reopens log.file; SIGTERM/SIGINT drain and stop\n");
}

struct Main {
  fg::net::Controller* controller = nullptr;
  fg::net::AdminServer* admin = nullptr;
  uv_signal_t sigterm, sigint, sighup, sigusr1;

  uv_handle_t* signals(size_t i) {
    uv_signal_t* all[] = {&sigterm, &sigint, &sighup, &sigusr1};
    return reinterpret_cast<uv_handle_t*>(all[i]);
  }
  static constexpr size_t kSignals = 4;
  void close_signals() {
    for (size_t i = 0; i < kSignals; i++) uv_close(signals(i), nullptr);
  }
};

// log.level and log.access_sample, at start and after every reload.
void apply_log_settings(const fg::LogConfig& log) {
  fg::log::Level level = fg::log::Level::kInfo;
  fg::log::parse_level(log.level, &level);  // the loader accepted only valid names
  fg::log::set_level(level);
  fg::log::set_access_sample(log.access_sample);
}

void on_signal(uv_signal_t* h, int signum) {
  auto* m = static_cast<Main*>(h->data);
  if (m->controller == nullptr) return;
  if (signum == SIGHUP) {
    if (!m->controller->stopping()) m->controller->reload("SIGHUP");
    return;
  }
  if (signum == SIGUSR1) {
    // logrotate moved the file away: write to a fresh one under the configured name.
    std::string err;
    if (fg::log::reopen_sink(&err)) fg::log::event("info", "log_reopened");
    else fg::log::event("error", "log_reopen_failed", [&](fg::log::Line& l) { l.str("error", err); });
    return;
  }
  if (m->controller->stopping()) {
    // A second SIGTERM/SIGINT during the drain: stop at once.
    fg::log::event("warn", "forced_exit", [&](fg::log::Line& l) { l.str("signal", signum == SIGTERM ? "SIGTERM" : "SIGINT"); });
    _exit(1);
  }
  fg::log::event("info", "drain_start",
                 [&](fg::log::Line& l) { l.str("signal", signum == SIGTERM ? "SIGTERM" : "SIGINT"); });
  // The admin listener stays up during the drain (/healthz answers 503) and closes
  // with the signal handles once the workers are done.
  // The signal handles stay (a second signal forces the exit) but no longer keep the
  // loop alive: it ends once the workers have drained.
  for (size_t i = 0; i < Main::kSignals; i++) uv_unref(m->signals(i));
  m->controller->stop([m] {
    m->admin->close();
    m->close_signals();
  });
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path = "conf/floodgate.toml";
  bool check = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "-c" || a == "--config") && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      config_path = a.substr(9);
    } else if (a == "--check") {
      check = true;
    } else if (a == "--version" || a == "-v") {
      std::printf("floodgate %s\n", FLOODGATE_VERSION);
      return 0;
    } else if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "floodgate: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }

  auto loaded = fg::config::load_file(config_path);
  if (!loaded) {
    std::fprintf(stderr, "%s\n", loaded.message().c_str());
    return 1;
  }
  // Certificates, keys and CA files are read here too, so --check finds an unreadable
  // or mismatched pair before a start or a reload does.
  auto ticket_keys = std::make_shared<fg::tls::TicketKeyRing>();
  auto tls = fg::net::build_tls_contexts(*loaded.value(), ticket_keys);
  if (!tls) {
    std::fprintf(stderr, "%s\n", tls.message().c_str());
    return 1;
  }
  if (check) {
    for (const auto& w : tls.value().warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    std::printf("ok\n");
    return 0;
  }
  std::shared_ptr<const fg::Config> config = loaded.value();

  std::string err;
  if (!fg::log::open_sink(config->log.file, &err)) {
    std::fprintf(stderr, "floodgate: cannot open log.file %s\n", err.c_str());
    return 1;
  }
  // Writes to a vanished peer must surface as EPIPE on that connection, not kill us.
  signal(SIGPIPE, SIG_IGN);

  uv_loop_t* loop = uv_default_loop();
  // Signals are caught from before the first listener opens: a SIGTERM during start-up
  // is handled (as a drain) once the loop runs, never by the default action.
  Main m;
  uv_signal_init(loop, &m.sigterm);
  uv_signal_init(loop, &m.sigint);
  uv_signal_init(loop, &m.sighup);
  uv_signal_init(loop, &m.sigusr1);
  m.sigterm.data = m.sigint.data = m.sighup.data = m.sigusr1.data = &m;
  uv_signal_start(&m.sigterm, on_signal, SIGTERM);
  uv_signal_start(&m.sigint, on_signal, SIGINT);
  uv_signal_start(&m.sighup, on_signal, SIGHUP);
  uv_signal_start(&m.sigusr1, on_signal, SIGUSR1);
  apply_log_settings(config->log);

  fg::log::event("info", "start", [&](fg::log::Line& l) {
    l.str("version", FLOODGATE_VERSION).str("config", config_path).str("config_hash", config->hash)
        .num("workers", config->server.workers);
  });
  for (const auto& w : tls.value().warnings) {
    fg::log::event("warn", "tls_certificate", [&](fg::log::Line& l) { l.str("warning", w); });
  }
  fg::net::Controller controller(loop, config_path, config, std::move(tls.value()), ticket_keys,
                                 fg::gateway::make_worker_context);
  fg::net::AdminServer admin(loop, &controller);
  controller.on_reloaded = [&admin](const fg::Config& c) {
    admin.update(c.admin);
    apply_log_settings(c.log);
  };
  m.controller = &controller;
  m.admin = &admin;

  fg::Status s = controller.start();
  if (s) s = admin.open(config->admin);
  if (!s) {
    std::fprintf(stderr, "floodgate: %s\n", s.message().c_str());
    fg::log::event("error", "start_failed", [&](fg::log::Line& l) { l.str("error", s.message()); });
    admin.close();
    controller.stop([&m] {
      m.close_signals();
    });
    uv_run(loop, UV_RUN_DEFAULT);
    controller.join();
    uv_loop_close(loop);
    return 1;
  }

  uv_run(loop, UV_RUN_DEFAULT);
  controller.join();
  uv_loop_close(loop);
  fg::log::event("info", "stopped");
  return 0;
}
