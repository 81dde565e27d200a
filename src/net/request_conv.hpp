// Private: turning a Beast request into net::Request (shared by the server and the fuzzer).
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <optional>
#include <string>

#include "agentd/net/http.hpp"

namespace agentd::net::detail {

using BeastRequest = boost::beast::http::request<boost::beast::http::string_body>;

// Fills `out` from `msg`; returns an error message (for a 400) when the request is unusable.
std::optional<std::string> fill_request(Request& out, BeastRequest&& msg);

// Parses one complete request from bytes with the server's limits (for fuzzing and tests).
// Returns nullopt for anything the server would answer with 4xx.
std::optional<Request> parse_request_bytes(std::string_view bytes, std::uint64_t max_header,
                                           std::uint64_t max_body);

bool valid_request_id(std::string_view id) noexcept;

}  // namespace agentd::net::detail
