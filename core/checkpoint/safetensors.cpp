#include "plugformer/safetensors.h"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <mutex>
#include <map>
#include <fcntl.h>
#include <fstream>
#include <limits>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/Functions.h>
#include <nlohmann/json.hpp>

#include "plugformer/error.h"

namespace plugformer {

namespace {

// The reference implementation refuses headers above 100 MB.
constexpr uint64_t kMaxHeaderSize = 100'000'000;

struct DtypeEntry {
  const char* name;
  c10::ScalarType type;
  size_t size;
};
constexpr DtypeEntry kDtypes[] = {
    {"F64", c10::kDouble, 8}, {"F32", c10::kFloat, 4},  {"F16", c10::kHalf, 2},
    {"BF16", c10::kBFloat16, 2}, {"I64", c10::kLong, 8}, {"I32", c10::kInt, 4},
    {"I16", c10::kShort, 2},  {"I8", c10::kChar, 1},    {"U8", c10::kByte, 1},
    {"BOOL", c10::kBool, 1},  {"C64", c10::kComplexFloat, 8},
};
// Valid safetensors dtypes that libtorch 1.13 has no type for.
constexpr const char* kUnsupportedDtypes[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2"};

const DtypeEntry* find_dtype(const std::string& name) {
  for (const auto& e : kDtypes)
    if (name == e.name) return &e;
  return nullptr;
}

// Live file mappings (start -> end), so release_mapped_pages can tell a checkpoint's pages from
// memory it must not drop.
std::mutex mappings_mutex;
std::map<uintptr_t, uintptr_t> live_mappings;

// A file truncated in place while mapped takes its pages with it: the next touch of one raises
// SIGBUS. The process cannot go on without those weights, but it must not die unexplained, so a
// SIGBUS inside a weights mapping is reported with the file's name before the signal takes its
// course. The handler reads this fixed table, which needs no lock: `begin` is published last.
struct MappedFileSlot {
  std::atomic<uintptr_t> begin{0}, end{0};
  char path[240] = {};
};
constexpr uintptr_t kClaimed = 1;
MappedFileSlot mapped_files[256];
struct sigaction sigbus_before {};

void write_stderr(const char* text) {
  if (::write(STDERR_FILENO, text, std::strlen(text)) < 0) return;
}

void report_sigbus(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (const auto& slot : mapped_files) {
    const uintptr_t begin = slot.begin.load(), end = slot.end.load();
    if (begin > kClaimed && addr >= begin && addr < end) {
      write_stderr("plugformer: the weights file ");
      write_stderr(slot.path);
      write_stderr(" was truncated while a loaded model maps it; its weights are gone, the process cannot "
                   "continue (replace model files by writing a new file and renaming it over the old one)\n");
      break;
    }
  }
  if ((sigbus_before.sa_flags & SA_SIGINFO) && sigbus_before.sa_sigaction) {
    sigbus_before.sa_sigaction(sig, info, context);
  } else if (sigbus_before.sa_handler != SIG_DFL && sigbus_before.sa_handler != SIG_IGN) {
    sigbus_before.sa_handler(sig);
  } else {
    ::signal(SIGBUS, SIG_DFL);
    ::raise(SIGBUS);
  }
}

MappedFileSlot* publish_mapping(uintptr_t begin, uintptr_t end, const std::string& path) {
  static std::once_flag install;
  std::call_once(install, [] {
    struct sigaction action {};
    action.sa_sigaction = report_sigbus;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, &sigbus_before);
  });
  for (auto& slot : mapped_files) {
    uintptr_t free_slot = 0;
    if (!slot.begin.compare_exchange_strong(free_slot, kClaimed)) continue;
    const size_t n = std::min(path.size(), sizeof(slot.path) - 1);
    std::memcpy(slot.path, path.data(), n);
    slot.path[n] = '\0';
    slot.end.store(end);
    slot.begin.store(begin);
    return &slot;
  }
  return nullptr;  // more than 256 files mapped: those beyond go unnamed (SIGBUS still ends the process)
}

class Mapping {
 public:
  Mapping(void* addr, size_t size, const std::string& path)
      : addr_(addr), size_(size), slot_(publish_mapping(uintptr_t(addr), uintptr_t(addr) + size, path)) {
    std::lock_guard<std::mutex> lock(mappings_mutex);
    live_mappings[uintptr_t(addr)] = uintptr_t(addr) + size;
  }
  ~Mapping() {
    {
      std::lock_guard<std::mutex> lock(mappings_mutex);
      live_mappings.erase(uintptr_t(addr_));
    }
    if (slot_) {
      slot_->end.store(0);
      slot_->begin.store(0);
    }
    if (addr_ && size_) ::munmap(addr_, size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

 private:
  void* addr_;
  size_t size_;
  MappedFileSlot* slot_;
};

}  // namespace

SafetensorsFile::~SafetensorsFile() = default;

void release_mapped_pages(const at::Tensor& tensor) {
  if (!tensor.defined() || tensor.nbytes() == 0) return;
  const auto page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(tensor.data_ptr()), end = begin + tensor.nbytes();
  {
    std::lock_guard<std::mutex> lock(mappings_mutex);
    auto it = live_mappings.upper_bound(begin);
    if (it == live_mappings.begin() || (--it)->second < end) return;  // not (wholly) in a checkpoint mapping
  }
  // Whole pages inside the tensor only: a neighbour's bytes (perhaps a zero-copy weight) stay mapped.
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& file) {
  const std::string where = file.string();
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) throw FileNotFoundError(where + ": no such file");
    throw IOError(where + ": cannot open (" + std::strerror(errno) + ")");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw CheckpointError(where + ": not a regular file");
  }
  const uint64_t file_size = uint64_t(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    throw CheckpointError(where + ": truncated safetensors file (" + std::to_string(file_size) +
                          " bytes, expected at least the 8-byte header length)");
  }
  void* addr = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (addr == MAP_FAILED) throw IOError(where + ": mmap failed (" + std::strerror(errno) + ")");
  auto mapping = std::make_shared<Mapping>(addr, file_size, where);
  const auto* bytes = static_cast<const uint8_t*>(addr);

  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes, 8);  // little endian, as the format says
  if (header_size > kMaxHeaderSize)
    throw CheckpointError(where + ": header length " + std::to_string(header_size) +
                          " exceeds the 100000000-byte limit");
  if (header_size > file_size - 8)
    throw CheckpointError(where + ": header length " + std::to_string(header_size) + " runs past the end of the file (" +
                          std::to_string(file_size) + " bytes)");
  const std::string_view header_text(reinterpret_cast<const char*>(bytes + 8), header_size);
  if (header_text.empty() || header_text.front() != '{')
    throw CheckpointError(where + ": header must be a JSON object starting with '{'");

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_text);
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(where + ": header is not valid JSON (" + e.what() + ")");
  }
  if (!header.is_object()) throw CheckpointError(where + ": header must be a JSON object");

  std::shared_ptr<SafetensorsFile> result(new SafetensorsFile());
  result->path_ = file;
  result->mapping_ = mapping;
  result->data_ = bytes + 8 + header_size;
  const uint64_t data_size = file_size - 8 - header_size;

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) throw CheckpointError(where + ": __metadata__ must be an object of strings");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) throw CheckpointError(where + ": __metadata__." + k + " must be a string");
        result->metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string field = where + ": tensor '" + name + "'";
    if (!entry.is_object()) throw CheckpointError(field + " must be an object {dtype, shape, data_offsets}");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) throw CheckpointError(field + ": missing or non-string 'dtype'");
    if (shape_it == entry.end() || !shape_it->is_array()) throw CheckpointError(field + ": missing or non-list 'shape'");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2)
      throw CheckpointError(field + ": 'data_offsets' must be [begin, end]");

    TensorInfo info;
    info.dtype = dtype_it->get<std::string>();
    const DtypeEntry* dt = find_dtype(info.dtype);
    if (!dt) {
      for (const char* u : kUnsupportedDtypes)
        if (info.dtype == u) throw CheckpointError(field + ": dtype " + info.dtype + " is not supported by libtorch 1.13");
      throw CheckpointError(field + ": unknown dtype '" + info.dtype + "'");
    }
    info.scalar_type = dt->type;
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : *shape_it) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        throw CheckpointError(field + ": shape entries must be non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > uint64_t(std::numeric_limits<int64_t>::max())) overflow = true;
      info.shape.push_back(int64_t(dim));
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim) overflow = true;
      numel *= dim;
    }
    if (overflow || numel > std::numeric_limits<uint64_t>::max() / dt->size)
      throw CheckpointError(field + ": shape size overflows");
    for (const auto& o : *offsets_it)
      if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<int64_t>() >= 0))
        throw CheckpointError(field + ": data_offsets must be non-negative integers");
    info.begin = (*offsets_it)[0].get<uint64_t>();
    info.end = (*offsets_it)[1].get<uint64_t>();
    if (info.end < info.begin) throw CheckpointError(field + ": data_offsets end < begin");
    if (info.end - info.begin != numel * dt->size)
      throw CheckpointError(field + ": data_offsets span " + std::to_string(info.end - info.begin) +
                            " bytes but dtype " + info.dtype + " and shape need " + std::to_string(numel * dt->size));
    if (info.end > data_size)
      throw CheckpointError(field + ": data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                            ") lie outside the data section of " + std::to_string(data_size) + " bytes (truncated file?)");
    result->keys_.push_back(name);
    result->infos_.emplace(name, std::move(info));
  }

  // Tensors must tile the data section exactly: no overlap, no hole, nothing left over.
  std::vector<const std::pair<const std::string, TensorInfo>*> order;
  for (const auto& kv : result->infos_) order.push_back(&kv);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return std::tie(a->second.begin, a->second.end) < std::tie(b->second.begin, b->second.end);
  });
  uint64_t expected = 0;
  for (const auto* kv : order) {
    if (kv->second.begin < expected)
      throw CheckpointError(where + ": tensor '" + kv->first + "' overlaps the previous tensor");
    if (kv->second.begin > expected)
      throw CheckpointError(where + ": gap in the data section before tensor '" + kv->first + "'");
    expected = kv->second.end;
  }
  if (expected != data_size)
    throw CheckpointError(where + ": data section is " + std::to_string(data_size) + " bytes but the tensors cover " +
                          std::to_string(expected));
  return result;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  if (it == infos_.end()) throw CheckpointError(path_.string() + ": no tensor named '" + name + "'");
  return it->second;
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorInfo& ti = info(name);
  auto options = at::TensorOptions().dtype(ti.scalar_type);
  void* ptr = const_cast<uint8_t*>(data_ + ti.begin);
  const size_t align = c10::elementSize(ti.scalar_type);
  if (ti.begin == ti.end) return at::empty(ti.shape, options);
  if (reinterpret_cast<uintptr_t>(ptr) % align != 0)  // misaligned: a copy is the only safe view
    return at::from_blob(ptr, ti.shape, options).clone();
  auto keep = mapping_;
  return at::from_blob(ptr, ti.shape, [keep](void*) mutable { keep.reset(); }, options);
}

