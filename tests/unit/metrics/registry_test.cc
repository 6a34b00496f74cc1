// Metrics registry: idempotent registration, per-thread blocks summed by value(),
// histogram bucket boundaries, and render() as valid Prometheus text.
// The Registry is a process singleton, so every test uses its own family names.
#include <catch2/catch.hpp>

#include <cstdint>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "metrics/registry.h"

using fg::metrics::CellId;
using fg::metrics::kLatencyBucketCount;
using fg::metrics::kMainThread;
using fg::metrics::label;
using fg::metrics::Registry;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The sample lines of `text` whose name (up to the label set) is `name`.
std::vector<std::string> samples(const std::string& text, const std::string& name) {
  std::vector<std::string> out;
  for (const std::string& line : lines_of(text)) {
    if (line.rfind(name + "{", 0) == 0 || line.rfind(name + " ", 0) == 0) out.push_back(line);
  }
  return out;
}

bool contains_line(const std::string& text, const std::string& line) {
  for (const std::string& l : lines_of(text)) {
    if (l == line) return true;
  }
  return false;
}

// Checks `text` against the Prometheus text exposition format (version 0.0.4): every
// line is a HELP, a TYPE or a sample; label values are quoted with \\, \" and \n
// escaped; each family has one HELP and one TYPE before its samples; histogram buckets
// are cumulative, end with le="+Inf", and _count equals the +Inf bucket.
void check_prometheus_text(const std::string& text) {
  REQUIRE_FALSE(text.empty());
  REQUIRE(text.back() == '\n');
  static const std::regex help(R"re(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .*)re");
  static const std::regex type(R"re(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))re");
  static const std::regex sample(
      R"re(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")*,?)?\})? ([0-9]+(\.[0-9]+)?|[+-]Inf|NaN))re");
  static const std::regex le_label(R"re(le="([^"]*)")re");
  std::map<std::string, std::string> types;
  std::set<std::string> helped;
  std::string current;  // the family whose samples may follow
  // Per histogram series (name + labels without le): last cumulative bucket value.
  std::map<std::string, double> last_bucket;
  std::map<std::string, double> inf_bucket;
  for (const std::string& line : lines_of(text)) {
    INFO("line: " << line);
    std::smatch m;
    if (line.rfind("# HELP ", 0) == 0) {
      REQUIRE(std::regex_match(line, m, help));
      REQUIRE(helped.insert(m[1]).second);
      current = m[1];
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      REQUIRE(std::regex_match(line, m, type));
      REQUIRE(types.count(m[1]) == 0);
      REQUIRE(m[1] == current);
      types[m[1]] = m[2];
      continue;
    }
    REQUIRE(std::regex_match(line, m, sample));
    std::string name = m[1];
    REQUIRE(types.count(current) == 1);
    if (types[current] == "histogram") {
      REQUIRE((name == current + "_bucket" || name == current + "_sum" || name == current + "_count"));
      std::string labels = m[2];
      double value = std::stod(m[7]);
      if (name == current + "_bucket") {
        std::smatch le;
        REQUIRE(std::regex_search(labels, le, le_label));
        std::string series = std::regex_replace(labels, std::regex(R"(,?le="[^"]*")"), "");
        if (series == "{}") series = "";
        auto it = last_bucket.find(series);
        if (it != last_bucket.end()) REQUIRE(value >= it->second);  // cumulative
        last_bucket[series] = value;
        if (le[1] == "+Inf") inf_bucket[series] = value;
      } else if (name == current + "_count") {
        std::string series = labels == "{}" ? "" : labels;
        REQUIRE(inf_bucket.count(series) == 1);
        REQUIRE(value == inf_bucket[series]);
        last_bucket.erase(series);
        inf_bucket.erase(series);
      }
    } else {
      REQUIRE(name == current);
    }
  }
  // Every bucket run was closed by a _count.
  CHECK(last_bucket.empty());
}

}  // namespace

TEST_CASE("counter registration is idempotent per family and label set", "[metrics]") {
  Registry& r = Registry::get();
  CellId a = r.counter("fgtest_idem_total", "Idempotency test.", R"(route="orders",outcome="forwarded")");
  CellId b = r.counter("fgtest_idem_total", "Idempotency test.", R"(route="orders",outcome="forwarded")");
  CellId c = r.counter("fgtest_idem_total", "Idempotency test.", R"(route="orders",outcome="rejected")");
  CellId d = r.counter("fgtest_idem_other_total", "Another family.", R"(route="orders",outcome="forwarded")");
  CHECK(a == b);
  CHECK(a != c);
  CHECK(a != d);
  CHECK(c != d);
  CellId h1 = r.histogram("fgtest_idem_seconds", "Idempotent histogram.", R"(route="orders")");
  CellId h2 = r.histogram("fgtest_idem_seconds", "Idempotent histogram.", R"(route="orders")");
  CHECK(h1 == h2);

  // Registering again does not duplicate the series in the output.
  r.add(kMainThread, a, 3);
  std::string text = r.render();
  CHECK(samples(text, "fgtest_idem_total").size() == 2);
  CHECK(contains_line(text, R"(fgtest_idem_total{route="orders",outcome="forwarded"} 3)"));
  CHECK(contains_line(text, R"(fgtest_idem_total{route="orders",outcome="rejected"} 0)"));
  CHECK(samples(text, "fgtest_idem_seconds_count").size() == 1);
}

TEST_CASE("adds from several threads' blocks sum in value()", "[metrics]") {
  Registry& r = Registry::get();
  CellId x = r.counter("fgtest_threads_total", "Per-thread adds.", R"(kind="x")");
  CellId y = r.counter("fgtest_threads_total", "Per-thread adds.", R"(kind="y")");
  constexpr int kThreads = 4;
  constexpr uint64_t kAdds = 100'000;
  for (int t = 0; t < kThreads; t++) r.ensure_thread(t);
  r.ensure_thread(0);  // idempotent: the block and its counts stay
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&r, x, y, t] {
      for (uint64_t i = 0; i < kAdds; i++) r.add(t, x);
      r.add(t, y, static_cast<uint64_t>(t + 1) * 1000);
    });
  }
  r.add(kMainThread, x, 7);
  for (auto& th : threads) th.join();
  CHECK(r.value(x) == kThreads * kAdds + 7);
  CHECK(r.value(y) == 1000 + 2000 + 3000 + 4000);
  r.ensure_thread(1);
  CHECK(r.value(x) == kThreads * kAdds + 7);
  CHECK(contains_line(r.render(), R"(fgtest_threads_total{kind="x"} 400007)"));
}

