// Idempotency key sources (SPEC §5): pulling the key out of a request, and the 128-bit
// hash used for request fingerprints and body keys.
#include "idempotency/key_source.h"

#include <array>
#include <bit>
#include <charconv>
#include <cstring>
#include <optional>

#include <simdjson.h>

namespace fg::idempotency {
namespace {

constexpr size_t kMaxKeyBytes = 255;

// Bodies above this size are parsed with a one-off parser so that the per-thread parser
// does not keep a buffer sized for the largest body it has ever seen.
constexpr size_t kReusableParserMaxBytes = 64 * 1024;

bool is_control(unsigned char c) { return c < 0x20 || c == 0x7F; }

// ---------------------------------------------------------------------------------------
// Candidate values. A source either yields nothing (the next source is tried), a value
// (checked against the key rules), or a value that is already known to be malformed.

enum class Found { kNone, kValue, kMalformed };

bool valid_key(std::string_view key) {
  if (key.empty() || key.size() > kMaxKeyBytes) return false;
  for (unsigned char c : key) {
    if (is_control(c)) return false;
  }
  return true;
}

std::string_view trim_ows(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// RFC 8941 §3.3.3 sf-string: printable ASCII between quotes, only \" and \\ as escapes,
// and nothing after the closing quote.
bool parse_sf_string(std::string_view v, std::string* out) {
  out->clear();
  if (v.size() < 2 || v.front() != '"') return false;
  for (size_t i = 1; i < v.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(v[i]);
    if (c == '\\') {
      if (++i == v.size()) return false;
      char next = v[i];
      if (next != '"' && next != '\\') return false;
      *out += next;
    } else if (c == '"') {
      return i == v.size() - 1;
    } else if (c < 0x20 || c > 0x7E) {
      return false;
    } else {
      *out += static_cast<char>(c);
    }
  }
  return false;  // no closing quote
}

Found from_header(const http::RequestHead& head, std::string_view name, std::string* out) {
  const http::Header* h = http::find_header(head.headers, name);
  if (h == nullptr) return Found::kNone;
  std::string_view v = trim_ows(h->value);
  if (!v.empty() && v.front() == '"') {
    return parse_sf_string(v, out) ? Found::kValue : Found::kMalformed;
  }
  out->assign(v);
  return Found::kValue;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded decoding as browsers and payment providers produce it:
// '+' is a space and %XX a byte. A '%' that is not followed by two hex digits is kept
// literally (the WHATWG URL standard does the same), so "100%" stays "100%".
void form_decode(std::string_view in, std::string* out) {
  out->clear();
  out->reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+') {
      *out += ' ';
    } else if (c == '%' && i + 2 < in.size() && hex_value(in[i + 1]) >= 0 && hex_value(in[i + 2]) >= 0) {
      *out += static_cast<char>(hex_value(in[i + 1]) * 16 + hex_value(in[i + 2]));
      i += 2;
    } else {
      *out += c;
    }
  }
}

// First pair whose decoded name equals `field`. A pair without '=' has an empty value,
// which is then rejected as a key rather than skipped: the client did send the field.
Found from_urlencoded(std::string_view data, std::string_view field, std::string* out) {
  std::string name;
  while (!data.empty()) {
    size_t amp = data.find('&');
    std::string_view pair = data.substr(0, amp);
    data = amp == std::string_view::npos ? std::string_view() : data.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    form_decode(pair.substr(0, eq), &name);
    if (name != field) continue;
    form_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), out);
    return Found::kValue;
  }
  return Found::kNone;
}

Found from_query(const http::RequestHead& head, std::string_view field, std::string* out) {
  std::string_view target = head.target;
  size_t q = target.find('?');
  if (q == std::string_view::npos) return Found::kNone;
  return from_urlencoded(target.substr(q + 1), field, out);
}

// The body is parsed at most once per extract_key() call, and only when a json source is
// reached. simdjson's DOM parser validates the whole document, so a truncated or broken
// body yields nothing instead of a value read from its valid prefix. Documents nested
// deeper than simdjson's default 1024 levels, invalid UTF-8 and integers that fit neither
// int64 nor uint64 are parse errors and likewise yield nothing.
class JsonBody {
 public:
  explicit JsonBody(std::string_view body) : body_(body) {}

