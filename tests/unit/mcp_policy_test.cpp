// MCP argument policies: parsing errors, the shell-command analysis against a table of bypass
// attempts, path jails, patterns, lengths, scoping and rule order.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "agentd/core/config.hpp"
#include "agentd/core/error.hpp"
#include "agentd/mcp/policy.hpp"

namespace agentd::mcp {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

ArgumentPolicy parse(const std::string& yaml) {
  // yaml-cpp directly: load_yaml_string wants a whole document (a map) and this is one list.
  return ArgumentPolicy::parse(core::ConfigNode(YAML::Load(yaml), "mcp.policies"));
}

// The ConfigError message of parsing `yaml`, or "" when it parses.
std::string error_of(const std::string& yaml) {
  try {
    parse(yaml);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

const char* kShell = R"(
- name: shell-allowlist
  tools: ["shell__run*"]
  argument: command
  command:
    allow: [ls, cat, "git status", "git log"]
)";

// ---------------------------------------------------------------------------------------------
// Parsing

TEST(McpPolicyParse, EmptyAndAbsentListsHaveNoRules) {
  EXPECT_TRUE(parse("[]").empty());
  auto none = ArgumentPolicy::parse(core::ConfigNode(YAML::Node(), "mcp.policies"));
  EXPECT_TRUE(none.empty());
  EXPECT_FALSE(none.check("c", "shell__run", json::object()).has_value());
  auto p = parse(kShell);
  ASSERT_EQ(p.rules().size(), 1u);
  const auto& r = p.rules()[0];
  EXPECT_EQ(r.name, "shell-allowlist");
  const auto& c = std::get<CommandCheck>(r.check);
  ASSERT_EQ(c.allow.size(), 4u);
  EXPECT_EQ(c.allow[2], (std::vector<std::string>{"git", "status"}));
  EXPECT_FALSE(c.allow_absolute_paths);
  EXPECT_FALSE(c.allow_parent_paths);
}

TEST(McpPolicyParse, ErrorsNameTheKey) {
  EXPECT_EQ(error_of("{a: 1}"), "mcp.policies: expected a list, got a map");
  EXPECT_THAT(error_of("- {name: a, tools: [x], argument: q, max_length: 5, bogus: 1}"),
              HasSubstr("mcp.policies[0].bogus: unknown key"));
  EXPECT_THAT(
      error_of(
          "- {name: a, tools: [x], argument: q, command: {allow: [ls], allow_absolute: true}}"),
      HasSubstr("mcp.policies[0].command.allow_absolute: unknown key"));
  EXPECT_THAT(error_of("- {name: a, tools: [x], argument: q, path: {within: [/a], jail: 1}}"),
              HasSubstr("mcp.policies[0].path.jail: unknown key"));
  EXPECT_EQ(error_of("- {tools: [x], argument: q, max_length: 5}"),
            "mcp.policies[0].name: is required");
  EXPECT_EQ(error_of("- {name: a, argument: q, max_length: 5}"),
            "mcp.policies[0].tools: is required");
  EXPECT_EQ(error_of("- {name: a, tools: [], argument: q, max_length: 5}"),
            "mcp.policies[0].tools: must not be empty");
  EXPECT_EQ(error_of("- {name: a, tools: [x], clients: [], argument: q, max_length: 5}"),
            "mcp.policies[0].clients: must not be empty");
  EXPECT_EQ(error_of("- {name: a, tools: [x], max_length: 5}"),
            "mcp.policies[0].argument: is required");
  EXPECT_THAT(error_of("- {name: 'has space', tools: [x], argument: q, max_length: 5}"),
              HasSubstr("mcp.policies[0].name: expected 1-64 letters"));
  EXPECT_EQ(error_of("- {name: a, tools: [x], argument: q, max_length: 5}\n"
                     "- {name: a, tools: [y], argument: q, max_length: 5}"),
            "mcp.policies[1].name: duplicate policy name \"a\"");
  EXPECT_THAT(error_of("- {name: a, tools: [x], argument: '/a~2', max_length: 5}"),
              HasSubstr("mcp.policies[0].argument: not a valid JSON pointer"));
  EXPECT_THAT(error_of("- {name: a, tools: [x], argument: q, max_length: lots}"),
              HasSubstr("mcp.policies[0].max_length: expected an integer"));
}

TEST(McpPolicyParse, ExactlyOneKind) {
  EXPECT_EQ(error_of("- {name: a, tools: [x], argument: q}"),
            "mcp.policies[0]: a policy needs exactly one of command, path, "
            "deny_patterns/allow_patterns or max_length");
  EXPECT_THAT(error_of("- {name: a, tools: [x], argument: q, command: {allow: [ls]}, "
                       "max_length: 5}"),
              HasSubstr("mcp.policies[0]: has both command and max_length; a policy takes "
                        "exactly one of"));
  EXPECT_THAT(error_of("- {name: a, tools: [x], argument: q, path: {within: [/a]}, "
                       "deny_patterns: [x]}"),
              HasSubstr("has both path and deny_patterns/allow_patterns"));
  // deny_patterns and allow_patterns together are one kind.
  EXPECT_EQ(error_of("- {name: a, tools: [x], argument: q, deny_patterns: [x], "
                     "allow_patterns: [y]}"),
            "");
  EXPECT_THAT(error_of("- {name: a, tools: [x], argument: '*', command: {allow: [ls]}}"),
              HasSubstr("mcp.policies[0].argument: \"*\" only works with"));
}

TEST(McpPolicyParse, CommandAllowlistErrors) {
  auto with_allow = [](const std::string& allow) {
    return error_of("- {name: a, tools: [x], argument: q, command: {allow: " + allow + "}}");
  };
  EXPECT_THAT(with_allow("[]"), HasSubstr("mcp.policies[0].command.allow: must not be empty"));
  EXPECT_THAT(with_allow("ls"), HasSubstr("mcp.policies[0].command.allow: expected a list"));
  EXPECT_THAT(with_allow("[ls, '/bin/rm']"),
              HasSubstr("mcp.policies[0].command.allow[1]: the program must be a bare name"));
  EXPECT_THAT(with_allow("['ls; rm']"),
              HasSubstr("mcp.policies[0].command.allow[0]: expected plain words"));
  EXPECT_THAT(with_allow("[\"'ls'\"]"), HasSubstr("quotes and backslashes are not allowed"));
  EXPECT_THAT(with_allow("['FOO=1']"), HasSubstr("must not be a variable assignment"));
  EXPECT_THAT(with_allow("['  ']"), HasSubstr("mcp.policies[0].command.allow[0]: an empty entry"));
  EXPECT_EQ(error_of("- {name: a, tools: [x], argument: q, command: {}}"),
            "mcp.policies[0].command.allow: is required");
  EXPECT_THAT(error_of("- {name: a, tools: [x], argument: q, command: ls}"),
              HasSubstr("mcp.policies[0].command: expected a map"));
}

TEST(McpPolicyParse, PathAndPatternErrors) {
  EXPECT_THAT(error_of("- {name: a, tools: [x], argument: q, path: {within: [srv/data]}}"),
              HasSubstr("mcp.policies[0].path.within[0]: expected an absolute path"));
  EXPECT_THAT(error_of("- {name: a, tools: [x], argument: q, path: {within: ['/srv/../etc']}}"),
              HasSubstr("mcp.policies[0].path.within[0]: expected an absolute path without '..'"));
  EXPECT_EQ(error_of("- {name: a, tools: [x], argument: q, path: {within: []}}"),
            "mcp.policies[0].path.within: must not be empty");
  EXPECT_THAT(error_of("- {name: a, tools: [x], argument: q, deny_patterns: [ok, '(unclosed']}"),
              HasSubstr("mcp.policies[0].deny_patterns[1]: not a valid regular expression"));
  EXPECT_THAT(error_of("- {name: a, tools: [x], argument: q, allow_patterns: ['[a-']}"),
              HasSubstr("mcp.policies[0].allow_patterns[0]: not a valid regular expression"));
  EXPECT_EQ(error_of("- {name: a, tools: [x], argument: q, deny_patterns: []}"),
            "mcp.policies[0].deny_patterns: must not be empty");
  EXPECT_EQ(error_of("- {name: a, tools: [x], argument: q, deny_patterns: ['']}"),
            "mcp.policies[0].deny_patterns[0]: an empty pattern matches everything");
}

// ---------------------------------------------------------------------------------------------
// Shell words

TEST(McpPolicyShell, SplitsLikeAPosixShell) {
  auto s = split_simple_command("a 'b c'  \"d\\\"e\\\\\" f\\ g '' h\"i\"'j'\tk");
  ASSERT_EQ(s.refusal, "");
  EXPECT_EQ(s.words, (std::vector<std::string>{"a", "b c", "d\"e\\", "f g", "", "hij", "k"}));
  // Inside double quotes a backslash before an ordinary character stays.
  EXPECT_EQ(split_simple_command("\"a\\b\"").words, (std::vector<std::string>{"a\\b"}));
  // Quoted operators and globs are literal words.
  EXPECT_EQ(split_simple_command("grep 'a|b;c' \"*.txt\" \\;").words,
            (std::vector<std::string>{"grep", "a|b;c", "*.txt", ";"}));
  EXPECT_TRUE(split_simple_command("   ").words.empty());
  EXPECT_THAT(split_simple_command("a 'b").refusal, HasSubstr("unterminated single quote"));
}

TEST(McpPolicyShell, AllowedCommandsPass) {
  auto p = parse(kShell);
  for (const json& cmd : {json("ls -la"),
                          json("git status --short"),
                          json("cat 'my file.txt'"),
                          json("ls"),
                          json("  ls\t-la  "),
                          json("git log --oneline -n 5"),
                          json("cat \"a b\" c"),
                          json("cat my\\ file"),
                          json("ls 'a;b|c'"),
                          json("cat 'x*'"),
                          json("cat a\\*"),
                          json("ls -- -x"),
                          json("cat a/b/c.txt"),
                          json("ls ''"),
                          json("cat файл.txt"),
                          json("git log main..feature"),
                          json("git log --format=%h"),
                          json::array({"cat", "my file.txt"}),
                          json::array({"git", "status"}),
                          json::array({"git status", "-s"}),
                          json::array({"ls", ""})}) {
    SCOPED_TRACE(cmd.dump());
    auto d = p.check("lobechat", "shell__run_command", {{"command", cmd}});
    EXPECT_FALSE(d.has_value()) << (d ? d->message : "");
  }
}

struct Hostile {
  json command;
  std::string why;  // a part of the message that says why
};

// Every row must be denied by the rule, with a message naming the reason.
const std::vector<Hostile>& hostile_table() {
  static const std::vector<Hostile> rows = {
      {"ls; rm -rf /", "command separator ';'"},
      {"ls;rm", "command separator ';'"},
      {"ls && rm x", "'&' (background job or '&&' list)"},
      {"ls || rm x", "pipe '|'"},
      {"ls | sh", "pipe '|'"},
      {"ls & rm", "'&' (background job"},
      {"`rm -rf /`", "backtick"},
      {"$(rm -rf /)", "'$'"},
      {"ls $(id)", "'$'"},
      {"ls ${HOME}", "'$'"},
      {"ls $HOME", "'$'"},
      {"ls \"$HOME\"", "'$'"},
      {"cat '$(id)'", "'$'"},
      {"ls \"`id`\"", "backtick"},
      {"$'\\x72\\x6d' x", "'$'"},  // bash ANSI-C quoting spells rm
      {"ls\nrm -rf /", "newline"},
      {"ls \\\nrm", "newline"},  // a line continuation
      {"ls\rrm", "carriage return"},
      {std::string("ls\0rm", 5), "NUL byte"},
      {"ls\x0brm", "control character 0x0B"},
      {"ls -la\x1b[2J", "control character 0x1B"},
      {"cat x\x7f", "control character 0x7F"},
      {"ls\xc2\x85rm", "control character U+0085"},
      {"ls\xe2\x80\xa8rm", "control character U+2028"},
      {"ls \xff", "invalid UTF-8"},
      {"'r''m' -rf /", "program \"rm\" is not in the allowlist"},
      {"\"rm\" x", "program \"rm\" is not in the allowlist"},
      {"r\\m x", "program \"rm\" is not in the allowlist"},
      {"rm -rf /", "program \"rm\" is not in the allowlist"},
      {"/bin/rm x", "the program \"/bin/rm\" is a path"},
      {"/bin/ls", "the program \"/bin/ls\" is a path"},
      {"./rm", "the program \"./rm\" is a path"},
      {"../../bin/rm", "the program \"../../bin/rm\" is a path"},
      {"'/bin/ls' -la", "the program \"/bin/ls\" is a path"},
      {"\\/bin/ls", "the program \"/bin/ls\" is a path"},
      {"cat ../../etc/passwd", "parent directory '..' in \"../../etc/passwd\""},
      {"cat foo/../../x", "parent directory '..'"},
      {"cat ..", "parent directory '..'"},
      {"cat --file=../x", "parent directory '..'"},
      {"cat -f../x", "parent directory '..'"},
      {"cat /etc/passwd", "absolute path \"/etc/passwd\""},
      {"cat '/etc/passwd'", "absolute path \"/etc/passwd\""},
      {"c\"a\"t /etc/passwd", "absolute path \"/etc/passwd\""},
      {"cat --file=/etc/passwd", "absolute path \"--file=/etc/passwd\""},
      {"cat -f/etc/passwd", "absolute path \"-f/etc/passwd\""},
      {"FOO=1 ls", "variable assignment \"FOO=1\""},
      {"PATH=/tmp ls", "variable assignment"},
      {"ls > /tmp/x", "redirection '>'"},
      {"ls < /etc/passwd", "redirection '<'"},
      {"ls 2>&1", "redirection '>'"},
      {"ls >x", "redirection '>'"},
      {"(rm x)", "parenthesis '('"},
      {"{ rm x; }", "brace '{'"},
      {"ls {a,b}", "brace '{'"},
      {"ls 'unterminated", "unterminated single quote"},
      {"ls \"unterminated", "unterminated double quote"},
      {"ls \\", "trailing backslash"},
      {"git push", "command \"git push\" is not in the allowlist"},
      {"git -c core.pager=sh status", "command \"git -c\" is not in the allowlist"},
      {"git", "command \"git\" is not in the allowlist"},
      {"gitstatus", "program \"gitstatus\" is not in the allowlist"},
      {"git\\ status", "program \"git status\" is not in the allowlist"},
      {"\xef\xbd\x92\xef\xbd\x8d -rf /", "program \"\xef\xbd\x92\xef\xbd\x8d\" is not in"},
      {"\xef\xbd\x8c\xef\xbd\x93", "is not in the allowlist"},  // fullwidth "ls"
      {"ls\xc2\xa0-la", "is not in the allowlist"},  // a no-break space is not a separator
      {"ls\t;rm", "command separator ';'"},
      {"ls *", "glob character '*'"},
      {"cat ?", "glob character '?'"},
      {"ls [a]", "glob character '['"},
      {"cat ~/.ssh/id_rsa", "tilde expansion"},
      {"ls #; rm", "comment"},
      {"! ls", "'!'"},
      {"ls ^x", "'^'"},
      {"", "an empty command"},
      {"   ", "an empty command"},
      // argv form: the same tricks in elements
      {json::array({"/bin/rm", "x"}), "the program \"/bin/rm\" is a path"},
      {json::array({"rm", "-rf", "/"}), "program \"rm\" is not in the allowlist"},
      {json::array({"r\\m"}), "program \"rm\" is not in the allowlist"},
      {json::array({"'r''m'"}), "program \"rm\" is not in the allowlist"},
      {json::array({"ls", "; rm"}), "command separator ';'"},
      {json::array({"ls", "$(id)"}), "'$'"},
      {json::array({"ls", "`id`"}), "backtick"},
      {json::array({"ls", "x|y"}), "pipe '|'"},
      {json::array({"ls", "a\nb"}), "newline"},
      {json::array({"ls", std::string("a\0b", 3)}), "NUL byte"},
      {json::array({"ls", "/etc/passwd"}), "absolute path"},
      {json::array({"cat", "../x"}), "parent directory '..'"},
      {json::array({"FOO=1", "ls"}), "variable assignment"},
      {json::array({"git", "push"}), "command \"git push\""},
      {json::array({"ls", "it's"}), "unterminated single quote"},
      {json::array({"ls", 5}), "argument 'command' item 1 must be a string, got a number"},
      {json::array(), "an empty command"},
      {json::array({"", "ls"}), "an empty program name"},
      // wrong types
      {42, "argument 'command' must be a string or an array of strings, got a number"},
      {true, "got a boolean"},
      {json::object({{"cmd", "ls"}}), "got an object"},
      {nullptr, "argument 'command' is required by rule 'shell-allowlist'"},
  };
  return rows;
}

TEST(McpPolicyShell, HostileCommandsAreAllDenied) {
  auto p = parse(kShell);
  ASSERT_GE(hostile_table().size(), 40u);
  for (const auto& row : hostile_table()) {
    SCOPED_TRACE(row.command.dump(-1, ' ', false, json::error_handler_t::replace));
    auto d = p.check("lobechat", "shell__run_command", {{"command", row.command}});
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->rule, "shell-allowlist");
    EXPECT_THAT(d->message, HasSubstr(row.why));
    // Messages are one line of valid UTF-8 (they end up in JSON and in logs).
    EXPECT_EQ(d->message.find_first_of(std::string("\n\r\0", 3)), std::string::npos);
    EXPECT_NO_THROW((void)to_jsonrpc_error(*d).dump());
  }
}

TEST(McpPolicyShell, MissingArgumentAndOtherTools) {
  auto p = parse(kShell);
  auto d = p.check("c", "shell__run_command", json::object());
  ASSERT_TRUE(d);
  EXPECT_EQ(d->message, "argument 'command' is required by rule 'shell-allowlist'");
  EXPECT_TRUE(p.check("c", "shell__run", nullptr));              // no arguments at all
  EXPECT_TRUE(p.check("c", "shell__run", json::array({"ls"})));  // arguments not an object
  // Tools outside the globs are not governed by the rule.
  EXPECT_FALSE(p.check("c", "shell__exec", {{"command", "rm -rf /"}}));
  EXPECT_FALSE(p.check("c", "other__run_command", {{"command", "rm -rf /"}}));
}

TEST(McpPolicyShell, PathFlagsAndEntryPrefixes) {
  auto p = parse(R"(
- name: loose
  tools: ["*"]
  argument: command
  command: {allow: [cat, "head -n"], allow_absolute_paths: true, allow_parent_paths: true}
)");
  EXPECT_FALSE(p.check("c", "t", {{"command", "cat /etc/hostname ../x"}}));
  EXPECT_FALSE(p.check("c", "t", {{"command", "head -n 5 /var/log/syslog"}}));
  // The flags are about arguments: the program still may not be a path.
  auto d = p.check("c", "t", {{"command", "/bin/cat x"}});
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("is a path"));
  d = p.check("c", "t", {{"command", "head -c 5 x"}});
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("command \"head -c\" is not in the allowlist"));

  // Words written in the allow entry itself are exempt from the path checks; later ones are not.
  auto fixed = parse(R"(
- name: fixed
  tools: ["*"]
  argument: command
  command: {allow: ["cat /etc/hostname"]}
)");
  EXPECT_FALSE(fixed.check("c", "t", {{"command", "cat /etc/hostname"}}));
  d = fixed.check("c", "t", {{"command", "cat /etc/shadow"}});
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("command \"cat /etc/shadow\" is not in the allowlist"));
  d = fixed.check("c", "t", {{"command", "cat /etc/hostname /etc/shadow"}});
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("absolute path \"/etc/shadow\""));
}

