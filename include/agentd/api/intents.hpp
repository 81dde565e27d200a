// The intents API over the planner: POST /v1/intents (JSON or an event stream),
// GET /v1/intents/{id}, GET /v1/intents/{id}/events (resumable with Last-Event-ID),
// POST /v1/intents/{id}/cancel, POST /v1/intents/{id}/input, GET /v1/artifacts/{id}.
#pragma once

#include "agentd/agent/engine.hpp"
#include "agentd/api/api.hpp"

namespace agentd::api {

// `engine` must outlive the routes. Starting an intent needs `agents:<name>` in the client's
// scopes; every other route serves only the client that started the intent.
void add_intent_routes(Api& api, agent::Engine& engine);

// The HTTP response for a planner error: `{"error":{message,type,code,param}}`.
net::Response agent_error_response(const agent::Error& e);

}  // namespace agentd::api