TEST_CASE("histogram observations land in the right buckets", "[metrics]") {
  Registry& r = Registry::get();
  r.ensure_thread(0);
  // Catch runs the test case once per section: each section gets its own series.
  CellId h = 0;
  auto series = [&](std::string_view name) {
    h = r.histogram("fgtest_buckets_seconds", "Bucket boundaries.", label("case", name));
  };
  auto bucket = [&](size_t i) { return r.value(h + static_cast<CellId>(i)); };

  SECTION("an upper bound is inclusive") {
    series("inclusive");
    r.observe(0, h, 0.0005);
    CHECK(bucket(0) == 1);  // le="0.0005"
    r.observe(0, h, 0.001);
    CHECK(bucket(1) == 1);  // le="0.001"
    r.observe(0, h, 30);
    CHECK(bucket(kLatencyBucketCount - 1) == 1);  // le="30"
    CHECK(bucket(kLatencyBucketCount) == 0);      // +Inf only (non-cumulative cell)
  }
  SECTION("just above a bound goes to the next bucket") {
    series("above");
    r.observe(0, h, 0.00051);
    CHECK(bucket(0) == 0);
    CHECK(bucket(1) == 1);
    r.observe(0, h, 10.5);
    CHECK(bucket(kLatencyBucketCount - 1) == 1);  // le="30"
  }
  SECTION("beyond the last bound only +Inf counts it") {
    series("beyond");
    r.observe(0, h, 31);
    for (size_t i = 0; i < kLatencyBucketCount; i++) CHECK(bucket(i) == 0);
    CHECK(bucket(kLatencyBucketCount) == 1);
  }
  SECTION("zero and tiny values go in the first bucket") {
    series("zero");
    r.observe(0, h, 0);
    r.observe(0, h, 0.0000001);
    CHECK(bucket(0) == 2);
  }
}

