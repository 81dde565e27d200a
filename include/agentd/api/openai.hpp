// The OpenAI-compatible face of the AI routing layer: /v1/chat/completions, /v1/models,
// /v1/embeddings, /v1/audio/speech, /v1/audio/transcriptions.
#pragma once

#include "agentd/agent/engine.hpp"
#include "agentd/ai/gateway.hpp"
#include "agentd/api/api.hpp"

namespace agentd::api {

// Registers the routes on `api`; `gateway` (and `engine`) must outlive it. Each call needs the
// client to hold `models:<requested model>`, or `agents:<name>` when the model names an agent
// or workflow of `engine` (null: no agents on this face).
void add_openai_routes(Api& api, ai::Gateway& gateway, agent::Engine* engine = nullptr);

// The HTTP response for an AI error: OpenAI's error body, its status, Retry-After when known.
net::Response ai_error_response(const ai::Error& e);

}  // namespace agentd::api
