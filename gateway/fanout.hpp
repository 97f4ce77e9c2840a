// Sends one live round's frames to many sockets on a few threads.
//
// A shared change fanned out to thousands of connections costs one send()
// per connection, and on loopback or a busy host most of that is the kernel's
// TCP work, which one thread does serially. The frames are complete websocket
// frames (LWS_WRITE_RAW) to plain sockets that have nothing else queued, so
// they can be written straight to the file descriptor from any thread while
// the event loop waits; what a socket does not take is handed back to
// libwebsockets by the caller, in order, on the loop thread.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

namespace syncline::gateway {

class FanoutSender {
 public:
  struct Item {
    int fd = -1;
    const char *data = nullptr;
    size_t size = 0;
    size_t sent = 0;  // out: bytes the socket took
    int error = 0;    // out: errno of a failed send (not EAGAIN: that leaves sent < size)
  };

  // threads: how many threads send, the caller's included (1: the caller alone).
  explicit FanoutSender(int threads);
  ~FanoutSender();
  FanoutSender(const FanoutSender &) = delete;
  FanoutSender &operator=(const FanoutSender &) = delete;

  // Sends every item, non-blocking, and returns when all are done. Items are
  // split into contiguous ranges, one per thread; each fd must appear once.
  void SendAll(std::vector<Item> *items);

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Below this many items the caller sends alone: waking threads costs more.
  static constexpr size_t kMinItemsPerThread = 64;

 private:
  static void SendRange(Item *begin, Item *end);
  void WorkerMain(size_t index);

  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  std::vector<std::thread> workers_;
  std::vector<Item> *items_ = nullptr;
  size_t parts_ = 0;        // ranges in the current job (worker i takes range i + 1)
  unsigned long job_ = 0;   // bumped for every job
  size_t outstanding_ = 0;  // workers still sending the current job
  bool stopping_ = false;
};

}  // namespace syncline::gateway
