// EXPECT for the end-to-end tests: a failed expectation ends the current test
// (the runner catches it and reports the line, the condition and the detail).
#pragma once

#include <stdexcept>
#include <string>

namespace syncline::testing {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace syncline::testing

#define EXPECT(cond, detail)                                                               \
  do {                                                                                     \
    if (!(cond))                                                                           \
      throw ::syncline::testing::Failure(std::string("line ") + std::to_string(__LINE__) + \
                                         ": " #cond " -- " + std::string(detail));         \
  } while (0)
