// The config loader under arbitrary text (config::load_string, the in-memory twin of
// load_file). It must never crash, throw or hang: it returns a config or an error whose
// message names the source ("fuzz.toml: ..." or "fuzz.toml:LINE:COL: ...").
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "floodgate/config.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  fg::Result<std::shared_ptr<const fg::Config>> r = fg::config::load_string(text, "fuzz.toml");
  if (r.is_ok()) {
    FUZZ_CHECK(r.value() != nullptr);
  } else {
    FUZZ_CHECK(r.message().rfind("fuzz.toml", 0) == 0);
  }
  return 0;
}