  Found lookup(std::string_view path, std::string* out) {
    if (!parsed_) parse();
    if (!root_) return Found::kNone;
    simdjson::dom::element e = *root_;
    while (true) {
      size_t dot = path.find('.');
      std::string_view segment = path.substr(0, dot);
      simdjson::dom::object obj;
      if (e.get_object().get(obj) != simdjson::SUCCESS) return Found::kNone;
      if (obj.at_key(segment).get(e) != simdjson::SUCCESS) return Found::kNone;
      if (dot == std::string_view::npos) break;
      path.remove_prefix(dot + 1);
    }
    return scalar_text(e, out);
  }

 private:
  void parse() {
    parsed_ = true;
    if (body_.empty()) return;
    simdjson::dom::parser* parser;
    if (body_.size() <= kReusableParserMaxBytes) {
      // One parser per thread: its buffers are reused by every request on that loop.
      thread_local simdjson::dom::parser reusable;
      parser = &reusable;
    } else {
      own_.emplace();
      parser = &*own_;
    }
    // The body buffer has no SIMDJSON_PADDING after it, so let simdjson copy it into a
    // padded buffer rather than read past its end.
    simdjson::dom::element root;
    if (parser->parse(body_.data(), body_.size(), true).get(root) != simdjson::SUCCESS) return;
    if (root.type() != simdjson::dom::element_type::OBJECT) return;
    root_ = root;
  }

  // Strings are used as-is (unescaped). Integers become their decimal digits exactly;
  // doubles become the shortest text that reads back as the same double (std::to_chars),
  // so 1.50 gives "1.5" and 1e2 gives "100". Other types are not keys.
  static Found scalar_text(simdjson::dom::element e, std::string* out) {
    std::array<char, 32> buf;
    std::to_chars_result r{};
    switch (e.type()) {
      case simdjson::dom::element_type::STRING: {
        std::string_view s;
        if (e.get_string().get(s) != simdjson::SUCCESS) return Found::kNone;
        out->assign(s);
        return Found::kValue;
      }
      case simdjson::dom::element_type::INT64: {
        int64_t v = 0;
        if (e.get_int64().get(v) != simdjson::SUCCESS) return Found::kNone;
        r = std::to_chars(buf.data(), buf.data() + buf.size(), v);
        break;
      }
      case simdjson::dom::element_type::UINT64: {
        uint64_t v = 0;
        if (e.get_uint64().get(v) != simdjson::SUCCESS) return Found::kNone;
        r = std::to_chars(buf.data(), buf.data() + buf.size(), v);
        break;
      }
      case simdjson::dom::element_type::DOUBLE: {
        double v = 0;
        if (e.get_double().get(v) != simdjson::SUCCESS) return Found::kNone;
        r = std::to_chars(buf.data(), buf.data() + buf.size(), v);
        break;
      }
      default:
        return Found::kNone;
    }
    if (r.ec != std::errc()) return Found::kNone;
    out->assign(buf.data(), r.ptr);
    return Found::kValue;
  }

  std::string_view body_;
  bool parsed_ = false;
  std::optional<simdjson::dom::parser> own_;
  std::optional<simdjson::dom::element> root_;
};

// ---------------------------------------------------------------------------------------
// Hashing. Two 64-bit lanes with different seeds, multipliers and rotations read the input
// eight bytes at a time (little-endian regardless of the host, so a digest stored in Redis
// means the same on every gateway) and end with MurmurHash3's fmix64 finalizer. Each field
// is preceded by its length, so field boundaries cannot shift between inputs. This is not
// a cryptographic hash: it separates honest retries from different requests.

constexpr uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

struct LaneParams {
  uint64_t m1;
  uint64_t m2;
  int r1;
  int r2;
  uint64_t add;
};

constexpr LaneParams kLaneA{0x87c37b91114253d5ULL, 0x4cf5ad432745937fULL, 31, 27, 0x52dce729ULL};
constexpr LaneParams kLaneB{0x9e3779b185ebca87ULL, 0xc2b2ae3d27d4eb4fULL, 29, 33, 0x38495ab5ULL};

