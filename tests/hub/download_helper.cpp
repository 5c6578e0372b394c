// Downloads through the hub client in a process of its own, for the tests that kill it, run
// several at once or cap its disk:
//   hub_download_helper <endpoint> <cache_dir> <repo> <file>         hf_hub_download
//   hub_download_helper <endpoint> <cache_dir> <repo> --snapshot     snapshot_download
// Prints the path; on failure prints the error and exits 1.
#include <iostream>
#include <string>

#include "plugformer/hub.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: hub_download_helper <endpoint> <cache_dir> <repo_id> <filename|--snapshot>\n";
    return 2;
  }
  try {
    plugformer::hub::HubOptions o;
    o.endpoint = argv[1];
    o.cache_dir = argv[2];
    const std::string what = argv[4];
    const auto path = what == "--snapshot" ? plugformer::hub::snapshot_download(argv[3], o)
                                           : plugformer::hub::hf_hub_download(argv[3], what, o);
    std::cout << path.string() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
