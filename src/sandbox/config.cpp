// Parsing of the `sandbox` section.
#include "agentd/sandbox/config.hpp"

namespace agentd::sandbox {

Config parse_config(const core::ConfigNode& node, const std::string& data_dir) {
  node.expect_map();
  Config c;
  c.enabled = true;
  if (auto b = node.get("backend")) {
    auto s = b->as_string();
    if (s == "local") {
      c.backend = BackendKind::local;
    } else if (s == "e2b") {
      c.backend = BackendKind::e2b;
    } else {
      b->fail("expected local or e2b, got \"" + s + "\"");
    }
  }
  c.default_timeout = node.get_duration("default_timeout", c.default_timeout);
  if (c.default_timeout < std::chrono::seconds(1)) node.child("default_timeout").fail("must be at least 1s");
  c.max_sandboxes = static_cast<std::size_t>(
      node.get_int("max_sandboxes", static_cast<std::int64_t>(c.max_sandboxes), 1, 10000));
  c.max_output = node.get_size("max_output", c.max_output);
  if (auto n = node.get("scope")) {
    auto s = n->as_string();
    if (s == "session") {
      c.scope = Scope::session;
    } else if (s == "intent") {
      c.scope = Scope::intent;
    } else {
      n->fail("expected session or intent, got \"" + s + "\"");
    }
  }
  c.session_idle = node.get_duration("session_idle", c.session_idle);
  if (c.session_idle < std::chrono::seconds(1)) node.child("session_idle").fail("must be at least 1s");
  c.sweep_interval = node.get_duration("sweep_interval", c.sweep_interval);
  if (c.sweep_interval < std::chrono::seconds(1)) node.child("sweep_interval").fail("must be at least 1s");
  if (auto e = node.get("e2b")) {
    e->expect_map();
    auto& x = c.e2b;
    x.api_key = e->get_string("api_key");
    x.domain = e->get_string("domain", x.domain);
    if (auto u = e->get("api_url")) x.api_url = u->as_url();
    if (auto u = e->get("sandbox_url")) x.sandbox_url = u->as_url();
    x.template_id = e->get_string("template", x.template_id);
    x.desktop_template = e->get_string("desktop_template", x.desktop_template);
    x.request_timeout = e->get_duration("request_timeout", x.request_timeout);
    e->finish();
  }
  if (c.backend == BackendKind::e2b && c.e2b.api_key.empty()) {
    node.child("e2b").child("api_key").fail("is required with backend: e2b (e.g. ${E2B_API_KEY})");
  }
  auto& l = c.local;
  l.root_dir = data_dir + "/sandboxes";
  l.read_only = {"/usr", "/etc", "/opt"};
  if (auto n = node.get("local")) {
    n->expect_map();
    l.root_dir = n->get_string("root_dir", l.root_dir);
    l.bwrap = n->get_string("bwrap", l.bwrap);
    l.allow_network = n->get_bool("allow_network", l.allow_network);
    l.login_shell = n->get_bool("login_shell", l.login_shell);
    l.cpu_seconds = n->get_int("cpu_seconds", l.cpu_seconds, 1, 86400);
    l.memory_bytes = n->get_size("memory", l.memory_bytes);
    l.max_processes = n->get_int("max_processes", l.max_processes, 1, 100000);
    l.max_file_size = n->get_size("max_file_size", l.max_file_size);
    l.max_disk = n->get_size("max_disk", l.max_disk);
    if (n->get("read_only")) {
      l.read_only = n->get_strings("read_only");
      for (const auto& p : l.read_only) {
        if (p.empty() || p[0] != '/') n->child("read_only").fail("expected absolute paths, got \"" + p + "\"");
      }
    }
    n->finish();
  }
  if (l.root_dir.empty()) node.child("local").child("root_dir").fail("must not be empty");
  node.finish();
  return c;
}

}  // namespace agentd::sandbox
