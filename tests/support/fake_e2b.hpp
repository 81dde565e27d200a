// A test double of E2B (the control-plane REST API and the in-sandbox daemon envd) on
// 127.0.0.1, speaking their wire formats as the official `e2b` npm SDK 2.51 uses them, with
// scripted faults and a recording of every call. It is a stand-in, not E2B: see below for
// what its "sandboxes" really are.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace agentd::test {

// Routes (all on one port; the SDK is pointed at it with apiUrl = sandboxUrl = url()):
//   Control plane (header X-API-KEY; errors are {"code": status, "message"}):
//     POST   /v2/sandboxes                 {templateID, timeout (s), metadata, envVars,
//                                           allow_internet_access, ...} → 201 {sandboxID,
//                                           templateID, alias, clientID, envdVersion,
//                                           envdAccessToken, trafficAccessToken, domain}
//     GET    /v2/sandboxes?limit=&nextToken=&state=&metadata=   → [ListedSandbox], the next
//                                           page's token in the `x-next-token` header
//     GET    /sandboxes                    → [ListedSandbox] (v1, running only, no paging)
//     GET    /sandboxes/{id}               → SandboxDetail (with envdAccessToken)
//     DELETE /sandboxes/{id}               → 204
//     POST   /sandboxes/{id}/timeout       {timeout (s)} → 204
//     POST   /sandboxes/{id}/pause         → 204 (409 when already paused)
//     POST   /sandboxes/{id}/resume        {timeout} → 201 Sandbox (409 when running)
//     POST   /v2/sandboxes/{id}/connect    {timeout} → 200 Sandbox (201 when it resumed one)
//   envd (the sandbox is named by the E2b-Sandbox-Id header, or by a Host of the form
//   `<port>-<id>.<domain>`; header X-Access-Token must carry the sandbox's envdAccessToken;
//   an unknown, killed or paused sandbox answers 502 as E2B's edge proxy does):
//     GET  /health                         → 204
//     GET  /files?path=P                   → the bytes (404/400 {"code","message"})
//     POST /files?path=P                   multipart (field `file`, filename = path when
//                                          `path` is absent) or application/octet-stream
//                                          → [{name, type:"file", path}]
//     POST /process.Process/{Start,Connect}   Connect server streams (application/connect+json,
//                                          5-byte frames, flag 0x02 = end of stream)
//     POST /process.Process/{List,SendInput,SendSignal,CloseStdin,Update}   Connect unary
//     POST /filesystem.Filesystem/{Stat,MakeDir,Move,ListDir,Remove}       Connect unary
//   Control (no key; never recorded; never consume a fault):
//     POST /_fake/script (one fault object or an array), GET /_fake/requests,
//     GET /_fake/sandboxes, POST /_fake/reset
//
// What a sandbox is here: a private directory (under options.root_dir, or a fresh temporary
// one) standing for the sandbox's filesystem root, with /home/user as the working directory.
// File routes map absolute sandbox paths into that directory (`..` cannot leave it) and
// relative ones under /home/user. Commands are REALLY RUN on this host, as the Start request
// names them (the SDK sends `/bin/bash -l -c CMD`), in their own process group, with the
// mapped working directory, HOME set to the mapped /home/user and the sandbox's and the
// request's envs — there is no isolation: absolute paths inside a command are host paths.
// Pause stops the process groups (SIGSTOP) and resume continues them. A sandbox past its
// timeout is killed (processes and directory) on the next request that reaches the double.
// Not served: pty, StreamInput, WatchDir and watchers (501/unimplemented), gzip, volumes,
// templates, snapshots; Connect-Timeout-Ms is not enforced.
//
// Process streams: a start event, data events (stdout/stderr base64) as the process writes,
// keepalive events every Keepalive-Ping-Interval seconds (the SDK sends 50; options.keepalive
// overrides), then the end event {exitCode (omitted when 0, as protojson does), exited,
// status ("exit status N" | "signal: killed" ...)} and an end-of-stream frame `{}`.
// Connect{process:{pid}} re-attaches: a start event, then output from that moment on (what
// was written while nobody was attached is not replayed), then the end. Dropping a Start
// stream does not stop the process. A finished process is gone: Connect/SendInput/SendSignal
// on it answer not_found.
//
// Fault JSON (POST /_fake/script; every key optional, unknown keys rejected with 400). The
// first request whose method and path match consumes it:
//   {
//     "method": "POST",                  // empty/absent: any
//     "path": "/process.Process/Start",  // exact request path; absent or "*": any
//     "status": 429,                     // answer with this status in the route's format
//                                        // (Connect routes: the Connect code for it)
//     "message": "slow down",
//     "retry_after": 2,                  // Retry-After header (seconds)
//     "connect_code": "unavailable",     // Connect routes: this code instead of one from status
//     "delay_ms": 100,                   // before answering
//     "hang": true,                      // never answer (until the server stops)
//     "drop_after": 1,                   // Start/Connect: after N data events the body ends
//                                        // without an end-of-stream frame and the connection
//                                        // closes (the process keeps running)
//     "reset_after": 1,                  // the same, but the connection is cut mid-body
//     "end_error": {"code": "internal", "message": "boom", "after": 0}
//                                        // Start/Connect: after N data events, an
//                                        // end-of-stream frame carrying this error
//   }
// GET /_fake/requests → [{"method","path","query","headers":{lower-case name: value},
//                         "body","time_ms"}]

