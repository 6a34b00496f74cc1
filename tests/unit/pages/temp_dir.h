// A fresh directory under the system temp dir for template files, removed at scope exit
// (shared by the pages suite and the [pages] tests of the config suite).
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace fg::pages_test {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("fg_pages_" + std::to_string(::getpid()) + "_" + std::to_string(++counter));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    const std::filesystem::path p = path / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
};

}  // namespace fg::pages_test
