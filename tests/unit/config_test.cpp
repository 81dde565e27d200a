// Strict configuration: paths in errors, unknown keys, substitution, overrides, every section.
#include "agentd/core/config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "agentd/app/config.hpp"

namespace agentd {
namespace {

using ::testing::HasSubstr;

std::optional<std::string> fake_env(const std::string& name) {
  if (name == "SET") return std::string("from-env");
  if (name == "EMPTY") return std::string();
  return std::nullopt;
}

app::Config parse(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  auto root = core::load_yaml_string(yaml);
  for (const auto& o : overrides) core::apply_override(root, o);
  core::substitute_env(root, fake_env);
  return app::parse_config(root);
}

// The ConfigError message of parsing `yaml`, or "" when it parses.
std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse(yaml, overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string readable_file() {
  static const std::string path = [] {
    std::string p = "/tmp/agentd-unit-readable.pem";
    std::ofstream(p) << "not really a certificate\n";
    return p;
  }();
  return path;
}

TEST(ConfigNode, UnknownKeysAreRejectedWithPathAndHint) {
  EXPECT_EQ(error_of("server:\n  lisen: 127.0.0.1:1\n"),
            "server.lisen: unknown key (did you mean \"listen\"?)");
  EXPECT_EQ(error_of("apigw:\n  services: []\n"), "apigw: unknown key");  // not built yet
  EXPECT_EQ(error_of("ai:\n  provders: []\n"), "ai.provders: unknown key (did you mean \"providers\"?)");
  EXPECT_EQ(error_of("server:\n  limits:\n    bogus_key: 1\n"), "server.limits.bogus_key: unknown key");
}

TEST(ConfigNode, TypedAccessors) {
  auto root = core::load_yaml_string("a: 5\nb: maybe\nc: [1, 2]\nd: http://x:1/p\ne: ftp://x\n");
  core::ConfigNode n(root, "top");
  EXPECT_EQ(n.get_int("a", 0, 0, 10), 5);
  EXPECT_THAT([&] { n.get_int("a", 0, 6, 10); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("top.a: must be between 6 and 10")));
  EXPECT_THAT([&] { n.get_bool("b", false); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("top.b: expected true or false")));
  EXPECT_THAT([&] { n.get_string("c"); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("top.c: expected a string, got a list")));
  EXPECT_EQ(n.get("d")->as_url(), "http://x:1/p");
  EXPECT_THAT([&] { n.get("e")->as_url(); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("top.e: expected a URL")));
  EXPECT_THAT([&] { n.required("missing"); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("top.missing: is required")));
  auto items = n.get("c")->items();
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[1].path(), "top.c[1]");
}

TEST(Substitution, VariablesDefaultsAndEscapes) {
  auto root = core::load_yaml_string(
      "a: ${SET}\nb: x-${UNSET:-dflt}-y\nc: '${EMPTY:-fallback}'\nd: '${EMPTY}'\ne: $${SET}\n"
      "f: ['${SET}', plain]\ng: cost $5\n");  // braces are flow indicators: quote in [...]
  core::substitute_env(root, fake_env);
  EXPECT_EQ(root["a"].Scalar(), "from-env");
  EXPECT_EQ(root["b"].Scalar(), "x-dflt-y");
  EXPECT_EQ(root["c"].Scalar(), "fallback");  // set but empty takes the :- default
  EXPECT_EQ(root["d"].Scalar(), "");
  EXPECT_EQ(root["e"].Scalar(), "${SET}");
  EXPECT_EQ(root["f"][0].Scalar(), "from-env");
  EXPECT_EQ(root["g"].Scalar(), "cost $5");
}

TEST(Substitution, ErrorsNameTheKeyAndTheVariable) {
  auto unset = core::load_yaml_string("clients:\n  - token: ${NOPE}\n");
  EXPECT_THAT([&] { core::substitute_env(unset, fake_env); },
              ::testing::ThrowsMessage<ConfigError>(
                  HasSubstr("clients[0].token: environment variable NOPE is not set")));
  auto bad = core::load_yaml_string("a: ${1X}\n");
  EXPECT_THROW(core::substitute_env(bad, fake_env), ConfigError);
  auto open = core::load_yaml_string("a: ${X\n");
  EXPECT_THAT([&] { core::substitute_env(open, fake_env); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("a: unterminated")));
}

TEST(Overrides, SetScalarsMapsAndLists) {
  auto root = core::load_yaml_string("server:\n  listen: 1.2.3.4:1\nlist: [a, b]\n");
  core::apply_override(root, "server.listen=127.0.0.1:0");
  core::apply_override(root, "server.limits.max_connections=5");  // creates the map
  core::apply_override(root, "list[1]=z");
  core::apply_override(root, "list[2]=appended");
  core::apply_override(root, "flow=[x, y]");
  core::apply_override(root, "empty=");
  EXPECT_EQ(root["server"]["listen"].Scalar(), "127.0.0.1:0");
  EXPECT_EQ(root["server"]["limits"]["max_connections"].Scalar(), "5");
  EXPECT_EQ(root["list"][1].Scalar(), "z");
  EXPECT_EQ(root["list"][2].Scalar(), "appended");
  ASSERT_TRUE(root["flow"].IsSequence());
  EXPECT_EQ(root["flow"][1].Scalar(), "y");
  EXPECT_TRUE(root["empty"].IsScalar());
  EXPECT_EQ(root["empty"].Scalar(), "");
}

TEST(Overrides, MalformedOnesAreErrors) {
  auto root = core::load_yaml_string("list: [a]\nscalar: 1\n");
  EXPECT_THAT([&] { core::apply_override(root, "noequals"); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("expected key.path=value")));
  EXPECT_THAT([&] { core::apply_override(root, "list[5]=x"); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("past the end")));
  EXPECT_THROW(core::apply_override(root, "list[x]=1"), ConfigError);
  EXPECT_THROW(core::apply_override(root, "list[99999999999999999999]=1"), ConfigError);
  EXPECT_THROW(core::apply_override(root, "scalar.sub=1"), ConfigError);
  EXPECT_THROW(core::apply_override(root, "a..b=1"), ConfigError);
}

TEST(Loading, ParseErrorsCarryOriginLineAndColumn) {
  EXPECT_THAT([] { core::load_yaml_string("a: [1, 2\nb: 3\n", "f.yaml"); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("f.yaml:")));
  EXPECT_THAT([] { core::load_yaml_string("- a\n- b\n", "f.yaml"); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("the top level must be a map")));
  EXPECT_THAT([] { core::load_yaml_string(std::string(200, '[') + std::string(200, ']')); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("nested too deeply")));
  EXPECT_THAT([] { core::load_yaml_file("/nonexistent/agentd.yaml"); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("cannot read /nonexistent")));
}

TEST(Loading, AliasBlowUpIsRefused) {
  std::string doc = "a0: &a0 [x, x, x, x]\n";
  for (int i = 1; i < 12; ++i) {
    doc += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [*a" + std::to_string(i - 1) +
           ", *a" + std::to_string(i - 1) + ", *a" + std::to_string(i - 1) + ", *a" +
           std::to_string(i - 1) + "]\n";
  }
  auto root = core::load_yaml_string(doc);
  EXPECT_THAT([&] { core::substitute_env(root, fake_env); },
              ::testing::ThrowsMessage<ConfigError>(HasSubstr("expands to more than")));
}

TEST(AppConfig, EmbeddedDefaultsParseWithoutAnyEnvironment) {
  auto c = app::load_config("", {}, [](const std::string&) { return std::optional<std::string>(); });
  ASSERT_EQ(c.server.listeners.size(), 1u);
  EXPECT_EQ(c.server.listeners[0].host, "127.0.0.1");
  EXPECT_EQ(c.server.listeners[0].port, 8080);
  EXPECT_FALSE(c.server.listeners[0].tls);
  ASSERT_EQ(c.clients.size(), 1u);
  EXPECT_EQ(c.clients[0].name, "local");
  EXPECT_EQ(c.clients[0].token, "");
  EXPECT_EQ(c.clients[0].scopes, std::vector<std::string>{"*"});
  EXPECT_EQ(c.store.data_dir, "./data");
  auto o = app::load_config("", {"server.listen=127.0.0.1:0"}, fake_env);
  EXPECT_EQ(o.server.listeners[0].port, 0);
}

TEST(ServerSection, ListenForms) {
  auto c = parse("server:\n  listen: ['[::1]:8080', 'localhost:80', 'http://0.0.0.0:1']\n");
  ASSERT_EQ(c.server.listeners.size(), 3u);
  EXPECT_EQ(c.server.listeners[0].host, "::1");
  EXPECT_EQ(c.server.listeners[0].port, 8080);
  EXPECT_EQ(c.server.listeners[1].host, "127.0.0.1");
  EXPECT_EQ(c.server.listeners[2].host, "0.0.0.0");
  EXPECT_THAT(error_of("server:\n  listen: https://127.0.0.1:1\n"),
              HasSubstr("server.listen: https listener needs server.tls"));
  EXPECT_THAT(error_of("server:\n  listen: 127.0.0.1:70000\n"),
              HasSubstr("server.listen: expected a port number"));
  EXPECT_THAT(error_of("server:\n  listen: ':80'\n"), HasSubstr("server.listen: missing host"));
  EXPECT_THAT(error_of("server:\n  listen: example.com:80\n"),
              HasSubstr("server.listen: expected a numeric IP address"));
  EXPECT_THAT(error_of("server:\n  listen: ['a:1', '127.0.0.1:x']\n"),
              HasSubstr("server.listen[0]: expected a numeric IP"));
}

TEST(ServerSection, Tls) {
  auto f = readable_file();
  auto c = parse("server:\n  listen: 127.0.0.1:1\n  tls: {cert: " + f + ", key: " + f + "}\n");
  ASSERT_TRUE(c.server.tls);
  EXPECT_TRUE(c.server.listeners[0].tls);  // a bare address is https when tls is set
  c = parse("server:\n  listen: http://127.0.0.1:1\n  tls: {cert: " + f + ", key: " + f + "}\n");
  EXPECT_FALSE(c.server.listeners[0].tls);
  EXPECT_EQ(error_of("server:\n  tls: {cert: /nope/c.pem, key: " + f + "}\n"),
            "server.tls.cert: cannot read /nope/c.pem");
  EXPECT_EQ(error_of("server:\n  tls: {cert: " + f + "}\n"), "server.tls.key: is required");
  EXPECT_THAT(error_of("server:\n  tls: {cert: " + f + ", key: " + f + ", min_version: '1.1'}\n"),
              HasSubstr("server.tls.min_version: expected \"1.2\" or \"1.3\""));
}

TEST(ServerSection, LimitsTimeoutsSseCors) {
  auto c = parse(
      "server:\n  limits: {max_header_size: 32KiB, max_body_size: 2MiB, max_connections: 10}\n"
      "  timeouts: {header: 1s, idle: 2m}\n  shutdown_grace: 1500ms\n"
      "  sse: {keepalive: 5s, max_queued_events: 8}\n"
      "  cors: {allow_origins: [https://chat.example.com], max_age: 1m}\n");
  EXPECT_EQ(c.server.max_header_bytes, 32u * 1024);
  EXPECT_EQ(c.server.max_body_bytes, 2u * 1024 * 1024);
  EXPECT_EQ(c.server.max_connections, 10u);
  EXPECT_EQ(c.server.header_timeout.count(), 1000);
  EXPECT_EQ(c.server.idle_timeout.count(), 120'000);
  EXPECT_EQ(c.server.shutdown_grace.count(), 1500);
  EXPECT_EQ(c.server.busy_poll.count(), 0);  // off unless asked for
  EXPECT_EQ(parse("server: {busy_poll_us: 50}\n").server.busy_poll.count(), 50);
  EXPECT_THAT(error_of("server: {busy_poll_us: 20000}\n"),
              HasSubstr("server.busy_poll_us: must be between 0 and 10000"));
  EXPECT_EQ(c.server.sse_max_queued, 8u);
  EXPECT_EQ(c.server.cors.allow_origins.size(), 1u);
  EXPECT_THAT(error_of("server:\n  limits: {max_header_size: 10}\n"),
              HasSubstr("server.limits.max_header_size: must be between 1KiB and 1MiB"));
  EXPECT_THAT(error_of("server:\n  limits: {max_body_size: lots}\n"),
              HasSubstr("server.limits.max_body_size: expected a size"));
  EXPECT_THAT(error_of("server:\n  timeouts: {write: 0}\n"),
              HasSubstr("server.timeouts.write: must be greater than 0"));
  EXPECT_THAT(error_of("server:\n  sse: {max_queued_events: 0}\n"),
              HasSubstr("server.sse.max_queued_events: must be between 1"));
  EXPECT_THAT(error_of("server:\n  cors: {allow_origins: [chat.example.com]}\n"),
              HasSubstr("server.cors.allow_origins: entry 0"));
  EXPECT_THAT(error_of("server:\n  cors: {allow_origins: ['*'], allow_credentials: true}\n"),
              HasSubstr("server.cors.allow_credentials: cannot be true"));
}

TEST(ClientsSection, Validation) {
  auto c = parse("clients:\n  - {name: a, token: '${SET}-0123456789', scopes: [admin, 'models:*']}\n");
  EXPECT_EQ(c.clients[0].token, "from-env-0123456789");
  EXPECT_THAT(error_of("clients:\n  - {name: a}\n  - {name: a}\n"),
              HasSubstr("clients[1].name: duplicate client name"));
  EXPECT_THAT(error_of("clients:\n  - {name: a, token: short}\n"),
              HasSubstr("clients[0].token: too short"));
  EXPECT_THAT(error_of("clients:\n  - {name: a, scopes: [root]}\n"),
              HasSubstr("clients[0].scopes: entry 0: unknown scope \"root\""));
  EXPECT_EQ(error_of("clients:\n  - {token: x}\n"), "clients[0].name: is required");
  EXPECT_EQ(error_of("clients:\n  - {name: a, tokn: x}\n"),
            "clients[0].tokn: unknown key (did you mean \"token\"?)");
}

TEST(LogAndStoreSections, Validation) {
  auto c = parse("log: {level: debug, format: json, access_log: false}\nstore: {data_dir: /tmp/d}\n");
  EXPECT_EQ(c.log.format, "json");
  EXPECT_FALSE(c.server.access_log);
  EXPECT_EQ(c.store.data_dir, "/tmp/d");
  EXPECT_THAT(error_of("log: {level: loud}\n"), HasSubstr("log.level: expected one of"));
  EXPECT_THAT(error_of("log: {format: xml}\n"), HasSubstr("log.format: expected text or json"));
  EXPECT_EQ(c.store.records.data_dir, "/tmp/d");  // SQLite lives in the data dir
  auto shared = parse(
      "store: {redis: 'redis://:pw@10.0.0.5:6380/2', postgres: 'postgresql://agentd@db/agentd', "
      "pool_size: 8}\n");
  EXPECT_EQ(shared.store.kv.redis, "redis://:pw@10.0.0.5:6380/2");
  EXPECT_EQ(shared.store.records.postgres, "postgresql://agentd@db/agentd");
  EXPECT_EQ(shared.store.records.pool_size, 8u);
  EXPECT_THAT(error_of("store: {redis: 'http://x'}\n"), HasSubstr("store.redis"));
  // Redis over TLS: rediss:// is taken; its TLS settings need it.
  EXPECT_EQ(error_of("store: {redis: 'rediss://cache.internal:6380'}\n"), "");
  EXPECT_THAT(error_of("store: {redis: 'rediss://'}\n"), HasSubstr("store.redis"));
  EXPECT_THAT(error_of("store: {redis: 'redis://x', redis_tls: {ca_file: /tmp/ca.pem}}\n"),
              HasSubstr("store.redis_tls"));
  EXPECT_THAT(error_of("store: {pool_size: 0}\n"), HasSubstr("store.pool_size"));
  EXPECT_THAT(error_of("store: {redis_url: x}\n"), HasSubstr("store.redis_url: unknown key"));
  EXPECT_THAT(error_of("store: {data_dir: ''}\n"), HasSubstr("store.data_dir: must not be empty"));
  EXPECT_EQ(error_of("store: {redis: '', postgres: '${UNSET:-}'}\n"), "");
}

TEST(SandboxSection, ScopesTimesAndErrors) {
  auto off = parse("store: {data_dir: /tmp/d}\n");
  EXPECT_FALSE(off.sandbox.enabled);
  auto c = parse("store: {data_dir: /tmp/d}\nsandbox: {backend: local}\n");
  EXPECT_TRUE(c.sandbox.enabled);
  EXPECT_EQ(c.sandbox.scope, sandbox::Scope::session);  // intents of one session share one
  EXPECT_EQ(c.sandbox.session_idle, std::chrono::minutes(15));
  EXPECT_EQ(c.sandbox.sweep_interval, std::chrono::minutes(1));
  EXPECT_EQ(c.sandbox.local.root_dir, "/tmp/d/sandboxes");
  auto i = parse("sandbox: {scope: intent, session_idle: 90s, sweep_interval: 5s}\n");
  EXPECT_EQ(i.sandbox.scope, sandbox::Scope::intent);
  EXPECT_EQ(i.sandbox.session_idle, std::chrono::seconds(90));
  EXPECT_EQ(i.sandbox.sweep_interval, std::chrono::seconds(5));
  EXPECT_THAT(error_of("sandbox: {backend: docker}\n"),
              HasSubstr("sandbox.backend: expected local or e2b, got \"docker\""));
  EXPECT_THAT(error_of("sandbox: {scope: user}\n"),
              HasSubstr("sandbox.scope: expected session or intent, got \"user\""));
  EXPECT_THAT(error_of("sandbox: {session_idle: 0s}\n"), HasSubstr("sandbox.session_idle: must be at least 1s"));
  EXPECT_THAT(error_of("sandbox: {sweep_interval: 10ms}\n"), HasSubstr("sandbox.sweep_interval: must be at least 1s"));
  EXPECT_THAT(error_of("sandbox: {session_ttl: 5m}\n"), HasSubstr("sandbox.session_ttl: unknown key"));
  EXPECT_THAT(error_of("sandbox: {backend: e2b}\n"), HasSubstr("sandbox.e2b.api_key: is required"));
  EXPECT_THAT(error_of("sandbox: {local: {read_only: [usr]}}\n"), HasSubstr("sandbox.local.read_only"));
}

}  // namespace
}  // namespace agentd
