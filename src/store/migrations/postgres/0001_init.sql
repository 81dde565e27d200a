// PostgreSQL migration 0001: the durable records. Compiled into agentd by migrations.cpp: the
// R"sql( and )sql" lines make it a C++ raw string literal; everything between them is plain SQL.
R"sql(
-- Times are UTC milliseconds since the Unix epoch (64-bit integers) in both dialects, ids are text
-- chosen by the writer (so a retried insert is recognised), JSON is json: stored as written,
-- read whole, never queried inside, and unlike jsonb it accepts escaped NUL characters,
-- which tool output may hold.

CREATE TABLE intents (
  id          text NOT NULL PRIMARY KEY,
  client      text NOT NULL,
  agent       text NOT NULL,
  session_id  text,
  status      text NOT NULL CHECK (status IN ('accepted', 'running', 'waiting_input',
                                              'completed', 'failed', 'cancelled')),
  input       json NOT NULL,
  result      json,
  error       text,
  owner       text,
  lease_until bigint,
  created_at  bigint NOT NULL,
  updated_at  bigint NOT NULL
);
CREATE INDEX intents_unfinished ON intents (created_at, id)
  WHERE status NOT IN ('completed', 'failed', 'cancelled');
CREATE INDEX intents_client ON intents (client, created_at);
CREATE INDEX intents_session ON intents (session_id, created_at) WHERE session_id IS NOT NULL;

CREATE TABLE intent_steps (
  intent_id  text NOT NULL REFERENCES intents (id) ON DELETE CASCADE,
  seq        bigint NOT NULL CHECK (seq >= 1),
  kind       text NOT NULL,
  data       json NOT NULL,
  created_at bigint NOT NULL,
  PRIMARY KEY (intent_id, seq)
);

CREATE TABLE sessions (
  id         text NOT NULL PRIMARY KEY,
  client     text NOT NULL,
  next_seq   bigint NOT NULL,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL
);

CREATE TABLE session_messages (
  session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
  seq        bigint NOT NULL,
  id         text NOT NULL UNIQUE,
  role       text NOT NULL,
  content    json NOT NULL,
  tokens     bigint NOT NULL CHECK (tokens >= 0),
  intent_id  text,
  created_at bigint NOT NULL,
  PRIMARY KEY (session_id, seq)
);

CREATE TABLE artifacts (
  id         text NOT NULL PRIMARY KEY,
  intent_id  text REFERENCES intents (id) ON DELETE SET NULL,
  kind       text NOT NULL,
  mime       text NOT NULL,
  sha256     text NOT NULL CHECK (length(sha256) = 64),
  size       bigint NOT NULL CHECK (size >= 0),
  name       text NOT NULL,
  created_at bigint NOT NULL
);
CREATE INDEX artifacts_intent ON artifacts (intent_id, created_at);
CREATE INDEX artifacts_sha256 ON artifacts (sha256);

CREATE TABLE intent_artifacts (
  intent_id   text NOT NULL REFERENCES intents (id) ON DELETE CASCADE,
  artifact_id text NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
  relation    text NOT NULL,
  created_at  bigint NOT NULL,
  PRIMARY KEY (intent_id, artifact_id, relation)
);
CREATE INDEX intent_artifacts_artifact ON intent_artifacts (artifact_id);

CREATE TABLE artifact_links (
  from_id    text NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
  to_id      text NOT NULL REFERENCES artifacts (id) ON DELETE CASCADE,
  relation   text NOT NULL,
  created_at bigint NOT NULL,
  PRIMARY KEY (from_id, to_id, relation),
  CHECK (from_id <> to_id)
);
CREATE INDEX artifact_links_to ON artifact_links (to_id);

CREATE TABLE spend_ledger (
  id             text NOT NULL PRIMARY KEY,
  client         text NOT NULL,
  provider       text NOT NULL,
  model          text NOT NULL,
  day            text NOT NULL,
  tokens_in      bigint NOT NULL CHECK (tokens_in >= 0),
  tokens_out     bigint NOT NULL CHECK (tokens_out >= 0),
  cost_micro_usd bigint NOT NULL CHECK (cost_micro_usd >= 0),
  intent_id      text,
  at             bigint NOT NULL
);
CREATE INDEX spend_client_day ON spend_ledger (client, day);
CREATE INDEX spend_day_model ON spend_ledger (day, provider, model);

CREATE TABLE audit_log (
  id          text NOT NULL PRIMARY KEY,
  at          bigint NOT NULL,
  client      text NOT NULL,
  server      text NOT NULL,
  tool        text NOT NULL,
  args_sha256 text NOT NULL,
  outcome     text NOT NULL,
  duration_us bigint NOT NULL CHECK (duration_us >= 0),
  request_id  text NOT NULL,
  intent_id   text
);
CREATE INDEX audit_client_at ON audit_log (client, at);
CREATE INDEX audit_at ON audit_log (at);
)sql"
