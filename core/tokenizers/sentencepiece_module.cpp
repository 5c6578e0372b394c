// Opens the SentencePiece module (see core/CMakeLists.txt for why it is separate).
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>

#include <mutex>

#include "plugformer/error.h"
#include "plugformer/tokenizers.h"

namespace plugformer {

namespace {

using CreateFn = void(const TokenizerFiles&, const SentencePieceDefaults&, std::shared_ptr<Tokenizer>&);

CreateFn* sentencepiece_entry() {
  static std::once_flag once;
  static boost::dll::shared_library library;  // kept for the life of the process
  static CreateFn* entry = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    boost::system::error_code ec;
    const auto here = boost::dll::this_line_location(ec).parent_path();
    library.load(here / PLUGFORMER_SENTENCEPIECE_MODULE,
                 boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local | boost::dll::load_mode::rtld_deepbind,
                 ec);
    if (ec) {
      failure = (here / PLUGFORMER_SENTENCEPIECE_MODULE).string() + ": cannot load (" + ec.message() + ")";
      return;
    }
    entry = &library.get<CreateFn>("plugformer_sentencepiece_create");
  });
  if (!entry) throw TokenizerError("SentencePiece support is unavailable: " + failure);
  return entry;
}

}  // namespace

std::shared_ptr<Tokenizer> make_sentencepiece_tokenizer(const TokenizerFiles& files, const SentencePieceDefaults& defaults) {
  std::shared_ptr<Tokenizer> out;
  sentencepiece_entry()(files, defaults, out);
  return out;
}

}  // namespace plugformer
