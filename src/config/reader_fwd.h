// Names of the config walk's types for feature headers that declare a loader;
// the definitions (and toml++) are in config/reader.h, included by *_config.cc only.
#pragma once

namespace fg::config {
class Reader;
class Table;
}  // namespace fg::config
