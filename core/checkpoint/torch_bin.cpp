// pytorch_model.bin: torch.save's ZIP archive, checked (check_torch_bin) before libtorch's pickle
// loader reads it, since that loader trusts its input. Apart from checkpoint.cpp so the check
// builds without the Hub and the other loaders (fuzz/torch_bin).
#include "checkpoint/checkpoint.h"

#include <caffe2/serialize/versions.h>
#include <torch/serialize.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <optional>

#include "plugformer/error.h"
#include "tokenizers/unicode.h"

namespace plugformer {

namespace {

// Little-endian integer of `n` bytes at `at` (the caller checked the bounds).
uint64_t le(std::string_view b, uint64_t at, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | uint8_t(b[at + uint64_t(i)]);
  return v;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A name read from the file, fit for a message: quoted, printable ASCII, at most 60 characters.
std::string printable(std::string_view s) {
  std::string out = "'";
  for (char c : s.substr(0, 60)) out += c >= 0x20 && c < 0x7f ? c : '?';
  return out + (s.size() > 60 ? "...'" : "'");
}

// ---------------------------------------------------------------------------------------------
// The ZIP archive

constexpr uint32_t kLocalHeader = 0x04034b50, kCentralHeader = 0x02014b50, kEnd = 0x06054b50,
                   kZip64End = 0x06064b50, kZip64Locator = 0x07064b50;
constexpr uint64_t kSee64 = 0xFFFFFFFF;  // a 32-bit field whose value is in the ZIP64 extra field

// The entries of a ZIP archive as torch.save writes it: one disk, stored (uncompressed,
// unencrypted) entries that do not overlap, ZIP64 records for big files. Read from the central
// directory, each entry's local header checked against it, as libtorch's reader (miniz) reads them.
class ZipEntries {
 public:
  ZipEntries(std::string_view file, const std::string& name) : b_(file), name_(name) { read(); }

  std::map<std::string, std::string_view> data;  // entry name -> its bytes
  std::string first;                              // the first entry's name

 private:
  [[noreturn]] void fail(const std::string& problem) const { throw CheckpointError(name_ + ": " + problem); }
  [[noreturn]] void fail_entry(const std::string& entry, const std::string& problem) const {
    fail("ZIP entry " + printable(entry) + " " + problem);
  }

  std::optional<uint64_t> end_record() const {
    if (b_.size() < 22) return std::nullopt;
    // The last 22 bytes, unless the archive has a comment of the length the record states.
    for (uint64_t at = b_.size() - 22;; --at) {
      if (le(b_, at, 4) == kEnd && at + 22 + le(b_, at + 20, 2) == b_.size()) return at;
      if (at == 0 || b_.size() - at >= 22 + 0xFFFF) return std::nullopt;
    }
  }

  void read() {
    const std::optional<uint64_t> end = end_record();
    if (!end) {
      if (b_.substr(0, 4) == std::string_view("\x80\x02\x8a\x0a", 4))  // the legacy format's pickled magic number
        fail("a torch.save file in the legacy format of PyTorch < 1.6, which is not supported (re-save it with a "
             "newer PyTorch)");
      fail("not a ZIP archive (no end of central directory record), which torch.save writes");
    }
    uint64_t count = le(b_, *end + 10, 2), cd_size = le(b_, *end + 12, 4), cd_offset = le(b_, *end + 16, 4);
    if (le(b_, *end + 4, 2) != 0 || le(b_, *end + 6, 2) != 0 || le(b_, *end + 8, 2) != count)
      fail("a multi-disk ZIP archive");
    uint64_t cd_end = *end;  // the central directory ends where the end records start
    if (*end >= 20 && le(b_, *end - 20, 4) == kZip64Locator) {
      // ZIP64 (torch.save's files over 4 GiB): a locator just before the end record points at the
      // ZIP64 end record, which fills the space up to the locator and holds the true values.
      const uint64_t locator = *end - 20, record = le(b_, locator + 8, 8);
      if (le(b_, locator + 4, 4) != 0 || le(b_, locator + 16, 4) != 1) fail("a multi-disk ZIP64 archive");
      if (record > locator || locator - record < 56 || le(b_, record, 4) != kZip64End ||
          le(b_, record + 4, 8) != locator - record - 12)
        fail("the ZIP64 end of central directory record is missing or malformed");
      count = le(b_, record + 32, 8), cd_size = le(b_, record + 40, 8), cd_offset = le(b_, record + 48, 8);
      if (le(b_, record + 16, 4) != 0 || le(b_, record + 20, 4) != 0 || le(b_, record + 24, 8) != count)
        fail("a multi-disk ZIP64 archive");
      cd_end = record;
    } else if (count == 0xFFFF || cd_size == kSee64 || cd_offset == kSee64) {
      fail("the ZIP64 end of central directory locator is missing");
    }
    if (cd_offset > cd_end || cd_size != cd_end - cd_offset)
      fail("the central directory (" + std::to_string(cd_size) + " bytes at offset " + std::to_string(cd_offset) +
           ") does not end where the end of central directory record starts (offset " + std::to_string(cd_end) + ")");

    std::vector<std::pair<uint64_t, uint64_t>> spans;  // each entry's local header and data
    uint64_t at = cd_offset;
    for (uint64_t i = 0; i < count; ++i) {
      if (cd_end - at < 46 || le(b_, at, 4) != kCentralHeader)
        fail("central directory entry " + std::to_string(i) + " of " + std::to_string(count) + " is missing or malformed");
      const uint64_t name_len = le(b_, at + 28, 2), extra_len = le(b_, at + 30, 2), comment_len = le(b_, at + 32, 2);
      if (cd_end - at - 46 < name_len + extra_len + comment_len)
        fail("central directory entry " + std::to_string(i) + " runs past the central directory");
      const std::string entry(b_.substr(at + 46, name_len));
      uint64_t compressed = le(b_, at + 20, 4), size = le(b_, at + 24, 4), local = le(b_, at + 42, 4);
      // The fields set to 0xFFFFFFFF are 8-byte values in the ZIP64 extra field, in this order.
      std::string_view zip64 = zip64_field(b_.substr(at + 46 + name_len, extra_len), entry);
      for (uint64_t* field : {&size, &compressed, &local}) {
        if (*field != kSee64) continue;
        if (zip64.size() < 8) fail_entry(entry, "lacks the ZIP64 extra field its sizes refer to");
        *field = le(zip64, 0, 8);
        zip64.remove_prefix(8);
      }
      const uint64_t flags = le(b_, at + 8, 2), method = le(b_, at + 10, 2);
      if (flags & 0x2041) fail_entry(entry, "is encrypted");
      if (method != 0) fail_entry(entry, "is compressed (method " + std::to_string(method) + "); torch.save stores entries");
      if (compressed != size) fail_entry(entry, "has a stored size unequal to its size");
      if (le(b_, at + 34, 2) != 0) fail("a multi-disk ZIP archive");
      const uint64_t start = local_data(local, entry, size, cd_offset);
      if (!data.emplace(entry, b_.substr(start, size)).second) fail_entry(entry, "appears twice");
      if (i == 0) first = entry;
      spans.emplace_back(local, start + size);
      at += 46 + name_len + extra_len + comment_len;
    }
    if (at != cd_end) fail("the central directory holds more than its " + std::to_string(count) + " entries");
    std::sort(spans.begin(), spans.end());
    for (size_t i = 1; i < spans.size(); ++i)
      if (spans[i - 1].second > spans[i].first) fail("ZIP entries overlap (at offset " + std::to_string(spans[i].first) + ")");
  }

  // The ZIP64 field (id 1) of an extra field, empty when absent; the extra field must be well formed.
  std::string_view zip64_field(std::string_view extra, const std::string& entry) const {
    std::string_view found;
    while (!extra.empty()) {
      if (extra.size() < 4 || extra.size() - 4 < le(extra, 2, 2)) fail_entry(entry, "has a malformed extra field");
      const uint64_t id = le(extra, 0, 2), len = le(extra, 2, 2);
      if (id == 1) found = extra.substr(4, len);
      extra.remove_prefix(4 + len);
    }
    return found;
  }

  // Where the data of the entry with its local header at `local` starts; the header must agree with
  // the central directory and the data lie before `limit` (the central directory).
  uint64_t local_data(uint64_t local, const std::string& entry, uint64_t size, uint64_t limit) const {
    if (local > limit || limit - local < 30 || le(b_, local, 4) != kLocalHeader)
      fail_entry(entry, "has no local header at offset " + std::to_string(local));
    const uint64_t flags = le(b_, local + 6, 2), method = le(b_, local + 8, 2);
    const uint64_t compressed = le(b_, local + 18, 4), stored = le(b_, local + 22, 4);
    const uint64_t name_len = le(b_, local + 26, 2), extra_len = le(b_, local + 28, 2);
    if (limit - local - 30 < name_len + extra_len) fail_entry(entry, "has a local header running into the central directory");
    if (b_.substr(local + 30, name_len) != entry)
      fail_entry(entry, "has a local header naming " + printable(b_.substr(local + 30, name_len)));
    if (method != 0) fail_entry(entry, "is compressed in its local header");
    zip64_field(b_.substr(local + 30 + name_len, extra_len), entry);
    // Without a data descriptor (flag 3) the local sizes are the sizes, or point at ZIP64 ones.
    if (!(flags & 8) && !(compressed == size && stored == size) && !(compressed == kSee64 && stored == kSee64))
      fail_entry(entry, "has a local header giving another size");
    const uint64_t start = local + 30 + name_len + extra_len;
    if (limit - start < size)
      fail_entry(entry, "(" + std::to_string(size) + " bytes at offset " + std::to_string(start) +
                            ") runs into the central directory");
    return start;
  }

  std::string_view b_;
  const std::string& name_;
};

// The records torch.save writes in its folder: data.pkl, version, byteorder, data/<storage key>,
// and dot files (.data/version, .data/serialization_id, .format_version, .storage_alignment).
bool torch_save_record(const std::string& r) {
  if (r.empty() || r.find('\0') != std::string::npos || r.find('\\') != std::string::npos ||
      r.find("..") != std::string::npos)
    return false;
  if (r == "data.pkl" || r == "version" || r == "byteorder") return true;
  auto one_name_after = [&](const char* folder) {
    const std::string_view f(folder);
    return r.compare(0, f.size(), f) == 0 && r.size() > f.size() && r.find('/', f.size()) == std::string::npos;
  };
  return one_name_after("data/") || one_name_after(".data/") || (r[0] == '.' && r.find('/') == std::string::npos);
}

// The records of torch.save's archive, by name inside its folder (libtorch takes the folder from
// the first entry), with data.pkl, a version libtorch reads and, when given, little-endian data.
std::map<std::string, std::string_view> torch_save_records(std::string_view bytes, const std::string& name) {
  auto fail = [&](const std::string& problem) { throw CheckpointError(name + ": " + problem); };
  ZipEntries zip(bytes, name);
  if (zip.data.empty()) fail("the ZIP archive is empty");
  const size_t slash = zip.first.find('/');
  if (slash == std::string::npos || slash == 0) fail("ZIP entry " + printable(zip.first) + " is not in a folder, as torch.save's are");
  const std::string folder = zip.first.substr(0, slash + 1);
  std::map<std::string, std::string_view> records;
  for (const auto& [entry, data] : zip.data) {
    if (entry.compare(0, folder.size(), folder) != 0) fail("ZIP entry " + printable(entry) + " is outside the folder " + printable(folder));
    const std::string record = entry.substr(folder.size());
    if (!torch_save_record(record))
      fail("ZIP entry " + printable(entry) + " is not one torch.save writes (data.pkl, version, byteorder, data/<key>, dot files)");
    records[record] = data;
  }
  if (!records.count("data.pkl")) fail("the archive has no " + folder + "data.pkl");
  // libtorch reads .data/version when present, else version: a decimal number and a newline.
  const char* version_record = records.count(".data/version") ? ".data/version" : "version";
  if (!records.count(version_record)) fail("the archive has no " + folder + "version");
  std::string_view text = records[version_record];
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  uint64_t version = 0;
  if (text.size() > 4 || !all_digits(text))
    fail(folder + version_record + " is not a version number");
  for (char c : text) version = version * 10 + uint64_t(c - '0');
  if (version < caffe2::serialize::kMinSupportedFileFormatVersion || version > caffe2::serialize::kMaxSupportedFileFormatVersion)
    fail("file format version " + std::to_string(version) + " is not supported (" +
         std::to_string(caffe2::serialize::kMinSupportedFileFormatVersion) + " to " +
         std::to_string(caffe2::serialize::kMaxSupportedFileFormatVersion) + ")");
  if (auto order = records.find("byteorder"); order != records.end() && order->second != "little")
    fail("the tensors were saved " + printable(order->second) + "-endian; only little-endian files are read");
  return records;
}

// ---------------------------------------------------------------------------------------------
// The pickle

// The storage classes torch.save names (GLOBAL torch <Type>Storage) for the dtypes models use.
struct StorageClass {
  const char* name;
  int64_t itemsize;
};
constexpr StorageClass kStorageClasses[] = {
    {"FloatStorage", 4}, {"HalfStorage", 2}, {"BFloat16Storage", 2}, {"DoubleStorage", 8}, {"LongStorage", 8},
    {"IntStorage", 4},   {"ShortStorage", 2}, {"CharStorage", 1},    {"ByteStorage", 1},   {"BoolStorage", 1}};

// What the check knows of a pickled value.
struct Value {
  enum Kind { Int, Bool, String, Tuple, Dict, StorageType, Storage, Tensor, Hooks, RebuildTensor, OrderedDict, RestoreTypeTag };
  Kind kind;
  int64_t number = 0;    // Int, Bool: the value; Dict: its items so far; Storage: its elements
  int64_t itemsize = 0;  // StorageType, Storage
  std::string text;      // String
  std::vector<std::shared_ptr<Value>> items;  // Tuple
  int depth = 0;         // Tuple: how deep tuples nest in it
};
using ValuePtr = std::shared_ptr<Value>;

const char* kind_name(Value::Kind k) {
  static const char* names[] = {"an integer", "a boolean", "a string", "a tuple", "a dict", "a storage class",
                                "a storage", "a tensor", "an OrderedDict", "_rebuild_tensor_v2", "OrderedDict",
                                "restore_type_tag"};
  return names[k];
}

// Runs the pickle on a model of the unpickler's stack and memo (Python's pickle machine, which
// libtorch's follows) and fails on anything torch.save's state dicts do not hold: opcodes, globals,
// stack shapes, persistent ids naming missing entries, tensors outside their storages.
class PickleCheck {
 public:
  PickleCheck(std::string_view pickle, const std::map<std::string, std::string_view>& records, const std::string& name)
      : p_(pickle), records_(records), name_(name) {}

  void run() {
    if (take(1) != "\x80" || take(1) != "\x02") fail("not a protocol 2 pickle, which torch.save writes");
    for (;;) {
      op_ = pos_;
      if (pos_ == p_.size()) fail("the pickle ends without STOP");
      const uint8_t opcode = uint8_t(take(1)[0]);
      switch (opcode) {
        case '}': push(Value::Dict); break;                     // EMPTY_DICT
        case ')': push(Value::Tuple); break;                    // EMPTY_TUPLE
        case '(': marks_.push_back(stack_.size()); break;       // MARK
        case 'q': memoize(number(1)); break;                    // BINPUT
        case 'r': memoize(number(4)); break;                    // LONG_BINPUT
        case 'h': recall(number(1)); break;                     // BINGET
        case 'j': recall(number(4)); break;                     // LONG_BINGET
        case 'X': string(take(number(4))); break;               // BINUNICODE
        case 'c': global(); break;                              // GLOBAL
        case 't': tuple(pop_mark()); break;                     // TUPLE
        case 0x85: case 0x86: case 0x87: tuple(pop(opcode - 0x84)); break;  // TUPLE1, TUPLE2, TUPLE3
        case 'K': integer(int64_t(number(1))); break;           // BININT1
        case 'M': integer(int64_t(number(2))); break;           // BININT2
        case 'J': integer(int32_t(uint32_t(number(4)))); break;  // BININT
        case 0x8a:                                              // LONG1: libtorch reads 8-byte ones only
          if (number(1) != 8) fail("LONG1 of other than 8 bytes, which libtorch's loader does not read");
          integer(int64_t(number(8)));
          break;
        case 0x88: case 0x89: push(Value::Bool)->number = opcode == 0x88; break;  // NEWTRUE, NEWFALSE
        case 'Q': persistent_id(); break;                       // BINPERSID
        case 'R': reduce(); break;                              // REDUCE
        case 's': set_item(); break;                            // SETITEM
        case 'u': set_items(); break;                           // SETITEMS
        case '.': return stop();                                // STOP
        default: fail("opcode " + std::to_string(opcode) + " is not one torch.save writes for a state dict");
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    throw CheckpointError(name_ + ": data.pkl: " + problem + " (at byte " + std::to_string(op_) + ")");
  }
  std::string_view take(uint64_t n) {
    if (p_.size() - pos_ < n) fail("the pickle ends inside an opcode");
    const std::string_view bytes = p_.substr(pos_, n);
    pos_ += n;
    return bytes;
  }
  uint64_t number(int n) { return le(take(uint64_t(n)), 0, n); }

  // The values since the last MARK (all of them without one).
  size_t frame() const { return stack_.size() - (marks_.empty() ? 0 : marks_.back()); }
  ValuePtr push(Value::Kind kind) { return stack_.emplace_back(std::make_shared<Value>(Value{kind})); }
  std::vector<ValuePtr> pop(size_t n) {
    if (frame() < n) fail("an opcode takes " + std::to_string(n) + " values from a stack holding " + std::to_string(frame()));
    std::vector<ValuePtr> out(stack_.end() - long(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return out;
  }
  std::vector<ValuePtr> pop_mark() {
    if (marks_.empty()) fail("an opcode needs a MARK and there is none");
    std::vector<ValuePtr> out = pop(frame());
    marks_.pop_back();
    return out;
  }
  void expect(const ValuePtr& v, Value::Kind kind, const std::string& what) const {
    if (v->kind != kind) fail(what + " must be " + kind_name(kind) + ", got " + kind_name(v->kind));
  }

  // Picklers number memo slots in order, so a slot is an old one or the next one.
  void memoize(uint64_t slot) {
    if (frame() == 0) fail("BINPUT with nothing to store");
    if (slot > memo_.size()) fail("memo slot " + std::to_string(slot) + " skips slots");
    if (slot == memo_.size()) memo_.push_back(stack_.back());
    else memo_[slot] = stack_.back();
  }
  void recall(uint64_t slot) {
    if (slot >= memo_.size()) fail("memo slot " + std::to_string(slot) + " was never stored");
    stack_.push_back(memo_[slot]);
  }
  void string(std::string_view text) {
    if (!tok::utf8_valid(text)) fail("a string that is not UTF-8");
    push(Value::String)->text = text;
  }
  void integer(int64_t value) { push(Value::Int)->number = value; }
  // torch.save nests tuples two deep (a tensor's arguments hold its size); far deeper nesting would
  // overflow the stack when libtorch frees the values.
  void tuple(std::vector<ValuePtr> items) {
    int depth = 1;
    for (const auto& item : items) depth = std::max(depth, item->depth + 1);
    if (depth > 8) fail("tuples nested deeper than 8");
    const ValuePtr t = push(Value::Tuple);
    t->items = std::move(items), t->depth = depth;
  }

  std::string line() {
    const size_t newline = p_.find('\n', pos_);
    if (newline == std::string_view::npos || newline - pos_ > 200) fail("GLOBAL without its newline");
    const std::string text(p_.substr(pos_, newline - pos_));
    pos_ = newline + 1;
    return text;
  }

  void global() {
    const std::string module = line(), name = line();
    const auto storage = std::find_if(std::begin(kStorageClasses), std::end(kStorageClasses),
                                      [&](const StorageClass& c) { return module == "torch" && name == c.name; });
    if (storage != std::end(kStorageClasses)) push(Value::StorageType)->itemsize = storage->itemsize;
    else if (module == "torch._utils" && name == "_rebuild_tensor_v2") push(Value::RebuildTensor);
    else if (module == "collections" && name == "OrderedDict") push(Value::OrderedDict);
    else if (module == "torch.jit._pickle" && name == "restore_type_tag") push(Value::RestoreTypeTag);  // libtorch's files
    else
      fail("GLOBAL " + printable(module + "." + name) + " is not one a state dict of tensors uses (_rebuild_tensor_v2, "
           "the storage classes of float, integer and bool dtypes, OrderedDict)");
  }

  // ('storage', storage class, key, location, elements): the storage in entry data/<key>.
  void persistent_id() {
    const ValuePtr id = pop(1)[0];
    const auto& f = id->items;
    if (id->kind != Value::Tuple || f.size() != 5 || f[0]->kind != Value::String || f[0]->text != "storage" ||
        f[1]->kind != Value::StorageType || f[2]->kind != Value::String || f[3]->kind != Value::String ||
        f[4]->kind != Value::Int)
      fail("a persistent id must be ('storage', storage class, key, location, size)");
    const std::string& key = f[2]->text;
    const auto record = records_.find("data/" + key);
    if (record == records_.end()) fail("storage " + printable(key) + " has no entry data/" + key);
    const std::string& location = f[3]->text;
    const bool cuda = location == "cuda" || (location.compare(0, 5, "cuda:") == 0 && location.size() <= 8 &&
                                             all_digits(std::string_view(location).substr(5)));
    if (location != "cpu" && !cuda) fail("storage " + printable(key) + " is on device " + printable(location) + " (cpu or cuda expected)");
    const int64_t elements = f[4]->number, itemsize = f[1]->itemsize;
    if (elements < 0 || uint64_t(elements) > record->second.size() / uint64_t(itemsize))
      fail("storage " + printable(key) + " of " + std::to_string(elements) + " elements of " + std::to_string(itemsize) +
           " bytes does not fit its entry of " + std::to_string(record->second.size()) + " bytes");
    const ValuePtr storage = push(Value::Storage);
    storage->number = elements, storage->itemsize = itemsize;
  }

  void reduce() {
    const auto taken = pop(2);
    const ValuePtr callable = taken[0], args = taken[1];
    expect(args, Value::Tuple, "REDUCE's arguments");
    switch (callable->kind) {
      case Value::OrderedDict:  // OrderedDict(): a tensor's backward hooks
        if (!args->items.empty()) fail("OrderedDict with arguments; torch.save writes empty ones (backward hooks)");
        push(Value::Hooks);
        return;
      case Value::RebuildTensor:
        check_tensor(args->items);
        push(Value::Tensor);
        return;
      case Value::RestoreTypeTag:  // libtorch's pickle_save: (dict, its type)
        if (args->items.size() != 2 || args->items[0]->kind != Value::Dict || args->items[1]->kind != Value::String ||
            args->items[1]->text != "Dict[str, Tensor]")
          fail("restore_type_tag's arguments must be a dict and 'Dict[str, Tensor]'");
        stack_.push_back(args->items[0]);
        return;
      default:
        fail(std::string("REDUCE calls ") + kind_name(callable->kind) + ", which is not callable");
    }
  }

  // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks[, metadata]):
  // sizes and strides >= 0, no more elements than the storage, the last one inside it.
  void check_tensor(const std::vector<ValuePtr>& a) {
    if (a.size() != 6 && !(a.size() == 7 && a[6]->kind == Value::Dict && a[6]->number == 0))
      fail("_rebuild_tensor_v2 takes (storage, offset, size, stride, requires_grad, backward_hooks)");
    expect(a[0], Value::Storage, "a tensor's storage");
    expect(a[1], Value::Int, "a tensor's storage offset");
    expect(a[2], Value::Tuple, "a tensor's size");
    expect(a[3], Value::Tuple, "a tensor's stride");
    expect(a[4], Value::Bool, "a tensor's requires_grad");
    expect(a[5], Value::Hooks, "a tensor's backward hooks");
    const auto& sizes = a[2]->items;
    const auto& strides = a[3]->items;
    if (sizes.size() != strides.size()) fail("a tensor's size and stride differ in length");
    const int64_t capacity = a[0]->number, offset = a[1]->number;
    int64_t elements = 1, last = offset;
    for (size_t d = 0; d < sizes.size(); ++d) {
      expect(sizes[d], Value::Int, "a tensor's size");
      expect(strides[d], Value::Int, "a tensor's stride");
      const int64_t size = sizes[d]->number, stride = strides[d]->number;
      int64_t reach;
      if (size < 0 || stride < 0) fail("a tensor has a negative size or stride");
      if (__builtin_mul_overflow(elements, size, &elements) || elements > capacity ||
          (size > 0 && (__builtin_mul_overflow(size - 1, stride, &reach) || __builtin_add_overflow(last, reach, &last))))
        fail("a tensor reaches past the " + std::to_string(capacity) + " elements of its storage");
    }
    if (offset < 0 || offset > capacity || (elements > 0 && last >= capacity))
      fail("a tensor reaches past the " + std::to_string(capacity) + " elements of its storage");
  }

  // A state dict's items: string keys, tensor values.
  void add_items(const ValuePtr& dict, const std::vector<ValuePtr>& items) {
    if (dict->kind == Value::Hooks)
      fail("the state dict is a collections.OrderedDict, which libtorch's loader does not read; save dict(state_dict)");
    expect(dict, Value::Dict, "SETITEM's target");
    for (size_t i = 0; i < items.size(); i += 2) {
      expect(items[i], Value::String, "a state dict's key");
      expect(items[i + 1], Value::Tensor, "a state dict's value");
    }
    dict->number += int64_t(items.size() / 2);
  }
  void set_item() {
    const auto items = pop(2);
    if (frame() == 0) fail("SETITEM without a dict");
    add_items(stack_.back(), items);
  }
  void set_items() {
    if (marks_.empty() || marks_.back() == (marks_.size() > 1 ? marks_[marks_.size() - 2] : 0))
      fail("SETITEMS without a dict before its MARK");
    const auto items = pop_mark();
    if (items.size() % 2) fail("SETITEMS with a key and no value");
    add_items(stack_.back(), items);
  }

  void stop() {
    if (pos_ != p_.size()) fail("bytes after STOP");
    if (!marks_.empty() || stack_.size() != 1 || stack_[0]->kind != Value::Dict)
      fail("the pickle is not a dict of tensors (a state dict)");
  }

  std::string_view p_;
  const std::map<std::string, std::string_view>& records_;
  const std::string& name_;
  uint64_t pos_ = 0, op_ = 0;
  std::vector<ValuePtr> stack_, memo_;
  std::vector<size_t> marks_;
};

}  // namespace

void check_torch_bin(std::string_view bytes, const std::string& name) {
  const auto records = torch_save_records(bytes, name);
  PickleCheck(records.at("data.pkl"), records, name).run();
}

std::map<std::string, at::Tensor> read_torch_bin(const std::vector<char>& bytes, const std::string& name) {
  check_torch_bin(std::string_view(bytes.data(), bytes.size()), name);
  c10::IValue value;
  try {
    value = torch::pickle_load(bytes);
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (auto nl = what.find('\n'); nl != std::string::npos) what = what.substr(0, nl);
    throw CheckpointError(name + ": not a readable torch.save zip archive (" + what + ")");
  }
  if (!value.isGenericDict()) throw CheckpointError(name + ": expected a state dict (name -> tensor)");
  std::map<std::string, at::Tensor> out;
  for (const auto& item : value.toGenericDict()) {
    if (!item.key().isString() || !item.value().isTensor())
      throw CheckpointError(name + ": expected a state dict (name -> tensor)");
    out[item.key().toStringRef()] = item.value().toTensor();
  }
  return out;
}

std::map<std::string, at::Tensor> load_torch_bin(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw FileNotFoundError(file.string() + ": no such file");
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return read_torch_bin(bytes, file.string());
}

}  // namespace plugformer
