// Top-level configuration: sections, overrides, substitution, validation.
#include "agentd/app/config.hpp"

#include <algorithm>

namespace agentd::app {

Config parse_config(const YAML::Node& root) {
  core::ConfigNode top(root, "");
  top.expect_map();
  Config c;
  if (auto n = top.get("server")) c.server = net::parse_server_config(*n);
  if (auto n = top.get("clients")) c.clients = api::parse_clients(*n);
  if (auto n = top.get("log")) c.log = core::parse_log_config(*n);
  c.server.access_log = c.log.access_log;
  c.store.records.data_dir = c.store.data_dir;
  if (auto n = top.get("store")) {
    n->expect_map();
    c.store.data_dir = n->get_string("data_dir", c.store.data_dir);
    if (c.store.data_dir.empty()) n->child("data_dir").fail("must not be empty");
    c.store.kv = store::parse_kv_config(*n);
    store::parse_records_config(*n, c.store.records);
    c.store.blobs = store::parse_blobs_config(*n);
    n->finish();
  }
  if (auto n = top.get("http_client")) {
    n->expect_map();
    auto& h = c.http_client;
    if (auto p = n->get("proxy")) {
      h.proxy = p->as_url();
      if (h.proxy.starts_with("https://")) p->fail("expected an http:// proxy URL");
    }
    h.ca_file = n->get_string("ca_file");
    h.verify_peer = n->get_bool("verify_peer", h.verify_peer);
    h.max_idle_per_origin = static_cast<std::size_t>(
        n->get_int("max_idle_per_origin", static_cast<std::int64_t>(h.max_idle_per_origin), 0, 10000));
    h.idle_keepalive = n->get_duration("idle_keepalive", h.idle_keepalive);
    h.max_response_bytes = n->get_size("max_response_size", h.max_response_bytes);
    n->finish();
  }
  if (auto n = top.get("ai")) {
    std::vector<std::string> names;
    for (const auto& cl : c.clients) names.push_back(cl.name);
    c.ai = ai::parse_config(*n, names);
  }
  // A model an agent, a workflow or MCP sampling names must be one the AI layer can route.
  auto model_known = [&c](const std::string& m) {
    bool alias = std::any_of(c.ai.models.begin(), c.ai.models.end(),
                             [&](const ai::ModelAlias& a) { return a.name == m; });
    auto slash = m.find('/');
    return alias || (slash != std::string::npos && c.ai.provider(m.substr(0, slash)));
  };
  if (auto n = top.get("mcp")) {
    std::vector<std::string> names;
    for (const auto& cl : c.clients) names.push_back(cl.name);
    c.mcp = mcp::parse_config(*n, names);
    // Sampling goes through the AI routing layer: its model must be one it can route.
    if (const auto& m = c.mcp.sampling.model; !m.empty()) {
      if (!model_known(m)) {
        n->child("sampling").child("model").fail(
            "\"" + m + "\" is neither an ai.models alias nor <provider>/<model> of ai.providers");
      }
    }
  }
  if (auto n = top.get("sandbox")) c.sandbox = sandbox::parse_config(*n, c.store.data_dir);
  {
    agent::ConfigContext ctx;
    ctx.sandbox = c.sandbox.enabled;
    for (const auto& s : c.mcp.servers) ctx.mcp_servers.push_back(s.name);
    ctx.model_known = model_known;
    auto agents = top.get("agents");
    auto workflows = top.get("workflows");
    auto intents = top.get("intents");
    c.agent = agent::parse_config(agents ? &*agents : nullptr, workflows ? &*workflows : nullptr,
                                  intents ? &*intents : nullptr, ctx);
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
