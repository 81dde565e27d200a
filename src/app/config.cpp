// Top-level configuration: sections, overrides, substitution, validation.
#include "agentd/app/config.hpp"

namespace agentd::app {

Config parse_config(const YAML::Node& root) {
  core::ConfigNode top(root, "");
  top.expect_map();
  Config c;
  if (auto n = top.get("server")) c.server = net::parse_server_config(*n);
  if (auto n = top.get("clients")) c.clients = api::parse_clients(*n);
  if (auto n = top.get("log")) c.log = core::parse_log_config(*n);
  c.server.access_log = c.log.access_log;
  if (auto n = top.get("store")) {
    n->expect_map();
    c.store.data_dir = n->get_string("data_dir", c.store.data_dir);
    if (c.store.data_dir.empty()) n->child("data_dir").fail("must not be empty");
    for (std::string_view key : {"redis", "postgres"}) {
      if (!n->get_string(key).empty()) {
        n->child(key).fail("this build has no " + std::string(key) +
                           " support yet; leave it empty to use the embedded store");
      }
    }
    n->finish();
  }
  top.finish();
  return c;
}

Config load_config(const std::string& file, const std::vector<std::string>& overrides,
                   const core::EnvLookup& env) {
  YAML::Node root = file.empty() ? core::load_yaml_string(embedded_config(), "<embedded config>")
                                 : core::load_yaml_file(file);
  for (const auto& o : overrides) core::apply_override(root, o);
  core::substitute_env(root, env);
  return parse_config(root);
}

}  // namespace agentd::app
