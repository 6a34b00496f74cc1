// floodgate: parse the command line, load the config, start one worker per core and
// wait for signals. Everything else lives in the modules.
#include <signal.h>
#include <uv.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/log.h"
#include "floodgate/config.h"
#include "floodgate_version.h"
#include "net/worker.h"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: floodgate [-c FILE | --config FILE] [--check] [--version]\n"
               "  -c, --config FILE  configuration file (default conf/floodgate.toml)\n"
               "  --check            validate the configuration and exit (prints ok)\n"
               "  --version          print the version and exit\n");
}

struct Main {
  std::vector<std::unique_ptr<fg::net::Worker>> workers;
  uv_signal_t sigterm, sigint, sighup;
  bool stopping = false;
};

void force_exit(int) { _exit(1); }

void on_signal(uv_signal_t* h, int signum) {
  auto* m = static_cast<Main*>(h->data);
  if (signum == SIGHUP) {
    fg::log::event("warn", "reload_ignored", [](fg::log::Line& l) {
      l.str("reason", "this build has no live reload; restart to apply a new config");
    });
    return;
  }
  if (m->stopping) return;
  m->stopping = true;
  fg::log::event("info", "drain_start", [&](fg::log::Line& l) { l.str("signal", signum == SIGTERM ? "SIGTERM" : "SIGINT"); });
  for (auto& w : m->workers) w->request_stop();
  uv_close(reinterpret_cast<uv_handle_t*>(&m->sigterm), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&m->sigint), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&m->sighup), nullptr);
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
  if (check) {
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

  fg::net::Instance instance(*config);
  Main m;
  uv_loop_t* loop = uv_default_loop();
  uv_signal_init(loop, &m.sigterm);
  uv_signal_init(loop, &m.sigint);
  uv_signal_init(loop, &m.sighup);
  m.sigterm.data = m.sigint.data = m.sighup.data = &m;
  uv_signal_start(&m.sigterm, on_signal, SIGTERM);
  uv_signal_start(&m.sigint, on_signal, SIGINT);
  uv_signal_start(&m.sighup, on_signal, SIGHUP);

  fg::log::event("info", "start", [&](fg::log::Line& l) {
    l.str("version", FLOODGATE_VERSION).str("config", config_path).str("config_hash", config->hash)
        .num("workers", config->server.workers);
  });
  int rc = 0;
  for (int i = 0; i < config->server.workers; i++) {
    auto w = std::make_unique<fg::net::Worker>(i, &instance, config);
    fg::Status s = w->start();
    m.workers.push_back(std::move(w));
    if (!s) {
      std::fprintf(stderr, "floodgate: %s\n", s.message().c_str());
      fg::log::event("error", "start_failed", [&](fg::log::Line& l) { l.str("error", s.message()); });
      rc = 1;
      break;
    }
  }
  if (rc != 0) {
    for (auto& w : m.workers) w->request_stop();
    for (auto& w : m.workers) w->join();
    return rc;
  }
  uv_run(loop, UV_RUN_DEFAULT);
  // A second SIGTERM/SIGINT during the drain stops at once.
  signal(SIGTERM, force_exit);
  signal(SIGINT, force_exit);
  for (auto& w : m.workers) w->join();
  uv_loop_close(loop);
  fg::log::event("info", "stopped");
  return 0;
}
