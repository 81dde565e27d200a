// sampling/createMessage ⇄ OpenAI chat completions (api/mcp_sampling).
#include <gtest/gtest.h>

#include "agentd/api/mcp_sampling.hpp"

namespace agentd::api {
namespace {

using nlohmann::json;

TEST(McpSampling, TextImageAudioSystemPromptAndParametersMapToAChatRequest) {
  json params = {
      {"messages",
       {{{"role", "user"}, {"content", {{"type", "text"}, {"text", "hello"}}}},
        {{"role", "assistant"}, {"content", {{"type", "text"}, {"text", "hi"}}}},
        {{"role", "user"},
         {"content",
          {{{"type", "text"}, {"text", "what is this?"}},
           {{"type", "image"}, {"data", "AAAA"}, {"mimeType", "image/png"}},
           {{"type", "audio"}, {"data", "BBBB"}, {"mimeType", "audio/wav"}}}}}}},
      {"systemPrompt", "be brief"},
      {"maxTokens", 10000},
      {"temperature", 0.2},
      {"stopSequences", {"END"}},
      {"modelPreferences", {{"hints", {{{"name", "claude"}}}}}}};
  auto chat = sampling_to_chat(params, "fast", 4096);
  ASSERT_TRUE(chat) << chat.error().message;
  EXPECT_EQ((*chat)["model"], "fast");
  EXPECT_EQ((*chat)["max_tokens"], 4096);  // capped
  EXPECT_EQ((*chat)["temperature"], 0.2);
  EXPECT_EQ((*chat)["stop"], json({"END"}));
  const auto& m = (*chat)["messages"];
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[0], json({{"role", "system"}, {"content", "be brief"}}));
  EXPECT_EQ(m[1], json({{"role", "user"}, {"content", "hello"}}));
  EXPECT_EQ(m[2], json({{"role", "assistant"}, {"content", "hi"}}));
  EXPECT_EQ(m[3]["content"][1]["image_url"]["url"], "data:image/png;base64,AAAA");
  EXPECT_EQ(m[3]["content"][2]["input_audio"], json({{"data", "BBBB"}, {"format", "wav"}}));
}

TEST(McpSampling, ToolUseAndToolResultsMapToToolCallsAndToolMessages) {
  json params = {
      {"messages",
       {{{"role", "user"}, {"content", {{"type", "text"}, {"text", "weather?"}}}},
        {{"role", "assistant"},
         {"content",
          {{{"type", "tool_use"}, {"id", "c1"}, {"name", "get_weather"}, {"input", {{"city", "Oslo"}}}}}}},
        {{"role", "user"},
         {"content",
          {{{"type", "tool_result"},
            {"toolUseId", "c1"},
            {"content", {{{"type", "text"}, {"text", "-3C"}}}}}}}}}},
      {"maxTokens", 50},
      {"tools", {{{"name", "get_weather"}, {"inputSchema", {{"type", "object"}}}}}},
      {"toolChoice", {{"mode", "required"}}}};
  auto chat = sampling_to_chat(params, "m", 100);
  ASSERT_TRUE(chat) << chat.error().message;
  const auto& m = (*chat)["messages"];
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[1]["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(m[1]["tool_calls"][0]["function"]["arguments"].get<std::string>()),
            json({{"city", "Oslo"}}));
  EXPECT_EQ(m[2], json({{"role", "tool"}, {"tool_call_id", "c1"}, {"content", "-3C"}}));
  EXPECT_EQ((*chat)["tools"][0]["function"]["name"], "get_weather");
  EXPECT_EQ((*chat)["tool_choice"], "required");
}

TEST(McpSampling, BadParamsNameTheMember) {
  auto msg = [](const json& p) {
    auto r = sampling_to_chat(p, "m", 100);
    return r ? std::string("accepted") : r.error().message;
  };
  json text = {{"role", "user"}, {"content", {{"type", "text"}, {"text", "x"}}}};
  EXPECT_NE(msg({{"maxTokens", 5}}).find("messages"), std::string::npos);
  EXPECT_NE(msg({{"messages", {text}}}).find("maxTokens"), std::string::npos);
  EXPECT_NE(msg({{"messages", {text}}, {"maxTokens", 0}}).find("maxTokens"), std::string::npos);
  json system_role = {{"role", "system"}, {"content", {{"type", "text"}, {"text", "x"}}}};
  EXPECT_NE(msg({{"messages", {system_role}}, {"maxTokens", 5}}).find("messages[0].role"),
            std::string::npos);
  json ogg = {{"role", "user"},
              {"content", {{"type", "audio"}, {"data", "x"}, {"mimeType", "audio/ogg"}}}};
  EXPECT_NE(msg({{"messages", {ogg}}, {"maxTokens", 5}}).find("audio/ogg"), std::string::npos);
  EXPECT_NE(msg({{"messages", {text}}, {"maxTokens", 5}, {"temperature", "hot"}}).find("temperature"),
            std::string::npos);
  EXPECT_EQ(msg({{"messages", {text}}, {"maxTokens", 5}}), "accepted");
}

TEST(McpSampling, CompletionsMapBackWithStopReasons) {
  json done = {{"model", "gpt-4o-mini-2024"},
               {"choices", {{{"message", {{"role", "assistant"}, {"content", "42"}}},
                             {"finish_reason", "stop"}}}}};
  auto r = chat_to_sampling_result(done, "gpt-4o-mini");
  EXPECT_EQ(r, json({{"role", "assistant"},
                     {"content", {{"type", "text"}, {"text", "42"}}},
                     {"model", "gpt-4o-mini"},
                     {"stopReason", "endTurn"}}));
  done["choices"][0]["finish_reason"] = "length";
  EXPECT_EQ(chat_to_sampling_result(done, "")["stopReason"], "maxTokens");
  EXPECT_EQ(chat_to_sampling_result(done, "")["model"], "gpt-4o-mini-2024");
  json tools = {{"choices",
                 {{{"message",
                    {{"role", "assistant"},
                     {"content", nullptr},
                     {"tool_calls",
                      {{{"id", "c9"},
                        {"type", "function"},
                        {"function", {{"name", "f"}, {"arguments", "{\"a\":1}"}}}}}}}},
                   {"finish_reason", "tool_calls"}}}}};
  auto t = chat_to_sampling_result(tools, "m");
  EXPECT_EQ(t["stopReason"], "toolUse");
  EXPECT_EQ(t["content"][0], json({{"type", "tool_use"}, {"id", "c9"}, {"name", "f"}, {"input", {{"a", 1}}}}));
}

}  // namespace
}  // namespace agentd::api
