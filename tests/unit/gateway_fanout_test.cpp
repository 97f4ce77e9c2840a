// FanoutSender: every socket gets its bytes in order, a full socket gets a
// short count (never a block or a loss), a closed peer gets an error, and a
// job split over several threads covers every item exactly once.
#include "gateway/fanout.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace syncline::gateway {
namespace {

struct Pair {
  int ours = -1, theirs = -1;
  Pair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    ours = fds[0];
    theirs = fds[1];
    fcntl(ours, F_SETFL, fcntl(ours, F_GETFL) | O_NONBLOCK);
  }
  ~Pair() {
    if (ours >= 0) close(ours);
    if (theirs >= 0) close(theirs);
  }
  std::string ReadAll() {
    std::string got;
    char buf[65536];
    fcntl(theirs, F_SETFL, fcntl(theirs, F_GETFL) | O_NONBLOCK);
    for (ssize_t n; (n = read(theirs, buf, sizeof buf)) > 0;) got.append(buf, n);
    return got;
  }
};

void RunJob(int threads, size_t sockets) {
  FanoutSender sender(threads);
  EXPECT_EQ(sender.threads(), threads);
  std::vector<Pair> pairs(sockets);
  std::vector<std::string> payloads(sockets);
  std::vector<FanoutSender::Item> items(sockets);
  for (size_t i = 0; i < sockets; i++) {
    payloads[i] = "frame for socket " + std::to_string(i);
    items[i].fd = pairs[i].ours;
    items[i].data = payloads[i].data();
    items[i].size = payloads[i].size();
  }
  sender.SendAll(&items);
  for (size_t i = 0; i < sockets; i++) {
    EXPECT_EQ(items[i].error, 0) << i;
    EXPECT_EQ(items[i].sent, payloads[i].size()) << i;
    EXPECT_EQ(pairs[i].ReadAll(), payloads[i]) << i;  // once, whole, to its own socket
  }
}

TEST(FanoutSender, OneThreadSendsEverything) { RunJob(1, 10); }

TEST(FanoutSender, SeveralThreadsCoverEveryItemOnce) {
  RunJob(3, 3 * FanoutSender::kMinItemsPerThread + 7);
}

TEST(FanoutSender, SmallJobOnManyThreads) { RunJob(4, 5); }

TEST(FanoutSender, RepeatedJobsReuseTheThreads) {
  FanoutSender sender(2);
  for (int round = 0; round < 50; round++) {
    std::vector<Pair> pairs(2 * FanoutSender::kMinItemsPerThread);
    std::vector<FanoutSender::Item> items(pairs.size());
    std::string payload = "round " + std::to_string(round);
    for (size_t i = 0; i < pairs.size(); i++)
      items[i] = {pairs[i].ours, payload.data(), payload.size()};
    sender.SendAll(&items);
    for (size_t i = 0; i < pairs.size(); i++) ASSERT_EQ(pairs[i].ReadAll(), payload);
  }
}

TEST(FanoutSender, FullSocketGetsAShortCountNotABlock) {
  Pair p;
  int small = 4096;
  setsockopt(p.ours, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  std::string big(8 << 20, 'x');
  std::vector<FanoutSender::Item> items(1);
  items[0] = {p.ours, big.data(), big.size()};
  FanoutSender(1).SendAll(&items);  // returns although nobody reads
  EXPECT_EQ(items[0].error, 0);
  EXPECT_GT(items[0].sent, 0u);
  EXPECT_LT(items[0].sent, big.size());
  EXPECT_EQ(p.ReadAll().size(), items[0].sent);  // what it reports is what went out
}

TEST(FanoutSender, ClosedPeerIsAnErrorWithoutSignal) {
  Pair gone, fine;
  close(gone.theirs);
  gone.theirs = -1;
  std::string payload = "change";
  std::vector<FanoutSender::Item> items(2);
  items[0] = {gone.ours, payload.data(), payload.size()};
  items[1] = {fine.ours, payload.data(), payload.size()};
  FanoutSender(1).SendAll(&items);  // no SIGPIPE kills the test
  EXPECT_EQ(items[0].error, EPIPE);
  EXPECT_EQ(items[1].error, 0);
  EXPECT_EQ(fine.ReadAll(), payload);  // one failure does not stop the others
}

}  // namespace
}  // namespace syncline::gateway
