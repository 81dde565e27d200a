// A self-signed certificate for 127.0.0.1/localhost, made at test time.
#pragma once

#include <string>

namespace agentd::test {

struct TestCert {
  std::string dir;
  std::string cert_file;
  std::string key_file;
};

// Writes cert.pem and key.pem (EC P-256, SAN IP:127.0.0.1 and DNS:localhost) into a new
// temporary directory. Throws std::runtime_error on failure.
TestCert make_test_cert();

std::string make_temp_dir(const std::string& prefix);

}  // namespace agentd::test
