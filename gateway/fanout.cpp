#include "fanout.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

namespace syncline::gateway {

FanoutSender::FanoutSender(int threads) {
  for (int i = 1; i < threads; i++)
    workers_.emplace_back([this, i] { WorkerMain(static_cast<size_t>(i)); });
}

FanoutSender::~FanoutSender() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  start_cv_.notify_all();
  for (auto &t : workers_) t.join();
}

void FanoutSender::SendRange(Item *begin, Item *end) {
  for (Item *it = begin; it != end; ++it) {
    while (it->sent < it->size) {
      ssize_t n =
          send(it->fd, it->data + it->sent, it->size - it->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        it->sent += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) it->error = errno;
        break;  // full (the caller hands the rest to libwebsockets) or failed
      }
    }
  }
}

void FanoutSender::SendAll(std::vector<Item> *items) {
  size_t n = items->size();
  size_t parts = std::min(workers_.size() + 1, std::max<size_t>(1, n / kMinItemsPerThread));
  if (parts <= 1) {
    SendRange(items->data(), items->data() + n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    items_ = items;
    parts_ = parts;
    outstanding_ = parts - 1;
    job_++;
  }
  start_cv_.notify_all();
  // Range 0 is ours.
  SendRange(items->data(), items->data() + n / parts);
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return outstanding_ == 0; });
  items_ = nullptr;
}

void FanoutSender::WorkerMain(size_t index) {
  unsigned long seen = 0;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    start_cv_.wait(lock, [&] { return stopping_ || job_ != seen; });
    if (stopping_) return;
    seen = job_;
    if (index >= parts_) continue;  // a small job: not needed
    std::vector<Item> *items = items_;
    size_t n = items->size(), parts = parts_;
    lock.unlock();
    SendRange(items->data() + n * index / parts, items->data() + n * (index + 1) / parts);
    lock.lock();
    if (--outstanding_ == 0) done_cv_.notify_one();
  }
}

}  // namespace syncline::gateway
