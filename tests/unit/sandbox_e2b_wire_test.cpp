// E2B wire pieces with strings in and out: Connect frames, process events, base64, error
// mapping, sandbox paths, timestamps.
#include <gtest/gtest.h>

#include "sandbox/e2b_wire.hpp"

namespace agentd::sandbox::e2b {
namespace {

TEST(E2bWire, FramesSplitAnywhereAreReassembled) {
  std::string wire = encode_frame(R"({"event":{"start":{"pid":7}}})") +
                     encode_frame(R"({"event":{"keepalive":{}}})") + encode_frame("{}", kEndStreamFlag);
  for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
    FrameDecoder d;
    auto frames = d.feed(wire.substr(0, cut));
    for (auto& f : d.feed(wire.substr(cut))) frames.push_back(std::move(f));
    ASSERT_EQ(frames.size(), 3u) << "cut at " << cut;
    EXPECT_EQ(frames[0].payload, R"({"event":{"start":{"pid":7}}})");
    EXPECT_FALSE(frames[1].end_stream());
    EXPECT_TRUE(frames[2].end_stream());
    EXPECT_FALSE(d.mid_frame());
  }
}

TEST(E2bWire, OversizedAndCompressedFramesAreErrors) {
  FrameDecoder small(10);
  EXPECT_TRUE(small.feed(encode_frame(std::string(11, 'x'))).empty());
  EXPECT_NE(small.error().find("over the limit"), std::string::npos);
  EXPECT_TRUE(small.feed(encode_frame("{}")).empty()) << "nothing after an error";
  FrameDecoder d;
  EXPECT_TRUE(d.feed(encode_frame("{}", kCompressedFlag)).empty());
  EXPECT_FALSE(d.error().empty());
}

TEST(E2bWire, Base64RoundTripsEveryLengthAndAcceptsUrlSafeUnpadded) {
  std::string bytes;
  for (int i = 0; i < 300; ++i) bytes += static_cast<char>(i * 37);
  for (std::size_t n = 0; n < 40; ++n) {
    auto back = base64_decode(base64_encode(bytes.substr(0, n)));
    ASSERT_TRUE(back);
    EXPECT_EQ(*back, bytes.substr(0, n));
  }
  EXPECT_EQ(base64_encode("hi\n"), "aGkK");
  EXPECT_EQ(*base64_decode("_-8"), "\xff\xef");
  EXPECT_FALSE(base64_decode("a*b"));
  EXPECT_FALSE(base64_decode("aGk=Kg"));
}

TEST(E2bWire, ProcessEvents) {
  auto start = parse_process_event(R"({"event":{"start":{"pid":42}}})");
  ASSERT_TRUE(start);
  EXPECT_EQ(start->kind, ProcessEvent::Kind::start);
  EXPECT_EQ(start->pid, 42);

  auto data = parse_process_event(R"({"event":{"data":{"stderr":"b29wcwo="}}})");
  ASSERT_TRUE(data);
  EXPECT_EQ(data->kind, ProcessEvent::Kind::data);
  EXPECT_EQ(data->stream, "stderr");
  EXPECT_EQ(data->data, "oops\n");

  // protojson omits a zero exitCode.
  auto end = parse_process_event(R"({"event":{"end":{"exited":true,"status":"exit status 0"}}})");
  ASSERT_TRUE(end);
  EXPECT_EQ(end->kind, ProcessEvent::Kind::end);
  EXPECT_EQ(end->exit_code, 0);
  EXPECT_TRUE(end->exited);

  auto killed = parse_process_event(
      R"({"event":{"end":{"exitCode":-1,"exited":true,"status":"signal: killed"}}})");
  EXPECT_EQ(killed->exit_code, -1);
  EXPECT_EQ(killed->status, "signal: killed");

  EXPECT_EQ(parse_process_event(R"({"event":{"keepalive":{}}})")->kind, ProcessEvent::Kind::keepalive);
  EXPECT_EQ(parse_process_event(R"({"event":{"novel":{}}})")->kind, ProcessEvent::Kind::unknown);
  EXPECT_FALSE(parse_process_event("not json"));
  EXPECT_FALSE(parse_process_event(R"({"event":{"data":{"stdout":"!!"}}})"));
}

TEST(E2bWire, EndStream) {
  EXPECT_FALSE(parse_end_stream("{}"));
  EXPECT_FALSE(parse_end_stream(R"({"metadata":{}})"));
  auto e = parse_end_stream(R"({"error":{"code":"not_found","message":"process 3 not found"}})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, Errc::not_found);
  EXPECT_NE(e->message.find("process 3 not found"), std::string::npos);
  EXPECT_EQ(parse_end_stream(R"({"error":{"code":"deadline_exceeded"}})")->code, Errc::timeout);
  EXPECT_EQ(parse_end_stream("garbage")->code, Errc::upstream);
}

TEST(E2bWire, HttpErrors) {
  net::Headers h;
  EXPECT_EQ(error_from_http(401, h, R"({"code":401,"message":"Invalid API key"})", "x").code,
            Errc::unauthorized);
  EXPECT_EQ(error_from_http(403, h, "", "x").code, Errc::forbidden);
  EXPECT_EQ(error_from_http(404, h, "", "x").code, Errc::not_found);
  EXPECT_EQ(error_from_http(502, h, R"({"code":502,"message":"The sandbox was not found"})", "x").code,
            Errc::unavailable);
  EXPECT_EQ(error_from_http(500, h, "", "x").code, Errc::unavailable);
  // A Connect code refines a 4xx.
  EXPECT_EQ(error_from_http(409, h, R"({"code":"already_exists","message":"m"})", "x").code,
            Errc::conflict);
  EXPECT_EQ(error_from_http(400, h, R"({"code":"invalid_argument","message":"m"})", "x").code,
            Errc::bad_request);
  h.set("Retry-After", "7");
  auto rl = error_from_http(429, h, R"({"code":429,"message":"slow down"})", "e2b create");
  EXPECT_EQ(rl.code, Errc::rate_limited);
  ASSERT_TRUE(rl.retry_after);
  EXPECT_EQ(*rl.retry_after, std::chrono::seconds(7));
  EXPECT_NE(rl.message.find("slow down"), std::string::npos);
}

TEST(E2bWire, SandboxPaths) {
  EXPECT_EQ(*sandbox_path("a/b.txt", "/home/user"), "/home/user/a/b.txt");
  EXPECT_EQ(*sandbox_path("", "/home/user"), "/home/user");
  EXPECT_EQ(*sandbox_path("/tmp//x/./y", "/home/user"), "/tmp/x/y");
  EXPECT_EQ(*sandbox_path("../user2/f", "/home/user"), "/home/user2/f");
  EXPECT_EQ(*sandbox_path("/a/../b", "/home/user"), "/b");
  EXPECT_FALSE(sandbox_path("../../../etc/passwd", "/home/user"));
  EXPECT_FALSE(sandbox_path("/..", "/home/user"));
  EXPECT_EQ(url_encode("/home/user/a b&c.txt"), "/home/user/a%20b%26c.txt");
}

TEST(E2bWire, Rfc3339) {
  EXPECT_EQ(*parse_rfc3339("1970-01-01T00:00:01Z"), 1000);
  EXPECT_EQ(*parse_rfc3339("2025-01-02T03:04:05.678Z"), 1735787045678);
  EXPECT_EQ(*parse_rfc3339("2025-01-02T03:04:05.678901234Z"), 1735787045678);
  EXPECT_EQ(*parse_rfc3339("2025-01-02T05:04:05+02:00"), 1735787045000);
  EXPECT_FALSE(parse_rfc3339("2025-01-02 03:04:05"));
  EXPECT_FALSE(parse_rfc3339("yesterday"));
}

}  // namespace
}  // namespace agentd::sandbox::e2b