TEST(McpPolicyShell, JsonPointerArgument) {
  auto p = parse(R"(
- name: nested
  tools: ["*"]
  argument: /opts/cmd
  command: {allow: [ls]}
)");
  EXPECT_FALSE(p.check("c", "t", {{"opts", {{"cmd", "ls -l"}}}}));
  auto d = p.check("c", "t", {{"opts", {{"cmd", "ls; id"}}}});
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("argument '/opts/cmd' = \"ls; id\": command separator"));
  d = p.check("c", "t", {{"cmd", "ls"}});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->message, "argument '/opts/cmd' is required by rule 'nested'");
  EXPECT_TRUE(p.check("c", "t", {{"opts", "not an object"}}));
}

TEST(McpPolicyShell, MessagesAreShortAndEscaped) {
  auto p = parse(kShell);
  std::string huge = "ls " + std::string(100000, 'a') + "; rm";
  auto d = p.check("c", "shell__run", {{"command", huge}});
  ASSERT_TRUE(d);
  EXPECT_LT(d->message.size(), 300u);
  EXPECT_THAT(d->message, HasSubstr("...\": command separator ';'"));

  d = p.check("c", "shell__run", {{"command", std::string("ls\n\0\"\xff", 6)}});
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr(R"("ls\n\0\"\xFF")"));

  auto e = to_jsonrpc_error(Denial{"shell-allowlist", "why"});
  EXPECT_EQ(e, json::parse(R"({"code": -32003, "message": "denied by policy 'shell-allowlist': why",
                               "data": {"rule": "shell-allowlist"}})"));
}

