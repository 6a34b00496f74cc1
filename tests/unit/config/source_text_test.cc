// The byte check that runs before the TOML parser: malformed UTF-8 and NUL bytes
// are reported with their position and never reach toml++.
#include <catch2/catch.hpp>

#include <string>

#include "config/source_text.h"
#include "tests/unit/config/config_test_support.h"

using namespace fg::config_test;
using Catch::StartsWith;

namespace {

// The message of a file that fails the byte check, which must come before any
// TOML error (the file is never parsed).
std::string byte_error(const std::string& text) { return load_error(text); }

}  // namespace

TEST_CASE("malformed UTF-8 is reported with its position, before parsing", "[config]") {
  // In a string value on line 2, after `listen = "` (column 11).
  const std::string prefix = "[server]\nlisten = \"";
  CHECK(byte_error(prefix + "\xff\"\n") ==
        "test.toml:2:11: invalid UTF-8: byte 0xFF never appears in UTF-8 text");
  CHECK(byte_error(prefix + "\xc0\xaf\"\n") ==
        "test.toml:2:11: invalid UTF-8: byte 0xC0 never appears in UTF-8 text");
  CHECK(byte_error(prefix + "\x80\"\n") == "test.toml:2:11: invalid UTF-8: stray continuation byte 0x80");
  CHECK(byte_error(prefix + "\xe0\x80\x80\"\n") ==
        "test.toml:2:11: invalid UTF-8: 0xE0 0x80 starts an overlong encoding");
  CHECK(byte_error(prefix + "\xf0\x80\x80\x80\"\n") ==
        "test.toml:2:11: invalid UTF-8: 0xF0 0x80 starts an overlong encoding");
  CHECK(byte_error(prefix + "\xed\xa0\x80\"\n") ==
        "test.toml:2:11: invalid UTF-8: 0xED 0xA0 starts a UTF-16 surrogate (U+D800-U+DFFF)");
  CHECK(byte_error(prefix + "\xf4\x90\x80\x80\"\n") ==
        "test.toml:2:11: invalid UTF-8: 0xF4 0x90 starts a code point above U+10FFFF");
  CHECK(byte_error(prefix + "\xe2\x82\"\n") ==
        "test.toml:2:11: invalid UTF-8: sequence starting with 0xE2 is cut off by byte 0x22");
  CHECK(byte_error(prefix + "\xf0\x9f\x98") ==
        "test.toml:2:11: invalid UTF-8: sequence starting with 0xF0 cut off by the end of the file");
  // Columns count characters, so a valid multi-byte character before the bad
  // byte moves it by one column.
  CHECK(byte_error(prefix + "\xc3\xa9\xff\"\n") ==
        "test.toml:2:12: invalid UTF-8: byte 0xFF never appears in UTF-8 text");
  // In a comment, in a key, and on the first line.
  CHECK(byte_error("# caf\xe9\n" + kMinimal) == "test.toml:1:6: invalid UTF-8: sequence starting with 0xE9 is cut off by byte 0x0A");
  CHECK(byte_error(kMinimal + "\n[log]\nfi\xfele = \"x\"\n") ==
        "test.toml:13:3: invalid UTF-8: byte 0xFE never appears in UTF-8 text");
  CHECK(byte_error("\xfe\xff[server]\n") == "test.toml:1:1: invalid UTF-8: byte 0xFE never appears in UTF-8 text");
}

TEST_CASE("NUL bytes are refused before parsing", "[config]") {
  CHECK(byte_error(std::string("[server]\nlisten = \"127.0.0.1:8080\0\"\n", 35)) ==
        "test.toml:2:25: NUL byte (0x00): a config file is UTF-8 text");
  CHECK(byte_error(std::string("\0", 1)) == "test.toml:1:1: NUL byte (0x00): a config file is UTF-8 text");
}

