// The dialect factory, Retry-After parsing, and the helpers every dialect shares.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <ctime>
#include <random>
#include <utility>
#include <vector>

#include "dialect_util.hpp"

namespace agentd::ai {

std::unique_ptr<Dialect> make_dialect(const ProviderConfig& provider) {
  switch (provider.kind) {
    case ProviderKind::anthropic:
      return detail::make_anthropic_dialect(provider);
    case ProviderKind::gemini:
      return detail::make_gemini_dialect(provider);
    case ProviderKind::openai:
      break;
  }
  return detail::make_openai_dialect(provider);
}

std::optional<std::chrono::milliseconds> parse_retry_after(const net::Headers& headers) {
  return detail::parse_retry_after_at(headers, std::chrono::system_clock::now());
}

bool meaningful_chunk(const json& chunk) {
  if (chunk.contains("usage") && !chunk["usage"].is_null()) return true;
  auto choices = chunk.find("choices");
  if (choices == chunk.end() || !choices->is_array()) return false;
  for (const auto& c : *choices) {
    if (c.contains("finish_reason") && !c["finish_reason"].is_null()) return true;
    auto d = c.find("delta");
    if (d == c.end() || !d->is_object()) continue;
    for (const char* key : {"content", "reasoning_content", "refusal"}) {
      auto v = d->find(key);
      if (v != d->end() && v->is_string() && !v->get_ref<const std::string&>().empty()) return true;
    }
    auto tc = d->find("tool_calls");
    if (tc != d->end() && tc->is_array() && !tc->empty()) return true;
  }
  return false;
}

bool is_usage_chunk(const json& chunk) {
  auto c = chunk.find("choices");
  return chunk.contains("usage") && !chunk["usage"].is_null() &&
         (c == chunk.end() || (c->is_array() && c->empty()));
}

ChunkText ChunkText::from(json chunk) {
  ChunkText c;
  c.meaningful = meaningful_chunk(chunk);
  if (auto choices = chunk.find("choices"); choices != chunk.end()) {
    for (const auto& ch : *choices) {
      if (!ch.is_object()) continue;
      auto d = ch.find("delta");
      if (d == ch.end() || !d->is_object()) continue;
      auto v = d->find("content");
      if (v != d->end() && v->is_string()) {
        c.content_bytes += v->get_ref<const std::string&>().size();
      }
    }
  }
  if (is_usage_chunk(chunk)) {
    c.usage_only = true;
    c.usage = chunk["usage"];
  }
  c.doc = std::move(chunk);
  return c;
}

std::string ChunkText::take_text() {
  if (text.empty() && doc) text = detail::dump(*doc);
  return std::move(text);
}

json ChunkText::take_doc() {
  if (doc) return std::move(*doc);
  return json::parse(text, nullptr, false);
}

Outcome<std::vector<ChunkText>> StreamTranslator::on_event_text(const net::SseEvent& event) {
  auto chunks = on_event(event);
  if (!chunks) return chunks.error();
  std::vector<ChunkText> out;
  out.reserve(chunks->size());
  for (auto& c : *chunks) out.push_back(ChunkText::from(std::move(c)));
  return out;
}

Outcome<ChatText> Dialect::chat_response_text(std::string_view body,
                                              const std::string& model) const {
  auto doc = chat_response(body, model);
  if (!doc) return doc.error();
  ChatText out;
  // Only an object is usage: anything else would make the accounting throw.
  if (auto u = doc->find("usage"); u != doc->end() && u->is_object()) out.usage = *u;
  out.body = detail::dump(*doc);
  return out;
}

namespace detail {
namespace {

using std::chrono::milliseconds;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// A non-negative decimal number ("3", "1.5"); nullopt for anything else.
std::optional<double> parse_number(std::string_view s) {
  s = trim(s);
  if (s.empty() || !(std::isdigit(static_cast<unsigned char>(s.front())))) return std::nullopt;
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

milliseconds to_ms(double ms) {
  // A day is plenty: anything longer is as good as "do not wait" for the caller.
  return milliseconds(static_cast<std::int64_t>(std::min(ms, 86'400'000.0) + 0.5));
}

std::string random_alnum(std::size_t n) {
  static constexpr std::string_view kChars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<std::size_t> pick(0, kChars.size() - 1);
  std::string out(n, ' ');
  for (auto& c : out) c = kChars[pick(rng)];
  return out;
}

int month_number(std::string_view name) {
  static constexpr std::string_view kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                                 "jul", "aug", "sep", "oct", "nov", "dec"};
  auto l = lower(name);
  for (int i = 0; i < 12; ++i) {
    if (l == kMonths[i]) return i + 1;
  }
  return 0;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

const json* member(const json& j, std::string_view key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

const json& or_null(const json* j) {
  static const json kNull;
  return j != nullptr ? *j : kNull;
}

std::optional<std::string> string_at(const json& j, std::string_view key) {
  const json* v = member(j, key);
  if (v == nullptr || !v->is_string()) return std::nullopt;
  return v->get<std::string>();
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::optional<json> parse_json(std::string_view body) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

std::string index_path(std::string_view base, std::size_t i) {
  return std::string(base) + "[" + std::to_string(i) + "]";
}

Error::Kind kind_for_status(int status) {
  switch (status) {
    case 401:
    case 402:  // payment required (OpenRouter credits): another target may still answer
    case 403:
      return Error::Kind::auth;
    case 404:
      return Error::Kind::not_found;
    case 408:
    case 504:
      return Error::Kind::timeout;
    case 429:
      return Error::Kind::rate_limited;
    case 503:
    case 529:
      return Error::Kind::overloaded;
    default:
      if (status >= 500) return Error::Kind::server;
      if (status >= 400) return Error::Kind::bad_request;
      return Error::Kind::connection;  // 1xx/3xx where an answer was expected
  }
}

Error upstream_status_error(int status, const net::Headers& headers, std::string message,
                            std::string_view body) {
  Error e;
  e.status = status;
  e.kind = kind_for_status(status);
  e.retry_after = parse_retry_after(headers);
  if (message.empty()) {
    message = "upstream answered HTTP " + std::to_string(status);
    auto snippet = trim(body.substr(0, 200));
    if (!snippet.empty()) message += ": " + std::string(snippet);
  }
  e.message = std::move(message);
  // A status outside 4xx/5xx would confuse clients; the failure is ours to report as 502.
  if (status < 400 || status > 599) e.status = 502;
  return e;
}

bool mentions_context_window(std::string_view message) {
  static constexpr std::string_view kPhrases[] = {
      "maximum context length", "context window",       "context length",
      "too many tokens",        "prompt is too long",   "exceeds the maximum number of tokens",
      "input token count",      "reduce the length of", "context_length_exceeded",
      "context limit"};
  auto l = lower(message);
  return std::any_of(std::begin(kPhrases), std::end(kPhrases),
                     [&](std::string_view p) { return l.find(p) != std::string::npos; });
}

void mark_context_window(Error& e) {
  e.kind = Error::Kind::context_window;
  e.code = "context_length_exceeded";
  if (e.type.empty() && e.status == 400) e.type = "invalid_request_error";
}

Error malformed_upstream(std::string what) {
  Error e;
  e.status = 502;
  e.kind = Error::Kind::connection;
  e.code = "upstream_malformed";
  e.message = "the upstream answered with something unexpected: " + std::move(what);
  return e;
}

std::string join_url(std::string_view base, std::string_view path) {
  while (!base.empty() && base.back() == '/') base.remove_suffix(1);
  std::string out(base);
  if (!path.empty() && path.front() != '/') out += '/';
  out += path;
  return out;
}

net::Headers base_headers(const ProviderConfig& provider, bool stream) {
  net::Headers h;
  h.set("content-type", "application/json");
  h.set("accept", stream ? "text/event-stream" : "application/json");
  add_auth(h, provider);
  for (const auto& x : provider.headers) h.set(x.name, x.value);
  return h;
}

std::optional<Outcome<DataUrl>> parse_data_url(std::string_view url, const std::string& param) {
  if (url.size() < 5 || lower(url.substr(0, 5)) != "data:") return std::nullopt;
  auto comma = url.find(',');
  if (comma == std::string_view::npos) {
    return Outcome<DataUrl>(Error::bad_request(param + " is a data: URL without a comma", param));
  }
  auto header = url.substr(5, comma - 5);
  std::vector<std::string_view> params;
  for (std::size_t start = 0;;) {
    auto semi = header.find(';', start);
    params.push_back(trim(header.substr(start, semi - start)));
    if (semi == std::string_view::npos) break;
    start = semi + 1;
  }
  bool base64 = std::any_of(params.begin() + 1, params.end(),
                            [](std::string_view p) { return lower(p) == "base64"; });
  if (!base64) {
    return Outcome<DataUrl>(
        Error::bad_request(param + " must be a base64 data: URL (data:<type>;base64,...)", param));
  }
  if (params.front().empty() || params.front().find('/') == std::string_view::npos) {
    return Outcome<DataUrl>(Error::bad_request(
        param + " is a data: URL without a media type (data:image/png;base64,...)", param));
  }
  return Outcome<DataUrl>(DataUrl{lower(params.front()), std::string(trim(url.substr(comma + 1)))});
}

bool is_http_url(std::string_view url) {
  auto l = lower(url.substr(0, 8));
  return (l.starts_with("http://") && url.size() > 7) ||
         (l.starts_with("https://") && url.size() > 8);
}

Outcome<json> parse_arguments(const json& arguments, const std::string& param) {
  if (arguments.is_null()) return json::object();
  if (arguments.is_object()) return arguments;
  if (!arguments.is_string()) {
    return Error::bad_request(param + " must be a string holding a JSON object", param);
  }
  auto text = trim(arguments.get_ref<const std::string&>());
  if (text.empty()) return json::object();
  auto parsed = parse_json(text);
  if (!parsed) return Error::bad_request(param + " is not valid JSON", param);
  if (!parsed->is_object()) return Error::bad_request(param + " must be a JSON object", param);
  return std::move(*parsed);
}

std::string new_tool_call_id() { return "call_" + random_alnum(24); }
std::string new_completion_id() { return "chatcmpl-" + random_alnum(24); }

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

json make_usage(std::int64_t prompt, std::int64_t completion, std::optional<std::int64_t> cached) {
  json u = {{"prompt_tokens", prompt},
            {"completion_tokens", completion},
            {"total_tokens", prompt + completion}};
  if (cached) u["prompt_tokens_details"] = {{"cached_tokens", *cached}};
  return u;
}

std::optional<std::chrono::system_clock::time_point> parse_http_date(std::string_view s) {
  // Tokens of the three forms RFC 9110 allows:
  //   Sun, 06 Nov 1994 08:49:37 GMT | Sunday, 06-Nov-94 08:49:37 GMT | Sun Nov  6 08:49:37 1994
  // In each, the first number is the day and the second the year.
  std::vector<std::string_view> tokens;
  for (std::size_t i = 0; i < s.size();) {
    if (s[i] == ' ' || s[i] == ',' || s[i] == '-' || s[i] == '\t') {
      ++i;
      continue;
    }
    auto j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != ',' && s[j] != '-' && s[j] != '\t') ++j;
    tokens.push_back(s.substr(i, j - i));
    i = j;
  }
  int month = 0;
  std::vector<int> numbers;
  std::optional<std::string_view> clock;
  for (auto t : tokens) {
    if (t.find(':') != std::string_view::npos) {
      clock = t;
    } else if (all_digits(t) && t.size() <= 4) {
      int v = 0;
      std::from_chars(t.data(), t.data() + t.size(), v);
      numbers.push_back(v);
    } else if (int m = month_number(t); m != 0) {
      month = m;
    }
  }
  if (month == 0 || numbers.size() != 2 || !clock || clock->size() != 8) return std::nullopt;
  int day = numbers[0];
  int year = numbers[1];
  if (year < 100) year += year >= 70 ? 1900 : 2000;
  auto c = *clock;
  if (c[2] != ':' || c[5] != ':' || !all_digits(c.substr(0, 2)) || !all_digits(c.substr(3, 2)) ||
      !all_digits(c.substr(6, 2))) {
    return std::nullopt;
  }
  int hh = (c[0] - '0') * 10 + (c[1] - '0');
  int mm = (c[3] - '0') * 10 + (c[4] - '0');
  int ss = (c[6] - '0') * 10 + (c[7] - '0');
  if (hh > 23 || mm > 59 || ss > 60) return std::nullopt;
  std::chrono::year_month_day ymd{std::chrono::year(year),
                                  std::chrono::month(static_cast<unsigned>(month)),
                                  std::chrono::day(static_cast<unsigned>(day))};
  if (!ymd.ok()) return std::nullopt;
  return std::chrono::sys_days(ymd) + std::chrono::hours(hh) + std::chrono::minutes(mm) +
         std::chrono::seconds(ss);
}

std::optional<milliseconds> parse_duration(std::string_view s) {
  s = trim(s);
  if (s == "0") return milliseconds(0);
  double total_ms = 0;
  bool any = false;
  while (!s.empty()) {
    std::size_t n = 0;
    while (n < s.size() && (std::isdigit(static_cast<unsigned char>(s[n])) || s[n] == '.')) ++n;
    if (n == 0) return std::nullopt;
    double v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + n, v);
    if (ec != std::errc() || end != s.data() + n) return std::nullopt;
    s.remove_prefix(n);
    // Longer units first: "ms" before "m".
    static constexpr std::pair<std::string_view, double> kUnits[] = {
        {"ms", 1},        {"us", 1e-3},  {"\xC2\xB5s", 1e-3}, {"ns", 1e-6},
        {"h", 3'600'000}, {"m", 60'000}, {"s", 1000}};
    double scale = 0;
    for (const auto& [unit, factor] : kUnits) {
      if (s.starts_with(unit)) {
        scale = factor;
        s.remove_prefix(unit.size());
        break;
      }
    }
    if (scale == 0) return std::nullopt;
    total_ms += v * scale;
    any = true;
  }
  if (!any) return std::nullopt;
  return to_ms(total_ms);
}

std::optional<milliseconds> parse_retry_after_at(const net::Headers& headers,
                                                 std::chrono::system_clock::time_point now) {
  // OpenAI's millisecond hint is the most precise, so it wins.
  if (auto ms = headers.get("retry-after-ms")) {
    if (auto v = parse_number(*ms)) return to_ms(*v);
  }
  if (auto ra = headers.get("retry-after")) {
    if (auto v = parse_number(*ra)) return to_ms(*v * 1000);
    if (auto when = parse_http_date(trim(*ra))) {
      auto delta = std::chrono::duration_cast<milliseconds>(*when - now);
      return std::max(delta, milliseconds(0));
    }
  }
  // x-ratelimit-reset-{requests,tokens}: the time until that limit refills. Prefer the limits
  // reported as exhausted; when no remaining counts are given, the longest reset.
  std::optional<milliseconds> exhausted, any;
  for (std::string_view which : {"requests", "tokens"}) {
    auto reset = headers.get("x-ratelimit-reset-" + std::string(which));
    if (!reset) continue;
    auto d = parse_duration(*reset);
    if (!d) continue;
    any = std::max(any.value_or(milliseconds(0)), *d);
    auto remaining = headers.get("x-ratelimit-remaining-" + std::string(which));
    if (remaining && trim(*remaining) == "0") {
      exhausted = std::max(exhausted.value_or(milliseconds(0)), *d);
    }
  }
  if (exhausted) return exhausted;
  bool counts_given = headers.get("x-ratelimit-remaining-requests").has_value() ||
                      headers.get("x-ratelimit-remaining-tokens").has_value();
  if (!counts_given) return any;
  return std::nullopt;
}

}  // namespace detail
}  // namespace agentd::ai