// ---------------------------------------------------------------------------------------------
// Paths

const char* kJail = R"(
- name: fs-jail
  tools: ["fs__*"]
  argument: path
  path: { within: [/srv/data, /tmp/work/] }
)";

TEST(McpPolicyPath, InsideTheRootsAfterNormalisation) {
  auto p = parse(kJail);
  EXPECT_EQ(std::get<PathCheck>(p.rules()[0].check).within,
            (std::vector<std::string>{"/srv/data", "/tmp/work"}));
  for (const json& path :
       {json("/srv/data/a/./b"), json("/srv/data"), json("/srv/data/"), json("//srv//data/x"),
        json("/tmp/work/x/y.txt"), json::array({"/srv/data/a", "/tmp/work/b"}), json::array()}) {
    SCOPED_TRACE(path.dump());
    auto d = p.check("c", "fs__read", {{"path", path}});
    EXPECT_FALSE(d.has_value()) << (d ? d->message : "");
  }
}

TEST(McpPolicyPath, EscapesAreDenied) {
  auto p = parse(kJail);
  const std::vector<std::pair<json, std::string>> rows = {
      {"/srv/data/../etc", "a '..' component is not allowed"},
      {"/srv/data/a/../../../etc/passwd", "a '..' component"},
      {"/srv/data/./../x", "a '..' component"},
      {"/srv/datax/y", "\"/srv/datax/y\": not inside any of /srv/data, /tmp/work"},
      {"/srv", "not inside"},
      {"/", "not inside"},
      {"/etc/passwd", "not inside"},
      {"srv/data/x", "not an absolute path"},
      {"./x", "not an absolute path"},
      {"~/x", "not an absolute path"},
      {"file:///srv/data/x", "not an absolute path"},
      {"", "an empty path"},
      {std::string("/srv/data/x\0/../../etc", 22), "NUL byte"},
      {"/srv/data/x\ny", "control character 0x0A"},
      {json::array({"/srv/data/a", "/etc/passwd"}), "argument 'path' item 1 = \"/etc/passwd\""},
      {json::array({"/srv/data/a", 7}), "argument 'path' item 1 must be a string, got a number"},
      {3, "argument 'path' must be a string or an array of strings, got a number"},
      {nullptr, "argument 'path' is required by rule 'fs-jail'"},
  };
  for (const auto& [path, why] : rows) {
    SCOPED_TRACE(path.dump(-1, ' ', false, json::error_handler_t::replace));
    auto d = p.check("c", "fs__write", {{"path", path}});
    ASSERT_TRUE(d.has_value());
    EXPECT_EQ(d->rule, "fs-jail");
    EXPECT_THAT(d->message, HasSubstr(why));
  }
}