TEST_CASE("well-formed UTF-8 passes the byte check", "[config]") {
  // Two-, three- and four-byte characters at the edges of their ranges, and a BOM.
  auto cfg = load_ok("\xef\xbb\xbf# \xc2\x80 \xdf\xbf \xe0\xa0\x80 \xed\x9f\xbf \xee\x80\x80 \xef\xbf\xbf "
                     "\xf0\x90\x80\x80 \xf4\x8f\xbf\xbf\n" +
                     kMinimal + "\n[degrade]\nbody = \"\xe6\x9c\x8d\xe5\x8a\xa1\xe7\xb9\x81\xe5\xbf\x99 \xf0\x9f\x99\x8f\"\n");
  CHECK(cfg->degrade.body == "\xe6\x9c\x8d\xe5\x8a\xa1\xe7\xb9\x81\xe5\xbf\x99 \xf0\x9f\x99\x8f");
  CHECK_FALSE(fg::config::find_text_problem(kMinimal).has_value());
}

TEST_CASE("truncated files that upset the TOML parser are syntax errors", "[config]") {
  // Each of these once reached an assertion or undefined behaviour inside the
  // parser; they must come back as ordinary positioned errors.
  for (const std::string text : {"[\n", "[", "[[", "[[routes]\n[", "a = \"", "a = '''", "a = [", "a = {", "a.", "\xef\xbb\xbf[",
                                 "a = 1\n[\n"}) {
    INFO(text);
    const std::string message = load_error(text);
    CHECK_THAT(message, StartsWith("test.toml:"));
  }
}

TEST_CASE("a table header without a name is refused before parsing", "[config]") {
  // toml++ asserts on these (a debug build aborts): the first character of the
  // header's key is neither a key character nor a quote.
  const std::string message = "expected a table name after '[' (a bare or quoted key)";
  CHECK(byte_error("[\n") == "test.toml:1:2: " + message);
  CHECK(byte_error("[ \n") == "test.toml:1:3: " + message);
  CHECK(byte_error("[\r\n") == "test.toml:1:2: " + message);
  CHECK(byte_error("[.") == "test.toml:1:2: " + message);
  CHECK(byte_error("[#") == "test.toml:1:2: " + message);
  CHECK(byte_error("[=") == "test.toml:1:2: " + message);
  CHECK(byte_error("[[\n") == "test.toml:1:3: " + message);
  CHECK(byte_error("[[\t.routes]]\n") == "test.toml:1:4: " + message);
  CHECK(byte_error(kMinimal + "\n  [\n") == "test.toml:12:4: " + message);
  CHECK(byte_error("# [x]\na = \"[\"\nb = '''\n[\n'''\n[\n") == "test.toml:6:2: " + message);
}

TEST_CASE("brackets inside values and strings are not table headers", "[config]") {
  // A nested array whose inner '[' opens a line, and '[' inside strings and
  // comments, are values: the check must leave them to the parser.
  CHECK_FALSE(fg::config::find_text_problem("a = [\n  [\n    1\n  ],\n]\n").has_value());
  CHECK_FALSE(fg::config::find_text_problem("a = { b = [\n[\n1]] }\n").has_value());
  CHECK_FALSE(fg::config::find_text_problem("a = \"\"\"\n[\n\"\"\"\nb = '''\n[ .\n'''\n# [\n").has_value());
  CHECK_FALSE(fg::config::find_text_problem("a = \"\\\"[\"\n[\"quoted\"]\n[ 'lit' ]\n[[ x ]]\n[]\n").has_value());
  auto cfg = load_ok(kMinimal + "\n[upstreams.other]\nservers = [\n  \"127.0.0.1:9000\",\n]\n");
  CHECK(cfg->upstreams.size() == 2);
}

