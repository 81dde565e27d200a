// Parsing and validation of the `mcp` section.
#include <algorithm>
#include <set>

#include "agentd/mcp/config.hpp"
#include "agentd/mcp/policy.hpp"

namespace agentd::mcp {
namespace {

using core::ConfigNode;

bool valid_server_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

TransportKind parse_transport(const ConfigNode& node) {
  auto s = node.as_string();
  if (s == "stdio") return TransportKind::stdio;
  if (s == "streamable_http") return TransportKind::streamable_http;
  if (s == "sse") return TransportKind::sse;
  node.fail("expected stdio, streamable_http or sse, got \"" + s + "\"");
}

Limits parse_limits(const ConfigNode& node) {
  node.expect_map();
  Limits l;
  l.rpm = node.get_int("rpm", 0, 0, 100'000'000);
  l.concurrency = node.get_int("concurrency", 0, 0, 100'000);
  node.finish();
  return l;
}

ServerConfig parse_server(const ConfigNode& node, const std::string& separator) {
  node.expect_map();
  ServerConfig s;
  auto name = node.required("name");
  s.name = name.as_string();
  if (!valid_server_name(s.name)) {
    name.fail("expected 1-64 letters, digits, '-' or '_'");
  }
  if (s.name.find(separator) != std::string::npos) {
    name.fail("must not contain the tool name separator \"" + separator + "\"");
  }
  s.transport = parse_transport(node.required("transport"));
  if (s.transport == TransportKind::stdio) {
    auto cmd = node.required("command");
    s.command = cmd.as_string();
    if (s.command.empty()) cmd.fail("must not be empty");
    s.args = node.get_strings("args");
    if (auto env = node.get("env")) {
      for (auto& [k, v] : env->entries()) {
        if (k.empty() || k.find('=') != std::string::npos) env->child(k).fail("not a variable name");
        s.env[k] = v.as_string();
      }
    }
    s.cwd = node.get_string("cwd");
    for (const char* k : {"url", "headers"}) {
      if (node.get(k)) node.child(k).fail("only for streamable_http and sse servers");
    }
  } else {
    s.url = node.required("url").as_url();
    if (auto h = node.get("headers")) {
      for (auto& [k, v] : h->entries()) {
        auto value = v.as_string();
        if (k.empty() || k.find_first_of(" \t\r\n:") != std::string::npos ||
            value.find_first_of("\r\n") != std::string::npos) {
          h->child(k).fail("not a valid header");
        }
        s.headers.push_back({k, value});
      }
    }
    for (const char* k : {"command", "args", "env", "cwd"}) {
      if (node.get(k)) node.child(k).fail("only for stdio servers");
    }
    if (auto e = node.get("era")) {
      if (s.transport != TransportKind::streamable_http) e->fail("only for streamable_http servers");
      auto v = e->as_string();
      if (v == "detect") {
        s.era = Era::detect;
      } else if (v == "stateful") {
        s.era = Era::stateful;
      } else if (v == "stateless") {
        s.era = Era::stateless;
      } else {
        e->fail("expected detect, stateful or stateless, got \"" + v + "\"");
      }
    }
  }
  s.lazy = node.get_bool("lazy", s.lazy);
  s.init_timeout = node.get_duration("init_timeout", s.init_timeout);
  s.call_timeout = node.get_duration("call_timeout", s.call_timeout);
  s.ping_interval = node.get_duration("ping_interval", s.ping_interval);
  s.tools = node.get_strings("tools");
  s.roots = node.get_strings("roots");
  if (auto l = node.get("limits")) s.limits = parse_limits(*l);
  s.sampling = node.get_bool("sampling", s.sampling);
  for (const auto& r : s.roots) {
    if (!r.starts_with("file://")) node.child("roots").fail("expected file:// URIs, got \"" + r + "\"");
  }
  node.finish();
  return s;
}

}  // namespace

Config parse_config(const ConfigNode& node, const std::vector<std::string>& client_names) {
  node.expect_map();
  Config c;
  c.separator = node.get_string("separator", c.separator);
  if (c.separator.empty() || c.separator.size() > 8 ||
      c.separator.find_first_not_of("_-.") != std::string::npos) {
    node.child("separator").fail("expected 1-8 of '_', '-' or '.' (tool names allow no others)");
  }
  c.protocol_version = node.get_string("protocol_version", c.protocol_version);
  static const std::set<std::string> kVersions = {"2025-03-26", "2025-06-18", "2025-11-25"};
  if (!kVersions.contains(c.protocol_version)) {
    node.child("protocol_version").fail("expected 2025-03-26, 2025-06-18 or 2025-11-25");
  }
  if (auto servers = node.get("servers")) {
    std::set<std::string> names;
    for (auto& item : servers->items()) {
      auto s = parse_server(item, c.separator);
      if (!names.insert(s.name).second) {
        item.child("name").fail("duplicate server name \"" + s.name + "\"");
      }
      c.servers.push_back(std::move(s));
    }
  }
  if (auto n = node.get("limits")) {
    for (auto& [client, lim] : n->entries()) {
      if (std::find(client_names.begin(), client_names.end(), client) == client_names.end()) {
        n->child(client).fail("no client named \"" + client + "\" in clients");
      }
      lim.expect_map();
      ClientLimits cl;
      cl.limits.rpm = lim.get_int("rpm", 0, 0, 100'000'000);
      cl.limits.concurrency = lim.get_int("concurrency", 0, 0, 100'000);
      cl.call_timeout = lim.get_duration("call_timeout", cl.call_timeout);
      lim.finish();
      c.clients[client] = cl;
    }
  }
  if (auto n = node.get("sampling")) {
    n->expect_map();
    c.sampling.model = n->get_string("model");
    if (c.sampling.model.empty()) n->child("model").fail("required: the model (alias or provider/model) that answers sampling requests");
    c.sampling.allow_hints = n->get_bool("allow_hints", c.sampling.allow_hints);
    c.sampling.max_tokens = n->get_int("max_tokens", c.sampling.max_tokens, 1, 1'000'000);
    n->finish();
  }
  if (auto n = node.get("elicitation")) {
    auto mode = n->as_string();
    if (mode == "relay") {
      c.elicitation = ElicitationMode::relay;
    } else if (mode == "decline") {
      c.elicitation = ElicitationMode::decline;
    } else {
      n->fail("expected relay or decline, got \"" + mode + "\"");
    }
  }
  if (auto n = node.get("serve")) {
    n->expect_map();
    c.serve.session_idle = n->get_duration("session_idle", c.serve.session_idle);
    if (c.serve.session_idle.count() <= 0) n->child("session_idle").fail("must be positive");
    c.serve.max_sessions = static_cast<std::size_t>(
        n->get_int("max_sessions", static_cast<std::int64_t>(c.serve.max_sessions), 1, 10'000'000));
    n->finish();
  }
  if (auto n = node.get("policies")) {
    c.policy = std::make_shared<const ArgumentPolicy>(ArgumentPolicy::parse(*n));
  } else {
    c.policy = std::make_shared<const ArgumentPolicy>();
  }
  node.finish();
  return c;
}

}  // namespace agentd::mcp
