// Accept and Accept-Language parsing, reduced to the two questions Floodgate asks:
// "HTML or JSON?" and "Chinese or English?". Both headers are lists of
// `range;param=..;q=0.x` elements; anything malformed in one element is skipped
// rather than failing the request, because browsers and clients send odd values and a
// wrong guess only costs the JSON-versus-page choice.
#include "pages/negotiation.h"

#include <cstddef>

#include "pages/blanks.h"

namespace fg::pages {
namespace {

// Parses a qvalue ("0", "0.5", "1", "1.000") into thousandths; -1 when malformed.
int parse_q(std::string_view v) {
  v = trim_blanks(v);
  if (v.empty() || (v[0] != '0' && v[0] != '1')) return -1;
  int whole = v[0] - '0';
  int frac = 0;
  size_t digits = 0;
  if (v.size() > 1) {
    if (v[1] != '.' || v.size() > 5) return -1;
    for (size_t i = 2; i < v.size(); ++i) {
      if (v[i] < '0' || v[i] > '9') return -1;
      frac = frac * 10 + (v[i] - '0');
      ++digits;
    }
  }
  for (; digits < 3; ++digits) frac *= 10;
  const int q = whole * 1000 + frac;
  return q > 1000 ? -1 : q;
}

// One element of a comma-separated list: the range before the first ';' and its
// q-value in thousandths (1000 when absent, -1 when malformed).
struct Element {
  std::string_view range;
  int q = 1000;
};

// Calls fn(Element) for each non-empty element of a header list value.
template <typename Fn>
void for_each_element(std::string_view list, Fn&& fn) {
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    Element e;
    const size_t semi = item.find(';');
    e.range = trim_blanks(item.substr(0, semi));
    if (e.range.empty()) continue;
    std::string_view params = semi == std::string_view::npos ? std::string_view{} : item.substr(semi + 1);
    while (!params.empty()) {
      const size_t next = params.find(';');
      const std::string_view p = trim_blanks(params.substr(0, next));
      params = next == std::string_view::npos ? std::string_view{} : params.substr(next + 1);
      const size_t eq = p.find('=');
      if (eq != std::string_view::npos && http::iequals(trim_blanks(p.substr(0, eq)), "q")) {
        e.q = parse_q(p.substr(eq + 1));
      }
    }
    if (e.q < 0) continue;
    fn(e);
  }
}

// The q-value a media type gets from an Accept list: the most specific matching range
// decides (type/subtype over type/* over */*), as RFC 9110 section 12.5.1 says.
struct MediaMatch {
  int specificity = 0;  // 0: no range matched
  int q = 0;
  void offer(int spec, int value) {
    if (spec > specificity) {
      specificity = spec;
      q = value;
    } else if (spec == specificity && value > q) {
      q = value;
    }
  }
};

void match_media(std::string_view range, int q, std::string_view type, std::string_view subtype,
                 MediaMatch* m) {
  const size_t slash = range.find('/');
  if (slash == std::string_view::npos) return;
  const std::string_view rt = trim_blanks(range.substr(0, slash));
  const std::string_view rs = trim_blanks(range.substr(slash + 1));
  if (rt == "*" && rs == "*") {
    m->offer(1, q);
  } else if (http::iequals(rt, type) && rs == "*") {
    m->offer(2, q);
  } else if (http::iequals(rt, type) && http::iequals(rs, subtype)) {
    m->offer(3, q);
  }
}

struct AcceptRanks {
  int html = 0;  // best of text/html and application/xhtml+xml
  int json = 0;
  bool present = false;
};

AcceptRanks rank_accept(std::string_view accept, AcceptRanks ranks) {
  MediaMatch html, xhtml, json;
  for_each_element(accept, [&](const Element& e) {
    ranks.present = true;
    match_media(e.range, e.q, "text", "html", &html);
    match_media(e.range, e.q, "application", "xhtml+xml", &xhtml);
    match_media(e.range, e.q, "application", "json", &json);
  });
  // Ranges already seen in an earlier Accept header line keep their rank: take the max.
  const int h = html.q > xhtml.q ? html.q : xhtml.q;
  if (h > ranks.html) ranks.html = h;
  if (json.q > ranks.json) ranks.json = json.q;
  return ranks;
}

bool decide(bool navigate, const AcceptRanks& r) {
  if (!r.present) return navigate;
  if (r.html > r.json) return true;
  return navigate && r.html == r.json && r.html > 0;
}

// The primary subtag of a language range ("zh-Hant-TW" -> "zh").
std::string_view primary(std::string_view range) {
  const size_t dash = range.find_first_of("-_");
  return range.substr(0, dash);
}

}  // namespace

bool wants_html(std::string_view sec_fetch_mode, std::string_view accept) {
  const bool navigate = http::iequals(trim_blanks(sec_fetch_mode), "navigate");
  return decide(navigate, rank_accept(accept, AcceptRanks{}));
}

bool wants_html(const std::vector<http::Header>& headers) {
  bool navigate = false;
  AcceptRanks ranks;
  for (const http::Header& h : headers) {
    if (http::iequals(h.name, "Accept")) {
      ranks = rank_accept(h.value, ranks);
    } else if (http::iequals(h.name, "Sec-Fetch-Mode")) {
      navigate = http::iequals(trim_blanks(h.value), "navigate");
    }
  }
  return decide(navigate, ranks);
}

Language pick_language(std::string_view accept_language) {
  // For each supported language: the q of its own ranges (a language tag beats '*'),
  // and the position of the range that set it, for ties.
  struct Choice {
    int specificity = 0;
    int q = 0;
    int order = 0;
  } en, zh;
  int order = 0;
  auto offer = [](Choice* c, int spec, int q, int ord) {
    if (spec > c->specificity || (spec == c->specificity && q > c->q)) *c = Choice{spec, q, ord};
  };
  for_each_element(accept_language, [&](const Element& e) {
    ++order;
    const std::string_view p = primary(e.range);
    if (p == "*") {
      offer(&en, 1, e.q, order);
      offer(&zh, 1, e.q, order);
    } else if (http::iequals(p, "zh")) {
      offer(&zh, 2, e.q, order);
    } else if (http::iequals(p, "en")) {
      offer(&en, 2, e.q, order);
    }
  });
  if (zh.q > en.q) return Language::kZh;
  if (zh.q == en.q && zh.q > 0 && zh.order < en.order) return Language::kZh;
  return Language::kEn;
}

Language pick_language(const std::vector<http::Header>& headers) {
  const http::Header* h = http::find_header(headers, "Accept-Language");
  return h == nullptr ? Language::kEn : pick_language(h->value);
}

}  // namespace fg::pages
