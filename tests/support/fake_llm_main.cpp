// `fake_llm`: the LLM provider double as a process, for tests outside C++ (the npm SDKs).
// Prints one line `fake_llm listening on http://127.0.0.1:PORT` and runs until SIGTERM/SIGINT.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>

#include "support/fake_llm.hpp"

namespace {

[[noreturn]] void usage(const char* why) {
  std::cerr << "fake_llm: " << why << "\nusage: fake_llm [--api-key K] [--port P]\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  agentd::test::FakeLlmOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if ((arg == "--api-key" || arg == "--port") && i + 1 >= argc) usage("missing value");
    if (arg == "--api-key") {
      options.api_key = argv[++i];
    } else if (arg == "--port") {
      char* end = nullptr;
      long port = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || port < 0 || port > 65535) usage("bad --port");
      options.port = static_cast<std::uint16_t>(port);
    } else {
      usage("unknown argument");
    }
  }

  // Blocked before the server thread starts, so that thread inherits the mask and the signals
  // are taken here by sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  try {
    agentd::test::FakeLlm fake(options);
    std::cout << "fake_llm listening on " << fake.url() << std::endl;
    int sig = 0;
    sigwait(&signals, &sig);
  } catch (const std::exception& e) {
    std::cerr << "fake_llm: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