// ---------------------------------------------------------------------------------------------
// Patterns and lengths

const char* kSecrets = R"(
- name: no-secrets
  tools: ["*"]
  argument: "*"
  deny_patterns: ["(?i)begin [a-z ]*private key", "AKIA[0-9A-Z]{16}"]
)";

TEST(McpPolicyPatterns, DenyPatternsSearchEveryString) {
  auto p = parse(kSecrets);
  EXPECT_FALSE(
      p.check("c", "any__tool", json::parse(R"({"text": "hello", "n": 5, "l": [1, true, null]})")));
  EXPECT_FALSE(p.check("c", "any__tool", nullptr));

  auto d = p.check("c", "any__tool", {{"text", "-----BEGIN RSA PRIVATE KEY-----\nMIIEsecret"}});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->rule, "no-secrets");
  EXPECT_EQ(d->message, "argument '/text' matches deny pattern \"(?i)begin [a-z ]*private key\"");
  EXPECT_THAT(d->message, Not(HasSubstr("MIIE")));  // the value is not echoed

  d = p.check("c", "t", json::parse(R"({"a": [{"b": "x begin openssh private key y"}]})"));
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("argument '/a/0/b' matches"));

  d = p.check("c", "t", json::parse(R"({"x/y~": ["AKIAABCDEFGHIJKLMNOP"]})"));
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("argument '/x~1y~0/0' matches deny pattern \"AKIA"));

  d = p.check("c", "t", json::parse(R"({"outer": {"AKIAABCDEFGHIJKLMNOP": 1}})"));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->message, "a key in argument '/outer' matches deny pattern \"AKIA[0-9A-Z]{16}\"");

  d = p.check("c", "t", "AKIAABCDEFGHIJKLMNOP");  // arguments that are a bare string
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("the arguments matches"));
}

