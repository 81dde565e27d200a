// Upstream MCP servers' sampling/createMessage answered through the AI routing layer: the
// request becomes an OpenAI-shaped chat completion for the configured model, the completion
// becomes a CreateMessageResult.
#pragma once

#include <cstdint>
#include <string>

#include "agentd/ai/gateway.hpp"
#include "agentd/mcp/config.hpp"
#include "agentd/mcp/multiplexer.hpp"

namespace agentd::api {

// CreateMessageRequest params → an OpenAI chat request for `model` (maxTokens capped at
// `max_tokens_cap`). Text, image and audio content, a system prompt, stop sequences,
// temperature, and (2025-11-25) tools with tool_use / tool_result blocks. Bad params:
// RpcError kInvalidParams naming the member.
mcp::RpcResult<nlohmann::json> sampling_to_chat(const nlohmann::json& params,
                                                const std::string& model,
                                                std::int64_t max_tokens_cap);

// chat.completion → CreateMessageResult (role assistant, content, model, stopReason).
nlohmann::json chat_to_sampling_result(const nlohmann::json& completion,
                                       const std::string& model_used);

// The model for a request: the first of the server's modelPreferences.hints the gateway can
// route, when `config.allow_hints`; else `config.model`.
std::string sampling_model(const nlohmann::json& params, const mcp::SamplingConfig& config,
                           const ai::Gateway& gateway);

// A sampler for the multiplexer. The gateway must outlive it. Calls are accounted to the
// client whose tool call caused them, or to "mcp:<server>" when agentd cannot tell.
mcp::Sampler make_sampler(ai::Gateway& gateway, mcp::SamplingConfig config);

}  // namespace agentd::api
