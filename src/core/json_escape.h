// Escaping of bytes for the inside of a JSON string (the quotes are the caller's). One
// implementation for the log lines, the gateway's error bodies and the demo shop's echo.
#pragma once

#include <string>
#include <string_view>

namespace fg::json {

// What to do with bytes >= 0x80 that do not form valid UTF-8.
enum class InvalidUtf8 {
  kKeep,     // copy them as they are (the text is trusted to be UTF-8 already)
  kEscape,   // write each such byte as \u00XX, its Latin-1 reading, so the output always
             // parses (used where arbitrary header octets are echoed back)
};

// Appends `s` to `out` escaped: \" \\ \n \r \t \b \f, other control bytes and DEL as
// \u00XX. Appends `s` in one piece when nothing needs escaping, so no allocation happens
// beyond what `out` needs for the bytes themselves.
void append_escaped(std::string& out, std::string_view s,
                    InvalidUtf8 invalid = InvalidUtf8::kKeep);

}  // namespace fg::json
