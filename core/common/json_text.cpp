#include "plugformer/json_text.h"

#include <unordered_map>
#include <vector>

namespace plugformer {

using json = nlohmann::ordered_json;

namespace {

// A SAX handler building the json value. A key looks for an earlier equal key (which keeps its place
// and takes the new value, as in nlohmann's parser and Python's json) through a hash index once its
// object has more than a few keys.
class OrderedJsonBuilder {
 public:
  json root;

  bool null() { return put(nullptr); }
  bool boolean(bool value) { return put(value); }
  bool number_integer(json::number_integer_t value) { return put(value); }
  bool number_unsigned(json::number_unsigned_t value) { return put(value); }
  bool number_float(json::number_float_t value, const std::string&) { return put(value); }
  bool string(std::string& value) { return put(std::move(value)); }
  bool binary(json::binary_t& value) { return put(json::binary(std::move(value))); }
  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(std::string& name) {
    Level& top = open_.back();
    json::object_t& object = top.value->get_ref<json::object_t&>();
    constexpr size_t kIndexFrom = 16;
    if (object.size() >= kIndexFrom && top.index.empty())
      for (size_t i = 0; i < object.size(); ++i) top.index.emplace(object.begin()[i].first, i);
    if (!top.index.empty()) {
      auto [it, added] = top.index.try_emplace(name, object.size());
      if (!added) return slot(&object.begin()[it->second].second);  // (ordered_map's [] takes keys)
    } else {
      for (auto& [existing, value] : object)
        if (existing == name) return slot(&value);
    }
    object.emplace_back(std::move(name), nullptr);  // the vector's own append: no search
    return slot(&object.back().second);
  }

  // Rethrows what json::parse would throw (parse_error, or out_of_range for 1e400).
  template <class Exception>
  bool parse_error(std::size_t, const std::string&, const Exception& error) {
    throw error;
  }

 private:
  struct Level {
    json* value;
    std::unordered_map<std::string, size_t> index;  // key -> position, for large objects
  };
  std::vector<Level> open_;
  json* pending_ = nullptr;  // an object's member whose key came last

  bool slot(json* member) {
    pending_ = member;
    return true;
  }
  // Where the next value goes: the root, the end of the open array, or the member just named.
  json* place(json&& value) {
    if (open_.empty()) return &(root = std::move(value));
    json& container = *open_.back().value;
    if (container.is_array()) {
      auto& items = container.get_ref<json::array_t&>();
      items.push_back(std::move(value));
      return &items.back();
    }
    return &(*pending_ = std::move(value));
  }
  bool put(json&& value) {
    place(std::move(value));
    return true;
  }
  bool open(json&& container) {
    open_.push_back({place(std::move(container)), {}});
    return true;
  }
  bool close() {
    open_.pop_back();
    return true;
  }
};

}  // namespace

nlohmann::ordered_json parse_json_text(const std::string& text) {
  OrderedJsonBuilder builder;
  json::sax_parse(text, &builder);
  return std::move(builder.root);
}

}  // namespace plugformer