TEST_CASE("histogram render: cumulative buckets, +Inf, _sum and _count", "[metrics]") {
  Registry& r = Registry::get();
  r.ensure_thread(0);
  r.ensure_thread(1);
  CellId h = r.histogram("fgtest_render_seconds", "Render test durations.", R"(route="r")");
  r.observe(0, h, 0.0005);  // le="0.0005"
  r.observe(1, h, 0.003);   // le="0.005"
  r.observe(0, h, 0.2);     // le="0.25"
  r.observe(1, h, 0.2);     // le="0.25"
  r.observe(kMainThread, h, 31);  // +Inf only
  std::string text = r.render();
  check_prometheus_text(text);

  CHECK(contains_line(text, "# HELP fgtest_render_seconds Render test durations."));
  CHECK(contains_line(text, "# TYPE fgtest_render_seconds histogram"));
  const std::vector<std::string> expected = {
      R"(fgtest_render_seconds_bucket{route="r",le="0.0005"} 1)",
      R"(fgtest_render_seconds_bucket{route="r",le="0.001"} 1)",
      R"(fgtest_render_seconds_bucket{route="r",le="0.0025"} 1)",
      R"(fgtest_render_seconds_bucket{route="r",le="0.005"} 2)",
      R"(fgtest_render_seconds_bucket{route="r",le="0.01"} 2)",
      R"(fgtest_render_seconds_bucket{route="r",le="0.025"} 2)",
      R"(fgtest_render_seconds_bucket{route="r",le="0.05"} 2)",
      R"(fgtest_render_seconds_bucket{route="r",le="0.1"} 2)",
      R"(fgtest_render_seconds_bucket{route="r",le="0.25"} 4)",
      R"(fgtest_render_seconds_bucket{route="r",le="0.5"} 4)",
      R"(fgtest_render_seconds_bucket{route="r",le="1"} 4)",
      R"(fgtest_render_seconds_bucket{route="r",le="2.5"} 4)",
      R"(fgtest_render_seconds_bucket{route="r",le="5"} 4)",
      R"(fgtest_render_seconds_bucket{route="r",le="10"} 4)",
      R"(fgtest_render_seconds_bucket{route="r",le="30"} 4)",
      R"(fgtest_render_seconds_bucket{route="r",le="+Inf"} 5)",
      R"(fgtest_render_seconds_sum{route="r"} 31.403500)",
      R"(fgtest_render_seconds_count{route="r"} 5)",
  };
  CHECK(samples(text, "fgtest_render_seconds_bucket").size() == kLatencyBucketCount + 1);
  for (const std::string& line : expected) {
    INFO(line);
    CHECK(contains_line(text, line));
  }
  // In that order, right after the TYPE line.
  std::vector<std::string> lines = lines_of(text);
  size_t at = 0;
  while (at < lines.size() && lines[at] != "# TYPE fgtest_render_seconds histogram") at++;
  REQUIRE(at + expected.size() < lines.size());
  for (size_t i = 0; i < expected.size(); i++) CHECK(lines[at + 1 + i] == expected[i]);
}