std::string safetensors_dtype_name(c10::ScalarType type) {
  for (const auto& e : kDtypes)
    if (e.type == type) return e.name;
  throw CheckpointError(std::string("dtype ") + c10::toString(type) + " cannot be stored in safetensors");
}

void save_safetensors(const std::filesystem::path& file, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, at::Tensor>> items;
  for (const auto& [name, t] : tensors) items.emplace_back(name, t.detach().to(at::kCPU).contiguous());
  // As the Python writer: larger dtypes first (keeps alignment), then by name.
  std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    const auto sa = a.second.element_size(), sb = b.second.element_size();
    return sa != sb ? sa > sb : a.first < b.first;
  });
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : items) {
    if (header.contains(name)) throw CheckpointError(file.string() + ": duplicate tensor name '" + name + "'");
    const uint64_t bytes = uint64_t(t.numel()) * t.element_size();
    header[name] = {{"dtype", safetensors_dtype_name(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t header_size = text.size();

  const auto tmp = std::filesystem::path(file.string() + ".tmp." + std::to_string(::getpid()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw IOError(file.string() + ": cannot open for writing");
    out.write(reinterpret_cast<const char*>(&header_size), 8);
    out.write(text.data(), std::streamsize(text.size()));
    for (const auto& [name, t] : items)
      out.write(static_cast<const char*>(t.data_ptr()), std::streamsize(t.numel() * t.element_size()));
    if (!out.flush()) {
      out.close();
      std::filesystem::remove(tmp);
      throw IOError(file.string() + ": write failed");
    }
  }
  std::filesystem::rename(tmp, file);
}

}  // namespace plugformer
