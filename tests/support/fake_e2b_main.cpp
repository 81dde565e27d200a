// `fake_e2b`: the E2B double as a process, for tests outside C++ (the `e2b` npm SDK). Prints
// one line `fake_e2b listening on http://127.0.0.1:PORT` and runs until SIGTERM/SIGINT.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>

#include "support/fake_e2b.hpp"

namespace {

[[noreturn]] void usage(const char* why) {
  std::cerr << "fake_e2b: " << why
            << "\nusage: fake_e2b [--api-key K] [--port P] [--envd-version V] [--root DIR]\n                [--keepalive-ms N]\n";
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  agentd::test::FakeE2bOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    bool known = arg == "--api-key" || arg == "--port" || arg == "--envd-version" || arg == "--root" ||
                 arg == "--keepalive-ms";
    if (!known) usage("unknown argument");
    if (i + 1 >= argc) usage("missing value");
    std::string value = argv[++i];
    if (arg == "--api-key") {
      options.api_key = value;
    } else if (arg == "--envd-version") {
      options.envd_version = value;
    } else if (arg == "--root") {
      options.root_dir = value;
    } else if (arg == "--keepalive-ms") {
      char* end = nullptr;
      long ms = std::strtol(value.c_str(), &end, 10);
      if (*end != '\0' || ms <= 0) usage("bad --keepalive-ms");
      options.keepalive = std::chrono::milliseconds(ms);
    } else {
      char* end = nullptr;
      long port = std::strtol(value.c_str(), &end, 10);
      if (*end != '\0' || port < 0 || port > 65535) usage("bad --port");
      options.port = static_cast<std::uint16_t>(port);
    }
  }

  // Blocked before the server thread starts, so that thread inherits the mask and the signals
  // are taken here by sigwait (the double's children get an empty mask).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  try {
    agentd::test::FakeE2b fake(options);
    std::cout << "fake_e2b listening on " << fake.url() << std::endl;
    int sig = 0;
    sigwait(&signals, &sig);
  } catch (const std::exception& e) {
    std::cerr << "fake_e2b: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
