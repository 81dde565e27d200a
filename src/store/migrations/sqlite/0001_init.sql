// SQLite migration 0001: the durable records. Compiled into agentd by migrations.cpp: the
// R"sql( and )sql" lines make it a C++ raw string literal; everything between them is plain SQL.
R"sql(
-- Times are UTC milliseconds since the Unix epoch (64-bit integers) in both dialects, ids are text
-- chosen by the writer (so a retried insert is recognised), JSON is text; tables are STRICT.

CREATE TABLE intents (
  id          TEXT NOT NULL PRIMARY KEY,
  client      TEXT NOT NULL,
  agent       TEXT NOT NULL,
  session_id  TEXT,
  status      TEXT NOT NULL CHECK (status IN ('accepted', 'running', 'waiting_input',
                                              'completed', 'failed', 'cancelled')),
  input       TEXT NOT NULL,
  result      TEXT,
  error       TEXT,
  owner       TEXT,
  lease_until INTEGER,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX intents_unfinished ON intents (created_at, id)
  WHERE status NOT IN ('completed', 'failed', 'cancelled');
CREATE INDEX intents_client ON intents (client, created_at);
CREATE INDEX intents_session ON intents (session_id, created_at) WHERE session_id IS NOT NULL;

CREATE TABLE intent_steps (
  intent_id  TEXT NOT NULL REFERENCES intents (id) ON DELETE CASCADE,
  seq        INTEGER NOT NULL CHECK (seq >= 1),
  kind       TEXT NOT NULL,
  data       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (intent_id, seq)
) STRICT;

CREATE TABLE sessions (
  id         TEXT NOT NULL PRIMARY KEY,
  client     TEXT NOT NULL,
  next_seq   INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE session_messages (
  session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  seq        INTEGER NOT NULL,
  id         TEXT NOT NULL UNIQUE,
  role       TEXT NOT NULL,
  content    TEXT NOT NULL,
  tokens     INTEGER NOT NULL CHECK (tokens >= 0),
  intent_id  TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (session_id, seq)
) STRICT;

CREATE TABLE artifacts (
  id         TEXT NOT NULL PRIMARY KEY,
  intent_id  TEXT REFERENCES intents (id) ON DELETE SET NULL,
  kind       TEXT NOT NULL,
  mime       TEXT NOT NULL,
  sha256     TEXT NOT NULL CHECK (length(sha256) = 64),
  size       INTEGER NOT NULL CHECK (size >= 0),
  name       TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX artifacts_intent ON artifacts (intent_id, created_at);
CREATE INDEX artifacts_sha256 ON artifacts (sha256);

CREATE TABLE intent_artifacts (
  intent_id   TEXT NOT NULL REFERENCES intents (id) ON DELETE CASCADE,
  artifact_id TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
  relation    TEXT NOT NULL,
  created_at  INTEGER NOT NULL,
  PRIMARY KEY (intent_id, artifact_id, relation)
) STRICT;
CREATE INDEX intent_artifacts_artifact ON intent_artifacts (artifact_id);

CREATE TABLE artifact_links (
  from_id    TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
  to_id      TEXT NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
  relation   TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (from_id, to_id, relation),
  CHECK (from_id <> to_id)
) STRICT;
CREATE INDEX artifact_links_to ON artifact_links (to_id);

CREATE TABLE spend_ledger (
  id             TEXT NOT NULL PRIMARY KEY,
  client         TEXT NOT NULL,
  provider       TEXT NOT NULL,
  model          TEXT NOT NULL,
  day            TEXT NOT NULL,
  tokens_in      INTEGER NOT NULL CHECK (tokens_in >= 0),
  tokens_out     INTEGER NOT NULL CHECK (tokens_out >= 0),
  cost_micro_usd INTEGER NOT NULL CHECK (cost_micro_usd >= 0),
  intent_id      TEXT,
  at             INTEGER NOT NULL
) STRICT;
CREATE INDEX spend_client_day ON spend_ledger (client, day);
CREATE INDEX spend_day_model ON spend_ledger (day, provider, model);

CREATE TABLE audit_log (
  id          TEXT NOT NULL PRIMARY KEY,
  at          INTEGER NOT NULL,
  client      TEXT NOT NULL,
  server      TEXT NOT NULL,
  tool        TEXT NOT NULL,
  args_sha256 TEXT NOT NULL,
  outcome     TEXT NOT NULL,
  duration_us INTEGER NOT NULL CHECK (duration_us >= 0),
  request_id  TEXT NOT NULL,
  intent_id   TEXT
) STRICT;
CREATE INDEX audit_client_at ON audit_log (client, at);
CREATE INDEX audit_at ON audit_log (at);
)sql"
