// FairQueue: the database queue takes turns between users, so one user's many requests
// cannot starve another's.
#include "gateway/fair_queue.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace syncline::gateway {
namespace {

std::vector<std::string> Drain(FairQueue<std::string> &q) {
  std::vector<std::string> out;
  while (!q.empty()) out.push_back(q.Pop());
  return out;
}

TEST(FairQueue, OneUsersBacklogDoesNotStarveAnother) {
  FairQueue<std::string> q;
  for (int i = 0; i < 100; i++) q.Push("greedy", "g" + std::to_string(i));
  q.Push("polite", "p0");
  EXPECT_EQ(q.size(), 101u);
  EXPECT_EQ(q.Pop(), "g0");
  EXPECT_EQ(q.Pop(), "p0");  // second, not 101st
  EXPECT_EQ(q.Pop(), "g1");
  EXPECT_EQ(q.size(), 98u);
}

TEST(FairQueue, KeysTakeTurnsAndKeepTheirOwnOrder) {
  FairQueue<std::string> q;
  q.Push("a", "a1");
  q.Push("a", "a2");
  q.Push("a", "a3");
  q.Push("b", "b1");
  q.Push("c", "c1");
  q.Push("c", "c2");
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"a1", "b1", "c1", "a2", "c2", "a3"}));
}

TEST(FairQueue, UrgentItemsGoFirstNewestFirst) {
  FairQueue<std::string> q;
  q.Push("a", "a1");
  q.PushUrgent("u1");
  q.PushUrgent("u2");
  q.Push("b", "b1");
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"u2", "u1", "a1", "b1"}));
}

TEST(FairQueue, AKeyThatEmptiedJoinsAtTheBack) {
  FairQueue<std::string> q;
  q.Push("a", "a1");
  q.Push("b", "b1");
  q.Push("b", "b2");
  EXPECT_EQ(q.Pop(), "a1");
  q.Push("a", "a2");  // "a" had nothing left: it queues behind "b", then they alternate
  EXPECT_EQ(Drain(q), (std::vector<std::string>{"b1", "a2", "b2"}));
}

}  // namespace
}  // namespace syncline::gateway