TEST(McpPolicyPatterns, DeepAndLongInputsDoNotCrash) {
  auto p = parse(kSecrets);
  // libstdc++'s std::regex overflows the stack here; the check must just answer.
  EXPECT_FALSE(p.check("c", "t", {{"text", "begin " + std::string(1000000, 'a')}}));
  auto d = p.check("c", "t", {{"text", std::string(1000000, 'a') + " begin private key"}});
  ASSERT_TRUE(d);

  // Built by the (iterative) parser: copying a deep value would recurse.
  const int depth = 20000;
  auto deep = json::parse("{\"deep\": " + std::string(depth, '[') + "\"begin private key\"" +
                          std::string(depth, ']') + "}");
  d = p.check("c", "t", deep);
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("argument '/deep/0/0/0/0"));
  EXPECT_LT(d->message.size(), 300u);
}

TEST(McpPolicyPatterns, TooComplexFailsClosed) {
  auto p = parse("- {name: evil, tools: ['*'], argument: q, deny_patterns: ['(a+)+b']}");
  auto d = p.check("c", "t", {{"q", std::string(40, 'a')}});
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("could not be evaluated"));
}

TEST(McpPolicyPatterns, AllowPatternsMatchWholeValues) {
  auto p = parse(R"(
- name: branch-names
  tools: ["git__*"]
  argument: branch
  allow_patterns: ["[a-z0-9/_-]+", "release-[0-9.]+"]
  deny_patterns: ["^main$"]
)");
  EXPECT_FALSE(p.check("c", "git__checkout", {{"branch", "feature/x-1"}}));
  EXPECT_FALSE(p.check("c", "git__checkout", {{"branch", "release-1.2"}}));
  EXPECT_FALSE(p.check("c", "git__checkout", {{"branch", json::array({"a", "b"})}}));
  for (const char* bad : {"x; rm", "feature\nrm", "Feature", "release-1.2 x", ""}) {
    SCOPED_TRACE(bad);
    auto d = p.check("c", "git__checkout", {{"branch", bad}});
    ASSERT_TRUE(d);
    EXPECT_EQ(d->message, "argument 'branch' matches none of the allowed patterns");
  }
  auto d = p.check("c", "git__checkout", {{"branch", "main"}});
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("matches deny pattern \"^main$\""));
  d = p.check("c", "git__checkout", {{"branch", 1}});
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("must be a string or an array of strings"));
}