TEST_CASE("histogram _sum keeps whole microseconds of each observation", "[metrics]") {
  Registry& r = Registry::get();
  r.ensure_thread(0);
  CellId h = r.histogram("fgtest_sum_seconds", "Sum precision.", R"(route="s")");
  // Values with an exact number of microseconds must add up exactly, whatever their
  // binary floating-point representation.
  for (double v : {0.0003, 0.0007, 0.0011, 0.0029, 0.0057, 0.0093}) r.observe(0, h, v);
  std::string text = r.render();
  CHECK(contains_line(text, R"(fgtest_sum_seconds_sum{route="s"} 0.020000)"));
  CHECK(contains_line(text, R"(fgtest_sum_seconds_count{route="s"} 6)"));
}

TEST_CASE("histogram _sum of whole-millisecond durations is exact", "[metrics]") {
  // Workers observe `ms / 1000.0` (client_conn.cc, proxy_session.cc). 1001 / 1000.0 is
  // 1.000999999... in binary, so the microsecond cell must round, not truncate.
  Registry& r = Registry::get();
  r.ensure_thread(0);
  CellId h = r.histogram("fgtest_sum_ms_seconds", "Sum of millisecond durations.", R"(route="ms")");
  for (uint64_t ms : {1001, 1003, 1005, 2, 7}) r.observe(0, h, static_cast<double>(ms) / 1000.0);
  CHECK(r.value(h + static_cast<CellId>(kLatencyBucketCount + 1)) == 3'018'000);  // microseconds
  CHECK(contains_line(r.render(), R"(fgtest_sum_ms_seconds_sum{route="ms"} 3.018000)"));
}

TEST_CASE("label() escapes quote, backslash and newline", "[metrics]") {
  CHECK(label("route", "orders") == R"(route="orders")");
  CHECK(label("path", "a\"b") == R"(path="a\"b")");
  CHECK(label("path", "a\\b") == R"(path="a\\b")");
  CHECK(label("path", "a\nb") == R"(path="a\nb")");
  CHECK(label("path", "\"\\\n") == R"(path="\"\\\n")");
  CHECK(label("path", "") == R"(path="")");
  CHECK(label("path", "tab\there") == "path=\"tab\there\"");  // other bytes pass through

  std::string out = "x=";
  fg::metrics::append_label_value(out, "q\"s\\n\n");
  CHECK(out == R"(x=q\"s\\n\n)");
}

TEST_CASE("render() is valid Prometheus text with escaped label values", "[metrics]") {
  Registry& r = Registry::get();
  const std::string labels = label("route", "we\"ird\\route\nname") + "," + label("outcome", "forwarded");
  CellId c = r.counter("fgtest_escape_total", "Escaped labels.", labels);
  r.add(kMainThread, c, 42);
  CellId h = r.histogram("fgtest_escape_seconds", "Escaped histogram labels.", label("route", "a\"b"));
  r.observe(kMainThread, h, 0.01);
  CellId n = r.counter("fgtest_nolabels_total", "A counter without labels.", "");
  r.add(kMainThread, n, 5);

  std::string text = r.render();
  check_prometheus_text(text);
  CHECK(contains_line(text, "# HELP fgtest_escape_total Escaped labels."));
  CHECK(contains_line(text, "# TYPE fgtest_escape_total counter"));
  CHECK(contains_line(text, R"(fgtest_escape_total{route="we\"ird\\route\nname",outcome="forwarded"} 42)"));
  CHECK(contains_line(text, R"(fgtest_escape_seconds_bucket{route="a\"b",le="0.01"} 1)"));
  CHECK(contains_line(text, R"(fgtest_escape_seconds_count{route="a\"b"} 1)"));
  CHECK(contains_line(text, "# TYPE fgtest_nolabels_total counter"));
  CHECK(samples(text, "fgtest_nolabels_total").size() == 1);
  // No raw newline escaped into the middle of a line: the label value stays on one line.
  CHECK(text.find("route=\"we\"") == std::string::npos);
}
