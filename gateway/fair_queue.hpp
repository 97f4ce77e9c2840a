// A queue that takes turns between keys (users): one key with many items waiting cannot
// starve the others. Items of one key keep their order; urgent items go before all keys.
// Pure C++ (no libpq), so it is unit-tested on its own.
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>

namespace syncline::gateway {

template <typename T>
class FairQueue {
 public:
  // Appends an item for `key` (its owner, e.g. the token subject; "" for the gateway's own).
  void Push(const std::string &key, T item) {
    auto &queue = per_key_[key];
    if (queue.empty()) turns_.push_back(key);
    queue.push_back(std::move(item));
    size_++;
  }
  // Puts an item before everything else (live fan-out, a query retried after a lost connection).
  void PushUrgent(T item) {
    urgent_.push_front(std::move(item));
    size_++;
  }
  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  // Takes the next item: urgent ones first, then one item of each waiting key in turn.
  T Pop() {
    size_--;
    if (!urgent_.empty()) {
      T item = std::move(urgent_.front());
      urgent_.pop_front();
      return item;
    }
    std::string key = std::move(turns_.front());
    turns_.pop_front();
    auto it = per_key_.find(key);
    T item = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) {
      per_key_.erase(it);
    } else {
      turns_.push_back(std::move(key));  // back of the line for its next item
    }
    return item;
  }

 private:
  std::deque<T> urgent_;
  std::unordered_map<std::string, std::deque<T>> per_key_;
  std::deque<std::string> turns_;  // keys with items waiting, in the order they get a turn
  size_t size_ = 0;
};

}  // namespace syncline::gateway