TEST(McpPolicyPatterns, AnchorsAndDotFollowEcmaScript) {
  // `^`/`$` anchor the whole string and `.` does not match a newline, as in ECMAScript.
  auto p = parse(R"(
- name: anchors
  tools: ["*"]
  argument: q
  deny_patterns: ["^rm$", "a.b"]
)");
  EXPECT_FALSE(p.check("c", "t", {{"q", "ls\nrm"}}));
  EXPECT_FALSE(p.check("c", "t", {{"q", "a\nb"}}));
  EXPECT_TRUE(p.check("c", "t", {{"q", "rm"}}));
  EXPECT_TRUE(p.check("c", "t", {{"q", "axb"}}));
}

TEST(McpPolicyLength, MaxLengthCountsCharacters) {
  auto p = parse(R"(
- name: short-queries
  tools: ["search__*"]
  argument: query
  max_length: 2000
)");
  EXPECT_FALSE(p.check("c", "search__web", {{"query", std::string(2000, 'q')}}));
  std::string accents;
  for (int i = 0; i < 2000; ++i) accents += "\xc3\xa9";  // 4000 bytes, 2000 characters
  EXPECT_FALSE(p.check("c", "search__web", {{"query", accents}}));
  auto d = p.check("c", "search__web", {{"query", std::string(2001, 'q')}});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->rule, "short-queries");
  EXPECT_EQ(d->message, "argument 'query' is 2001 characters long; the limit is 2000");
  d = p.check("c", "search__web", {{"query", json::array({"ok", std::string(2001, 'q')})}});
  ASSERT_TRUE(d);
  EXPECT_THAT(d->message, HasSubstr("argument 'query' item 1 is 2001 characters"));
  EXPECT_TRUE(p.check("c", "search__web", {{"query", 5}}));
  EXPECT_FALSE(p.check("c", "other__web", {{"query", std::string(5000, 'q')}}));

  auto all = parse("- {name: all, tools: ['*'], argument: '*', max_length: 3}");
  EXPECT_FALSE(all.check("c", "t", json::parse(R"({"abc": ["xyz", 12345]})")));
  d = all.check("c", "t", {{"abcd", "x"}});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->message, "a key in the arguments is 4 characters long; the limit is 3");
}