TEST_CASE("non-ASCII characters only where the TOML parser handles them", "[config]") {
  // toml++ tests such characters against a whitespace table with no answer for
  // U+00A1-U+0499 (undefined behaviour); TOML allows them only in strings and
  // comments anyway.
  CHECK(byte_error(kMinimal + "\n[log]\n\xc3\xa9 = 1\n") ==
        "test.toml:13:1: non-ASCII character outside a string or comment");
  CHECK(byte_error("[server]\nworkers = 1\xc3\xa9\n") ==
        "test.toml:2:12: non-ASCII character outside a string or comment");
  CHECK(byte_error("[server]\nworkers = tr\xc3\xa9\n") ==
        "test.toml:2:13: non-ASCII character outside a string or comment");
  const std::string backslash =
      "non-ASCII character right after a line-ending backslash; write it as a \\u escape such as \\u00e9 or move it after an ASCII "
      "character";
  CHECK(byte_error("[degrade]\nbody = \"\"\"\\\n\xc3\xa9\"\"\"\n") == "test.toml:3:1: " + backslash);
  CHECK(byte_error("[degrade]\nbody = \"\"\"x\\  \n\n   \xd0\x96\"\"\"\n") == "test.toml:4:4: " + backslash);
  // In strings (basic, literal, multi-line) and comments they load.
  auto cfg = load_ok(kMinimal + "# caf\xc3\xa9\n[degrade]\nbody = \"\"\"caf\xc3\xa9\\\n  x\xc3\xa9\"\"\"\n"
                                "content_type = 'text/plain; \xc3\xa9'\n");
  CHECK(cfg->degrade.body == "caf\xc3\xa9x\xc3\xa9");
}

TEST_CASE("a backslash before a non-ASCII character in a multi-line string is refused", "[config]") {
  CHECK(byte_error("[degrade]\nbody = \"\"\"a\\\xc3\xa9\"\"\"\n") ==
        "test.toml:2:13: a backslash followed by a non-ASCII character is not an escape");
}

TEST_CASE("constructs the TOML parser asserts on or misreads are refused", "[config]") {
  // A '}' where an array expects a value trips an assertion in toml++.
  CHECK(byte_error("[server]\nlisten = [}\n") == "test.toml:2:11: '}' inside an array (expected a value or ']')");
  CHECK(byte_error("[server]\nlisten = [\"127.0.0.1:80\",\n}\n") ==
        "test.toml:3:1: '}' inside an array (expected a value or ']')");
  // A quote glued to a bare value is no string start, so what follows it is
  // outside any string.
  const std::string outside = "non-ASCII character outside a string or comment";
  CHECK(byte_error("[degrade]\nbody = 1\"\xc3\xa9\"\n") == "test.toml:2:10: " + outside);
  CHECK(byte_error("[degrade]\nbody = -'\xc3\xa9'\n") == "test.toml:2:10: " + outside);
  CHECK(byte_error("[degrade]\nbody = 1.\"\xc3\xa9\"\n") == "test.toml:2:11: " + outside);
  // A bare value runs to the next terminator, brackets and quotes included.
  CHECK(byte_error("x = 1\"\"\"1[['\xd0\x96'\n") == "test.toml:1:13: " + outside);
  // Quoted keys after a dot, and strings in arrays of inline tables, are strings.
  CHECK_FALSE(fg::config::find_text_problem("\"a\".\"\xc3\xa9\" = 1\nb = [{ c = \"\xc3\xa9\" }, { d = ['\xc3\xa9'] }]\n")
                  .has_value());
}

TEST_CASE("a date-time without a time after its 'T' is refused before parsing", "[config]") {
  CHECK(byte_error("a = 1979-05-27true\n") == "test.toml:1:16: expected a time (HH:MM:SS) after the 'T' of a date-time");
  CHECK(byte_error("a = 1979-05-27T\n") == "test.toml:1:16: expected a time (HH:MM:SS) after the 'T' of a date-time");
  CHECK_FALSE(fg::config::find_text_problem("a = 1979-05-27T07:32:00Z\nb = 1979-05-27 07:32:00\nc = 1979-05-27\n")
                  .has_value());
}

TEST_CASE("a date followed by a space and a lone digit is refused before parsing", "[config]") {
  const std::string message = "expected a time (HH:MM:SS) after the date and space";
  CHECK(byte_error("a = 1979-05-27 1\n") == "test.toml:1:16: " + message);
  CHECK(byte_error("a = [1979-05-27 1]\n") == "test.toml:1:17: " + message);
  CHECK(byte_error("a = 1979-05-27 1 # x\n") == "test.toml:1:16: " + message);
  CHECK_FALSE(fg::config::find_text_problem("a = 1979-05-27 07:32:00\nb = 1979-05-27 # 1\n").has_value());
}