struct FakeE2bEndError {
  std::string code = "internal";
  std::string message = "fake envd error";
  int after = 0;
};

struct FakeE2bFault {
  std::string method;
  std::string path = "*";
  std::optional<int> status;
  std::string message;
  std::optional<int> retry_after_s;
  std::string connect_code;
  std::chrono::milliseconds delay{0};
  bool hang = false;
  std::optional<int> drop_after;
  std::optional<int> reset_after;
  std::optional<FakeE2bEndError> end_error;

  static FakeE2bFault fail(std::string path, int status, std::string message = "fake error");
  static FakeE2bFault hanging(std::string path);
};

// Parses one fault object (the JSON above); throws std::invalid_argument naming the key.
FakeE2bFault parse_fake_e2b_fault(const nlohmann::json& j);

struct FakeE2bRequest {
  std::string method;
  std::string path;   // percent-decoded, without the query
  std::string query;  // raw
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case names, in order
  std::string body;
  std::chrono::system_clock::time_point time;

  std::string header(std::string_view name) const;  // "" when absent
  nlohmann::json json() const;                      // parsed body; null when not JSON
};

struct FakeE2bSandbox {
  std::string id;
  std::string template_id;
  std::string state;  // running | paused
  std::string access_token;
  std::map<std::string, std::string> metadata;
  std::map<std::string, std::string> env;
  bool internet = true;
  std::chrono::system_clock::time_point started_at, end_at;
  std::string dir;  // host directory standing for the sandbox's "/"
  std::size_t processes = 0;  // running
};

struct FakeE2bOptions {
  std::string api_key = "e2b_fake_key";
  std::uint16_t port = 0;
  std::string envd_version = "0.5.7";  // >= 0.5.2: CloseStdin; >= 0.5.7: octet-stream upload
  std::string domain;                  // returned as the sandboxes' `domain` (null when empty)
  std::string root_dir;                // empty: a fresh directory under $TMPDIR, removed at end
  std::size_t list_page_size = 100;    // GET /v2/sandboxes: most per page (also caps `limit`)
  std::optional<std::chrono::milliseconds> keepalive;  // overrides Keepalive-Ping-Interval
};

class FakeE2b {
 public:
  explicit FakeE2b(FakeE2bOptions options = {});  // listening when it returns
  ~FakeE2b();  // stops the server, kills every process, removes the directories it made
  FakeE2b(const FakeE2b&) = delete;
  FakeE2b& operator=(const FakeE2b&) = delete;

  std::uint16_t port() const noexcept;
  std::string url() const;  // http://127.0.0.1:PORT
  const std::string& api_key() const noexcept;

  void script(FakeE2bFault fault);  // appended to the queue
  std::size_t pending() const;      // faults not consumed yet

  std::vector<FakeE2bRequest> requests() const;  // snapshot, oldest first
  std::vector<FakeE2bSandbox> sandboxes() const;  // alive (running or paused)
  void reset();  // faults and recording (sandboxes stay)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace agentd::test
