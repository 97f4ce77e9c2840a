// syncline-gateway: serves Syncline clients over websockets from PostgreSQL.
#include <signal.h>

#include <cstdio>
#include <exception>

#include "gateway/config.hpp"
#include "gateway/gateway.hpp"
#include "gateway/jwt.hpp"

namespace {
syncline::gateway::Gateway *g_gateway = nullptr;

void OnSignal(int) {
  if (g_gateway) g_gateway->RequestShutdown();
}
}  // namespace

int main(int argc, char **argv) {
  using namespace syncline::gateway;
  std::vector<std::string> args(argv + 1, argv + argc);
  Config config;
  std::string error;
  if (!ParseConfig(args, ProcessEnv(), &config, &error)) {
    fprintf(stderr, "syncline-gateway: %s\n", error.c_str());
    return 2;
  }
  if (config.help) {
    fputs(UsageText().c_str(), stdout);
    return 0;
  }
  std::unique_ptr<JwtVerifier> verifier;
  try {
    verifier = JwtVerifier::Create(config.jwt);
  } catch (const std::exception &e) {
    fprintf(stderr, "syncline-gateway: JWT configuration: %s\n", e.what());
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  Gateway gateway(config, std::move(verifier));
  if (!gateway.Start()) return 1;
  g_gateway = &gateway;
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  int rc = gateway.Run();
  g_gateway = nullptr;
  return rc;
}