class Hash128 {
 public:
  Hash128(uint64_t seed_a, uint64_t seed_b) : a_(seed_a), b_(seed_b) {}

  void add_field(std::string_view data) {
    add_word(static_cast<uint64_t>(data.size()));
    const char* p = data.data();
    size_t n = data.size();
    while (n >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      if constexpr (std::endian::native == std::endian::big) w = __builtin_bswap64(w);
      add_word(w);
      p += 8;
      n -= 8;
    }
    if (n > 0) {
      // The zero-padded tail is unambiguous because the length was hashed first.
      uint64_t w = 0;
      for (size_t i = 0; i < n; ++i) w |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
      add_word(w);
    }
    total_ += data.size();
  }

  std::string hex() const {
    static constexpr char kHex[] = "0123456789abcdef";
    uint64_t ha = fmix64(a_ ^ total_);
    uint64_t hb = fmix64(b_ ^ std::rotl(total_, 32));
    std::string out(32, '0');
    for (size_t i = 0; i < 16; ++i) {
      out[15 - i] = kHex[(ha >> (4 * i)) & 0xF];
      out[31 - i] = kHex[(hb >> (4 * i)) & 0xF];
    }
    return out;
  }

 private:
  static uint64_t step(uint64_t h, uint64_t w, const LaneParams& p) {
    w *= p.m1;
    w = std::rotl(w, p.r1);
    w *= p.m2;
    h ^= w;
    h = std::rotl(h, p.r2);
    return h * 5 + p.add;
  }

  void add_word(uint64_t w) {
    a_ = step(a_, w, kLaneA);
    b_ = step(b_, w, kLaneB);
  }

  uint64_t a_;
  uint64_t b_;
  uint64_t total_ = 0;
};

// Distinct seeds keep a body digest from ever equalling a fingerprint of related fields.
constexpr uint64_t kDigestSeedA = 0x6469676573742d61ULL;
constexpr uint64_t kDigestSeedB = 0x6469676573742d62ULL;
constexpr uint64_t kFingerprintSeedA = 0x66696e6765722d61ULL;
constexpr uint64_t kFingerprintSeedB = 0x66696e6765722d62ULL;

}  // namespace

// Form sources read the body whatever its Content-Type: a body that is not urlencoded
// simply has no pair with the wanted name (the route's configuration says which source
// fits which endpoint).
Extract extract_key(const std::vector<KeySource>& sources, const http::RequestHead& head, std::string_view body,
                    std::string* key) {
  JsonBody json(body);
  std::string value;
  for (const KeySource& s : sources) {
    Found found = Found::kNone;
    switch (s.kind) {
      case KeySource::Kind::kHeader:
        found = from_header(head, s.name, &value);
        break;
      case KeySource::Kind::kJson:
        found = json.lookup(s.name, &value);
        break;
      case KeySource::Kind::kForm:
        found = from_urlencoded(body, s.name, &value);
        break;
      case KeySource::Kind::kQuery:
        found = from_query(head, s.name, &value);
        break;
      case KeySource::Kind::kBody:
        if (!body.empty()) {
          value = digest_hex(body);
          found = Found::kValue;
        }
        break;
    }
    if (found == Found::kNone) continue;
    // A present value decides the outcome: falling through to a later source would let a
    // malformed key silently become a different key.
    if (found == Found::kMalformed || !valid_key(value)) {
      key->clear();
      return Extract::kInvalid;
    }
    *key = std::move(value);
    return Extract::kFound;
  }
  key->clear();
  return Extract::kAbsent;
}

std::string fingerprint(std::string_view method, std::string_view path, std::string_view body) {
  Hash128 h(kFingerprintSeedA, kFingerprintSeedB);
  h.add_field(method);
  h.add_field(path);
  h.add_field(body);
  return h.hex();
}

std::string digest_hex(std::string_view data) {
  Hash128 h(kDigestSeedA, kDigestSeedB);
  h.add_field(data);
  return h.hex();
}

}  // namespace fg::idempotency
