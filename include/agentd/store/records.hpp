// Durable records: intents and their steps, sessions, artifacts' metadata and relations, the
// spend ledger and the audit log, on SQLite (the embedded default) or PostgreSQL, behind one
// typed interface. Callers never see SQL.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "agentd/core/config.hpp"
#include "agentd/core/error.hpp"
#include "agentd/core/metrics.hpp"
#include "agentd/core/runtime.hpp"

namespace agentd::store {

namespace asio = boost::asio;
using Json = nlohmann::json;
using TimeMs = std::int64_t;  // UTC milliseconds since the Unix epoch

// Where the records live and how the connections behave. `postgres` empty means SQLite in
// `<data_dir>/agentd.db`.
struct RecordsConfig {
  std::string data_dir = "./data";
  std::string postgres;       // libpq URL (postgresql://...) or key=value string
  std::size_t pool_size = 4;  // PostgreSQL connections; SQLite reader connections
  std::chrono::milliseconds pool_timeout{10'000};            // longest wait for a free connection
  std::chrono::milliseconds connect_timeout{5'000};          // PostgreSQL (libpq rounds to >= 2 s)
  std::chrono::milliseconds statement_timeout{30'000};       // PostgreSQL; 0 = none
  std::chrono::milliseconds busy_timeout{5'000};             // SQLite lock waits
  std::chrono::milliseconds migration_lock_timeout{60'000};  // waiting for another instance
  std::string application_name = "agentd";  // PostgreSQL application_name of our sessions
};

// Reads the durable-record keys of the `store` section into `out`: postgres, pool_size,
// pool_timeout, connect_timeout, statement_timeout, busy_timeout, migration_lock_timeout,
// data_dir. Other keys (redis, ...) are left for their owners; the caller calls finish().
void parse_records_config(const core::ConfigNode& store, RecordsConfig& out);

// A random 128-bit id as 32 lowercase hex characters.
std::string new_id();
// For append-only records (spend, audit): 32 lowercase hex characters too, the first 12 the
// time `at` (milliseconds), the other 20 random (80 bits). Ids made later sort later, so a
// batch of inserts lands at the end of the primary-key index instead of on a random page each.
std::string new_id(TimeMs at);
TimeMs now_ms();

enum class IntentStatus { accepted, running, waiting_input, completed, failed, cancelled };
std::string_view to_string(IntentStatus s) noexcept;
std::optional<IntentStatus> parse_intent_status(std::string_view s) noexcept;
// completed, failed and cancelled are final: such an intent never changes status again.
bool is_terminal(IntentStatus s) noexcept;

struct Intent {
  std::string id;          // empty on create: the store assigns new_id()
  std::string client;      // required
  std::string agent;       // required
  std::string session_id;  // empty: none
  IntentStatus status = IntentStatus::accepted;
  Json input = Json::object();
  Json result;        // null until set
  std::string error;  // why it failed or was cancelled; empty otherwise
  std::string owner;  // the instance holding the lease; empty: none
  TimeMs lease_until = 0;
  TimeMs created_at = 0;  // set by the store
  TimeMs updated_at = 0;  // set by the store
};

// A status change; `result` / `error` left empty keep what is stored.
struct IntentUpdate {
  IntentStatus status = IntentStatus::running;
  std::optional<Json> result;
  std::optional<std::string> error;
};

// One recorded step of an intent. `seq` is chosen by the caller: 1 for the first step, then
// exactly one more than the last (the store refuses gaps and rewrites).
struct Step {
  std::string intent_id;
  std::int64_t seq = 0;
  std::string kind;  // e.g. plan, llm, tool_call, tool_result, message
  Json data = Json::object();
  TimeMs created_at = 0;  // set by the store
};

struct Session {
  std::string id;
  std::string client;  // the client that created it; only it may append
  std::int64_t messages = 0;
  std::int64_t tokens = 0;  // sum of the stored messages' estimates
  TimeMs created_at = 0;
  TimeMs updated_at = 0;
};

struct Message {
  std::string id;           // empty on append: the store assigns new_id()
  std::int64_t seq = 0;     // assigned by the store, increasing within a session
  std::string role;         // system, user, assistant, tool
  Json content;             // the message as the model API wants it
  std::int64_t tokens = 0;  // an estimate, used by trimming
  std::string intent_id;    // the intent that produced it; may be empty
  TimeMs created_at = 0;    // set by the store
};

// Trimming keeps the newest messages: at most `keep_messages` (0 = no count limit) whose
// token estimates sum to at most `max_tokens` (0 = no token limit). The newest message is
// always kept.
struct SessionTrim {
  std::int64_t keep_messages = 0;
  std::int64_t max_tokens = 0;
};

struct Artifact {
  std::string id;         // empty on create: the store assigns new_id()
  std::string intent_id;  // the intent that produced it; may be empty
  std::string kind;       // code, html, svg, mermaid, markdown, image, json, terminal, url, ...
  std::string mime;
  std::string sha256;     // 64 lowercase hex characters: the blob's address
  std::int64_t size = 0;  // bytes
  std::string name;
  TimeMs created_at = 0;  // set by the store
};

// An artifact as seen from an intent: `relation` is "output" for what it produced, otherwise
// the relation given to link_intent_artifact (e.g. "input" for attachments).
struct IntentArtifact {
  Artifact artifact;
  std::string relation;
};

struct ArtifactLink {
  std::string from_id;
  std::string to_id;
  std::string relation;  // e.g. derived_from, version_of
  TimeMs created_at = 0;
};

struct SpendEntry {
  std::string id;  // empty: the store assigns new_id(at); a retry with the same id is recorded once
  std::string client;
  std::string provider;
  std::string model;
  std::int64_t tokens_in = 0;
  std::int64_t tokens_out = 0;
  std::int64_t cost_micro_usd = 0;
  std::string intent_id;  // may be empty
  TimeMs at = 0;          // 0: now; the UTC day is derived from it
  std::string day;        // YYYY-MM-DD (UTC), set by the store
};

struct SpendTotals {
  std::int64_t tokens_in = 0;
  std::int64_t tokens_out = 0;
  std::int64_t cost_micro_usd = 0;
  std::int64_t calls = 0;
};

struct ModelSpend {
  std::string provider;
  std::string model;
  SpendTotals totals;
};

struct AuditEntry {
  std::string id;  // empty: the store assigns new_id(at)
  TimeMs at = 0;   // 0: now
  std::string client;
  std::string server;
  std::string tool;
  std::string args_sha256;  // 64 lowercase hex characters: the arguments are never stored
  std::string outcome;      // ok, error, denied, unavailable, timeout, ...
  std::int64_t duration_us = 0;
  std::string request_id;
  std::string intent_id;
};

// Entries with from <= at < to (to = 0: no upper bound) of one client (empty: all), newest
// first, at most `limit` (1..10000).
struct AuditQuery {
  std::string client;
  TimeMs from = 0;
  TimeMs to = 0;
  std::size_t limit = 100;
};

struct RecordsHealth {
  bool available = true;
  std::string detail;  // backend and, when unavailable, the last connection error
};

// The repository. Call from the event-loop thread; the database work runs on the blocking
// pool and every call resumes on the caller's executor. A successful write is committed
// (durable) before the call returns. Errors: bad_request (invalid input), not_found, conflict
// (the id exists with other contents, a finished intent, a step out of order), forbidden (a
// session of another client), unavailable (database down, pool busy beyond pool_timeout,
// locked), timeout (statement_timeout), internal. Every write is idempotent by id, so a call
// repeated after an unknown outcome does not record twice.
class Records {
 public:
  virtual ~Records() = default;

  // Intents.
  virtual asio::awaitable<Result<Intent>> create_intent(Intent intent) = 0;
  virtual asio::awaitable<Result<Intent>> get_intent(std::string id) = 0;
  // conflict when the intent is already final (unless this exact update was applied).
  virtual asio::awaitable<Result<Intent>> update_intent(std::string id, IntentUpdate update) = 0;
  // Not final, oldest first: what a restart resumes or fails.
  virtual asio::awaitable<Result<std::vector<Intent>>> list_unfinished_intents(
      std::size_t limit) = 0;
  // Takes or renews the lease of an unfinished intent for `owner` until `until`; false when
  // another owner's lease has not expired or the intent is final.
  virtual asio::awaitable<Result<bool>> claim_intent(std::string id, std::string owner,
                                                     TimeMs until) = 0;

  // Steps.
  virtual asio::awaitable<Result<Step>> append_step(Step step) = 0;
  virtual asio::awaitable<Result<std::vector<Step>>> list_steps(std::string intent_id,
                                                                std::int64_t after_seq) = 0;

  // Sessions: created by the first append.
  virtual asio::awaitable<Result<std::vector<Message>>> append_messages(
      std::string session_id, std::string client, std::vector<Message> messages) = 0;
  virtual asio::awaitable<Result<Session>> get_session(std::string id) = 0;
  // The newest `newest` messages (0: all), oldest first.
  virtual asio::awaitable<Result<std::vector<Message>>> list_messages(std::string session_id,
                                                                      std::size_t newest) = 0;
  // Returns how many messages were removed.
  virtual asio::awaitable<Result<std::int64_t>> trim_session(std::string session_id,
                                                             SessionTrim trim) = 0;
  // false when there was no such session.
  virtual asio::awaitable<Result<bool>> delete_session(std::string id) = 0;

  // Artifacts' metadata (the bodies are blobs, addressed by sha256) and relations.
  virtual asio::awaitable<Result<Artifact>> create_artifact(Artifact artifact) = 0;
  virtual asio::awaitable<Result<Artifact>> get_artifact(std::string id) = 0;
  // true when the link is new.
  virtual asio::awaitable<Result<bool>> link_intent_artifact(std::string intent_id,
                                                             std::string artifact_id,
                                                             std::string relation) = 0;
  virtual asio::awaitable<Result<std::vector<IntentArtifact>>> list_intent_artifacts(
      std::string intent_id) = 0;
  virtual asio::awaitable<Result<bool>> link_artifacts(std::string from_id, std::string to_id,
                                                       std::string relation) = 0;
  // Links from and to the artifact, oldest first.
  virtual asio::awaitable<Result<std::vector<ArtifactLink>>> list_artifact_links(
      std::string artifact_id) = 0;

  // Spend ledger.
  virtual asio::awaitable<Result<SpendEntry>> record_spend(SpendEntry entry) = 0;
  virtual asio::awaitable<Result<SpendTotals>> spend_for_client_day(std::string client,
                                                                    std::string day) = 0;
  virtual asio::awaitable<Result<SpendTotals>> spend_for_client_month(std::string client,
                                                                      std::string month) = 0;
  // Per provider/model over [from_day, to_day] (YYYY-MM-DD), for one client or all (empty);
  // largest cost first.
  virtual asio::awaitable<Result<std::vector<ModelSpend>>> spend_by_model(std::string from_day,
                                                                          std::string to_day,
                                                                          std::string client) = 0;

  // Audit log of MCP tool calls.
  virtual asio::awaitable<Result<AuditEntry>> append_audit(AuditEntry entry) = 0;
  // Many entries in one transaction (one commit), for high-rate writers: ids and times are
  // assigned as by the single-entry calls, entries whose id is already stored are skipped
  // (a retried batch is not recorded twice). Returns how many were stored.
  virtual asio::awaitable<Result<std::size_t>> append_audits(std::vector<AuditEntry> entries) = 0;
  virtual asio::awaitable<Result<std::size_t>> record_spends(std::vector<SpendEntry> entries) = 0;
  virtual asio::awaitable<Result<std::vector<AuditEntry>>> query_audit(AuditQuery query) = 0;

  // Last known state, without I/O (for /readyz).
  virtual RecordsHealth health() const = 0;
  virtual std::string_view backend() const noexcept = 0;  // "sqlite" or "postgres"
};

// Opens the configured backend and applies pending migrations before returning. Blocking:
// call at start, before the loop runs. Throws std::runtime_error when the database cannot be
// reached or migrated, or holds a newer schema than this binary knows. Metrics:
// agentd_store_sql_* in `metrics`. `pool` runs every database call.
std::unique_ptr<Records> make_records(const RecordsConfig& config, core::BlockingPool& pool,
                                      core::Registry& metrics);

// Schema migrations (numbered SQL files compiled in, one list per dialect).
struct MigrationInfo {
  int version = 0;
  std::string name;
  bool applied = false;
  TimeMs applied_at = 0;
  bool known = true;      // false: applied by a newer binary
  bool modified = false;  // applied, but the compiled-in SQL differs from what was applied
};

struct MigrationStatus {
  std::string backend;                    // sqlite | postgres
  std::string database;                   // the file, or the server without credentials
  std::vector<MigrationInfo> migrations;  // by version
  std::size_t pending() const;
};

// Reads the state without changing anything (a missing SQLite file shows all pending).
// Blocking; throws std::runtime_error when the database cannot be reached.
MigrationStatus migration_status(const RecordsConfig& config);
// Applies what is pending under the cross-instance lock and returns the state after. Blocking;
// throws as make_records does.
MigrationStatus migrate(const RecordsConfig& config);
// The table `agentd migrate --status` prints.
void print_migration_status(const MigrationStatus& status, std::ostream& out);

}  // namespace agentd::store