// ---------------------------------------------------------------------------------------------
// Scoping and order

TEST(McpPolicyScope, ClientGlobsLimitTheRule) {
  auto p = parse(R"(
- name: lobe-only
  tools: ["shell__*"]
  clients: ["lobe*", ci]
  argument: command
  command: {allow: [ls]}
)");
  EXPECT_TRUE(p.check("lobechat", "shell__run", {{"command", "rm x"}}));
  EXPECT_TRUE(p.check("ci", "shell__run", {{"command", "rm x"}}));
  EXPECT_FALSE(p.check("cibot", "shell__run", {{"command", "rm x"}}));
  EXPECT_FALSE(p.check("admin", "shell__run", {{"command", "rm x"}}));
  EXPECT_TRUE(p.rules()[0].applies_to("lobe", "shell__x"));
  EXPECT_FALSE(p.rules()[0].applies_to("lobe", "fs__x"));
}

TEST(McpPolicyScope, FirstDenialWins) {
  auto p = parse(R"(
- name: other-tools
  tools: ["fs__*"]
  argument: command
  max_length: 1
- name: first
  tools: ["shell__*"]
  argument: command
  max_length: 10
- name: second
  tools: ["*"]
  argument: command
  command: {allow: [ls]}
)");
  // Both `first` and `second` would deny: the earlier rule names the denial.
  auto d = p.check("c", "shell__run", {{"command", "rm -rf / --no-preserve-root"}});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->rule, "first");
  // `first` passes, so `second` decides.
  d = p.check("c", "shell__run", {{"command", "rm x"}});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->rule, "second");
  // `other-tools` does not apply to shell tools even though it is first.
  EXPECT_FALSE(p.check("c", "shell__run", {{"command", "ls -la"}}));
  d = p.check("c", "fs__read", {{"command", "ls -la"}});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->rule, "other-tools");
}

}  // namespace
}  // namespace agentd::mcp
