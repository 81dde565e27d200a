// One SAX pass over an OpenAI `chat.completion` or `chat.completion.chunk` as the upstream sent
// it: validates the JSON, records what the gateway reads (error, choices, usage, whether a chunk
// commits the answer) and where the top-level `model` value sits, so that `model` can be
// spliced into the original bytes instead of round-tripping them through a DOM.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace agentd::ai::detail {

struct OpenAiScan {
  static constexpr std::size_t npos = std::string_view::npos;

  bool json = false;       // the whole text is valid JSON
  bool object = false;     // ... and an object at the top
  // A shape the splice does not reproduce exactly (a top-level key of interest twice, a
  // `model` that is not a string, `choices` or `usage` of an odd type): use the DOM.
  bool needs_dom = false;
  bool error = false;          // a top-level `error` that is not null
  bool has_choices = false;    // a top-level `choices` member
  bool choices_array = false;  // ... that is an array
  std::size_t choices = 0;     // its elements
  bool has_usage = false;      // a top-level `usage` member that is not null (an object)
  std::size_t usage_begin = npos, usage_end = npos;  // the usage object's bytes
  std::size_t model_begin = npos, model_end = npos;  // the model string, quotes included
  std::size_t object_begin = npos;                   // just after the top-level '{'
  // Chunk facts, as the gateway's `meaningful` would find them: content, reasoning or a
  // refusal that is a non-empty string, a non-empty tool_calls array, a finish_reason that is
  // not null, or usage.
  bool meaningful = false;
  std::size_t content_bytes = 0;  // UTF-8 bytes of every choices[].delta.content string
};

OpenAiScan scan_openai(std::string_view text);

// `text` with its top-level `model` value replaced by `quoted` (a JSON string literal, from
// json_quote), or inserted as the first member when absent. `scan` must come from
// scan_openai(text) with `object` set and `needs_dom` clear.
std::string splice_model(std::string_view text, const OpenAiScan& scan, std::string_view quoted);

// `s` as a JSON string literal, quotes included (invalid UTF-8 replaced, as dump() does).
std::string json_quote(std::string_view s);

}  // namespace agentd::ai::detail
