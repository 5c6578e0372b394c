// Downloads one file through hf_hub_download: hub_download_helper <endpoint> <cache_dir> <repo> <file>.
// The "download killed halfway" test starts this process and kills it mid-transfer.
#include <iostream>

#include "plugformer/hub.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: hub_download_helper <endpoint> <cache_dir> <repo_id> <filename>\n";
    return 2;
  }
  try {
    plugformer::hub::HubOptions o;
    o.endpoint = argv[1];
    o.cache_dir = argv[2];
    std::cout << plugformer::hub::hf_hub_download(argv[3], argv[4], o).string() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
