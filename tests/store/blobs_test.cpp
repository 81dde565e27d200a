// The blob store on a real filesystem (a temp dir per test) with the in-process cache behind a
// counting wrapper: round trips, dedup, compression, limits, hostile ids and planted symlinks,
// the warm copy and its TTL classes, crash safety (a writer killed mid-write), concurrency.
#include "agentd/store/blobs.hpp"
#include "support/coro.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

namespace {

using namespace agentd::store;
using namespace std::chrono_literals;
using agentd::Errc;
using Clock = std::chrono::steady_clock;
namespace asio = boost::asio;
namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Helpers

// Runs `work` on `io` until it finishes; fails the test when it takes longer than `limit`.
void run(asio::io_context& io, asio::awaitable<void> work, std::chrono::milliseconds limit = 60s) {
  agentd::test::run_coroutine(io, std::move(work), limit);
}

using agentd::test::Group;

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::ostringstream out;
  for (unsigned int i = 0; i < len; ++i) {
    out << "0123456789abcdef"[md[i] >> 4] << "0123456789abcdef"[md[i] & 15];
  }
  return out.str();
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Text that deflates well, but not trivially (numbers and words vary).
std::string text_body(std::size_t n, unsigned seed = 1) {
  static const char* kWords[] = {"agent",  "intent", "step",    "artifact", "tool",
                                 "result", "model",  "session", "cache",    "blob"};
  std::mt19937 rng(seed);
  std::string s;
  while (s.size() < n) {
    s += kWords[rng() % 10];
    s += ' ';
    s += std::to_string(rng() % 1000);
    s += rng() % 8 == 0 ? '\n' : ' ';
  }
  s.resize(n);
  return s;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

// Every entry (any type) under `dir`, recursively, as paths relative to it.
std::set<std::string> tree(const fs::path& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       it != fs::recursive_directory_iterator(); ++it) {
    out.insert(fs::relative(it->path(), dir).string());
  }
  return out;
}

// The blob files only (not the fan-out dirs, not tmp/).
std::set<std::string> blob_files(const fs::path& blobs) {
  std::set<std::string> out;
  for (const auto& e : tree(blobs)) {
    if (e.size() == 65 && e[2] == '/') out.insert(e);
  }
  return out;
}

// The in-process cache, counting what the blobs ask of it.
class CountingCache final : public Cache {
 public:
  explicit CountingCache(Cache& inner) : inner_(inner) {}
  int gets = 0, hits = 0, sets = 0, dels = 0;
  std::string last_set_key;
  std::chrono::milliseconds last_set_ttl{-1};

  asio::awaitable<KvResult<std::optional<std::string>>> get(std::string key) override {
    ++gets;
    auto r = co_await inner_.get(std::move(key));
    if (r && *r) ++hits;
    co_return r;
  }
  asio::awaitable<KvResult<void>> set(std::string key, std::string value,
                                      std::chrono::milliseconds ttl) override {
    ++sets;
    last_set_key = key;
    last_set_ttl = ttl;
    co_return co_await inner_.set(std::move(key), std::move(value), ttl);
  }
  asio::awaitable<KvResult<bool>> del(std::string key) override {
    ++dels;
    co_return co_await inner_.del(std::move(key));
  }
  asio::awaitable<KvResult<bool>> compare_and_set(std::string key,
                                                  std::optional<std::string> expected,
                                                  std::string value,
                                                  std::chrono::milliseconds ttl) override {
    co_return co_await inner_.compare_and_set(std::move(key), std::move(expected), std::move(value),
                                              ttl);
  }
  asio::awaitable<KvResult<Take>> take(std::string key, std::int64_t amount, std::int64_t limit,
                                       std::chrono::milliseconds ttl) override {
    co_return co_await inner_.take(std::move(key), amount, limit, ttl);
  }
  asio::awaitable<KvResult<std::int64_t>> add(std::string key, std::int64_t amount,
                                              std::chrono::milliseconds ttl) override {
    co_return co_await inner_.add(std::move(key), amount, ttl);
  }
  asio::awaitable<KvResult<std::int64_t>> counter(std::string key) override {
    co_return co_await inner_.counter(std::move(key));
  }

 private:
  Cache& inner_;
};

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/agentd-blobs-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

class BlobsTest : public ::testing::Test {
 protected:
  void SetUp() override { open(); }

  // (Re)opens the store on the same data dir with `config_` (data_dir filled in).
  void open() {
    blobs_.reset();
    config_.data_dir = dir_.path().string();
    blobs_ = make_blobs(config_, cache_, pool_, &metrics_);
  }

  fs::path blobs_dir() const { return dir_.path() / "blobs"; }
  fs::path path_of(const std::string& id) const {
    return blobs_dir() / id.substr(0, 2) / id.substr(2);
  }
  double metric(const std::string& needle) const {
    std::istringstream in(metrics_.render());
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(needle + " ", 0) == 0) return std::stod(line.substr(needle.size() + 1));
    }
    return -1;
  }

  Blobs& blobs() { return *blobs_; }

  TempDir dir_;
  asio::io_context io_;
  agentd::core::BlockingPool pool_{2, 256};
  agentd::core::Registry metrics_;
  std::unique_ptr<Kv> kv_ = make_memory_kv(io_.get_executor(), KvConfig{});
  CountingCache cache_{kv_->cache()};
  BlobsConfig config_;
  std::unique_ptr<Blobs> blobs_;
};

// ---------------------------------------------------------------------------------------------
// Names and configuration (no I/O).

TEST(BlobIds, OnlySixtyFourLowercaseHex) {
  EXPECT_TRUE(valid_blob_id(std::string(64, 'a')));
  EXPECT_TRUE(valid_blob_id("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
  EXPECT_FALSE(valid_blob_id(""));
  EXPECT_FALSE(valid_blob_id(std::string(63, 'a')));
  EXPECT_FALSE(valid_blob_id(std::string(65, 'a')));
  EXPECT_FALSE(valid_blob_id("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"));
  EXPECT_FALSE(valid_blob_id("../" + std::string(61, 'a')));
  EXPECT_FALSE(valid_blob_id(std::string(31, 'a') + "/" + std::string(32, 'a')));
  EXPECT_FALSE(valid_blob_id(std::string(63, 'a') + "g"));
  EXPECT_FALSE(valid_blob_id(std::string(63, 'a') + std::string(1, '\0')));
}

TEST(BlobTtlNames, RoundTrip) {
  for (auto c : {BlobTtl::session, BlobTtl::artifact, BlobTtl::media, BlobTtl::temporary}) {
    EXPECT_EQ(parse_blob_ttl(to_string(c)), c);
  }
  EXPECT_FALSE(parse_blob_ttl("forever"));
}

TEST(BlobsConfigParse, DefaultsAndKeys) {
  auto empty = agentd::core::load_yaml_string("store:\n  data_dir: /d\n");
  agentd::core::ConfigNode top0(empty, "");
  auto d = parse_blobs_config(top0.required("store"));
  EXPECT_EQ(d.data_dir, "/d");
  EXPECT_EQ(d.max_size, 64u << 20);
  EXPECT_TRUE(d.compression);
  EXPECT_EQ(d.compress_min_size, 4096u);
  EXPECT_EQ(d.cache_max, 1u << 20);
  EXPECT_EQ(d.cache_ttl[0], 1h);
  EXPECT_EQ(d.cache_ttl[1], 24h);
  EXPECT_EQ(d.cache_ttl[2], 48h);
  EXPECT_EQ(d.cache_ttl[3], 5min);

  auto root = agentd::core::load_yaml_string(
      "store:\n  blob_max_size: 2MiB\n  blob_compression: false\n  blob_compress_min_size: 1KiB\n"
      "  blob_cache_max: 256KiB\n  blob_cache_ttl: {session: 10m, media: 2h, temporary: 0s}\n"
      "  redis: ''\n");
  agentd::core::ConfigNode top(root, "");
  auto store = top.required("store");
  auto c = parse_blobs_config(store);
  EXPECT_EQ(c.max_size, 2u << 20);
  EXPECT_FALSE(c.compression);
  EXPECT_EQ(c.compress_min_size, 1024u);
  EXPECT_EQ(c.cache_max, 256u << 10);
  EXPECT_EQ(c.cache_ttl[static_cast<int>(BlobTtl::session)], 10min);
  EXPECT_EQ(c.cache_ttl[static_cast<int>(BlobTtl::artifact)], 24h);
  EXPECT_EQ(c.cache_ttl[static_cast<int>(BlobTtl::media)], 2h);
  EXPECT_EQ(c.cache_ttl[static_cast<int>(BlobTtl::temporary)], 0ms);
  // Only its own keys: `redis` is left for its owner.
  EXPECT_THROW(store.finish(), agentd::ConfigError);

  auto unknown = agentd::core::load_yaml_string("store:\n  blob_cache_ttl: {forever: 1h}\n");
  agentd::core::ConfigNode top2(unknown, "");
  try {
    parse_blobs_config(top2.required("store"));
    ADD_FAILURE() << "accepted an unknown TTL class";
  } catch (const agentd::ConfigError& e) {
    EXPECT_EQ(e.path(), "store.blob_cache_ttl.forever");
  }
  auto zero = agentd::core::load_yaml_string("store:\n  blob_max_size: 0\n");
  agentd::core::ConfigNode top3(zero, "");
  try {
    parse_blobs_config(top3.required("store"));
    ADD_FAILURE() << "accepted blob_max_size 0";
  } catch (const agentd::ConfigError& e) {
    EXPECT_EQ(e.path(), "store.blob_max_size");
  }
  auto bad = agentd::core::load_yaml_string("store:\n  blob_cache_ttl: {media: soon}\n");
  agentd::core::ConfigNode top4(bad, "");
  EXPECT_THROW(parse_blobs_config(top4.required("store")), agentd::ConfigError);
}

// ---------------------------------------------------------------------------------------------
// Round trips and dedup.

asio::awaitable<void> round_trips(Blobs& b, fs::path blobs_dir) {
  // Binary with NULs and every byte value.
  std::string binary;
  for (int i = 0; i < 4096; ++i) binary += static_cast<char>(i % 256);
  binary += std::string(100, '\0');
  auto put = co_await b.put(binary, "application/octet-stream", BlobTtl::artifact);
  CO_ASSERT(put.has_value());
  EXPECT_EQ(put->sha256, sha256_hex(binary));
  EXPECT_EQ(put->size, binary.size());
  EXPECT_FALSE(put->compressed);
  EXPECT_EQ(put->stored_size, binary.size() + 16);
  auto path = blobs_dir / put->sha256.substr(0, 2) / put->sha256.substr(2);
  EXPECT_EQ(fs::file_size(path), put->stored_size);
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  auto got = co_await b.get(put->sha256);
  CO_ASSERT(got.has_value());
  EXPECT_EQ(*got, binary);

  // "abc": the FIPS 180-2 test vector names the file.
  auto abc = co_await b.put("abc", "text/plain", BlobTtl::session);
  CO_ASSERT(abc.has_value());
  EXPECT_EQ(abc->sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(fs::is_regular_file(
      blobs_dir / "ba" / "7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));

  // Empty.
  auto empty = co_await b.put("", "text/plain", BlobTtl::temporary);
  CO_ASSERT(empty.has_value());
  EXPECT_EQ(empty->sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(empty->size, 0u);
  auto got_empty = co_await b.get(empty->sha256);
  CO_ASSERT(got_empty.has_value());
  EXPECT_EQ(*got_empty, "");

  // Large: 6 MiB of random bytes (no warm copy: over blob_cache_max) and 12 MiB of text.
  std::string large = random_bytes(6 << 20, 7);
  auto big = co_await b.put(large, "image/png", BlobTtl::media);
  CO_ASSERT(big.has_value());
  EXPECT_EQ(big->size, large.size());
  auto got_big = co_await b.get(big->sha256);
  CO_ASSERT(got_big.has_value());
  EXPECT_TRUE(*got_big == large);
  std::string text = text_body(12 << 20);
  auto big_text = co_await b.put(text, "text/markdown; charset=utf-8", BlobTtl::artifact);
  CO_ASSERT(big_text.has_value());
  EXPECT_TRUE(big_text->compressed);
  EXPECT_LT(big_text->stored_size, text.size() / 2);
  auto got_text = co_await b.get(big_text->sha256);
  CO_ASSERT(got_text.has_value());
  EXPECT_TRUE(*got_text == text);

  // Exists and remove.
  auto there = co_await b.exists(abc->sha256);
  EXPECT_TRUE(there.has_value() && *there);
  auto removed = co_await b.remove(abc->sha256);
  EXPECT_TRUE(removed.has_value() && *removed);
  auto gone = co_await b.exists(abc->sha256);
  EXPECT_TRUE(gone.has_value() && !*gone);
  auto again = co_await b.remove(abc->sha256);
  EXPECT_TRUE(again.has_value() && !*again);
  auto missing = co_await b.get(abc->sha256);  // the warm copy went with it
  CO_ASSERT(!missing.has_value());
  EXPECT_EQ(missing.error().code, Errc::not_found);
  EXPECT_NE(missing.error().message.find(abc->sha256), std::string::npos);
  auto never = co_await b.get(std::string(64, '0'));
  CO_ASSERT(!never.has_value());
  EXPECT_EQ(never.error().code, Errc::not_found);
}

TEST_F(BlobsTest, RoundTrips) {
  run(io_, round_trips(blobs(), blobs_dir()));
  EXPECT_TRUE(tree(blobs_dir() / "tmp").empty()) << "temp files left behind";
}

asio::awaitable<void> dedup(Blobs& b, fs::path blobs_dir) {
  std::string body = random_bytes(100000, 3);
  auto first = co_await b.put(body, "application/octet-stream", BlobTtl::artifact);
  CO_ASSERT(first.has_value());
  auto path = blobs_dir / first->sha256.substr(0, 2) / first->sha256.substr(2);
  struct stat before {};
  CO_ASSERT(::stat(path.c_str(), &before) == 0);
  auto second = co_await b.put(body, "application/octet-stream", BlobTtl::artifact);
  CO_ASSERT(second.has_value());
  EXPECT_EQ(second->sha256, first->sha256);
  EXPECT_EQ(second->stored_size, first->stored_size);
  struct stat after {};
  CO_ASSERT(::stat(path.c_str(), &after) == 0);
  EXPECT_EQ(after.st_ino, before.st_ino) << "the second put replaced the file";
  EXPECT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
  EXPECT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
}

TEST_F(BlobsTest, SameContentIsStoredOnce) {
  run(io_, dedup(blobs(), blobs_dir()));
  EXPECT_EQ(blob_files(blobs_dir()).size(), 1u);
  // Bytes written to disk count the one file only.
  EXPECT_EQ(metric("agentd_store_blob_written_bytes_total"), 100000 + 16);
  EXPECT_EQ(metric("agentd_store_blob_calls_total{op=\"put\",outcome=\"ok\"}"), 2);
}

// ---------------------------------------------------------------------------------------------
// Compression.

struct CompressionCase {
  std::string body;
  std::string type;
  bool compressed;
};

asio::awaitable<void> compression(Blobs& b, fs::path blobs_dir,
                                  std::vector<CompressionCase> cases) {
  for (const auto& c : cases) {
    auto put = co_await b.put(c.body, c.type, BlobTtl::artifact);
    CO_ASSERT(put.has_value());
    EXPECT_EQ(put->compressed, c.compressed) << c.type << ", " << c.body.size() << " bytes";
    auto path = blobs_dir / put->sha256.substr(0, 2) / put->sha256.substr(2);
    auto file = read_file(path);
    EXPECT_EQ(file.size(), put->stored_size);
    CO_ASSERT(file.size() >= 16);
    EXPECT_EQ(file[4] & 1, c.compressed ? 1 : 0) << "the header's flag";
    if (c.compressed) {
      EXPECT_LT(put->stored_size, c.body.size());
      // Not the body in clear on disk.
      EXPECT_EQ(file.find(c.body.substr(0, 200)), std::string::npos);
    } else {
      EXPECT_EQ(file.substr(16), c.body);
    }
    auto got = co_await b.get(put->sha256);
    CO_ASSERT(got.has_value());
    EXPECT_TRUE(*got == c.body);
  }
}

TEST_F(BlobsTest, CompressesLargeTextOnlyWhenItPays) {
  config_.cache_max = 0;  // every get reads (and inflates) the file
  open();
  std::vector<CompressionCase> cases{
      {text_body(10000, 1), "text/plain", true},
      {text_body(10000, 2), "application/json; charset=utf-8", true},
      {text_body(10000, 3), "Application/Problem+JSON", true},
      {text_body(10000, 4), "image/svg+xml", true},
      {text_body(10000, 5), "text/x-python", true},
      {text_body(4096, 6), "text/html", true},    // at the threshold
      {text_body(4095, 7), "text/html", false},   // below it
      {text_body(10000, 8), "image/png", false},  // not text-like
      {text_body(10000, 9), "application/octet-stream", false},
      {text_body(10000, 10), "", false},
      {random_bytes(10000, 11), "text/plain", false},  // does not shrink
  };
  run(io_, compression(blobs(), blobs_dir(), cases));
}

TEST_F(BlobsTest, CompressionCanBeTurnedOff) {
  config_.compression = false;
  open();
  std::vector<CompressionCase> cases{{text_body(50000), "text/plain", false}};
  run(io_, compression(blobs(), blobs_dir(), cases));
}

asio::awaitable<void> corrupt_compressed(Blobs& b, fs::path blobs_dir) {
  std::string body = text_body(20000);
  auto put = co_await b.put(body, "text/plain", BlobTtl::artifact);
  CO_ASSERT(put.has_value() && put->compressed);
  auto path = blobs_dir / put->sha256.substr(0, 2) / put->sha256.substr(2);
  auto file = read_file(path);
  file[file.size() / 2] ^= 0x55;
  write_file(path, file);
  auto got = co_await b.get(put->sha256);
  CO_ASSERT(!got.has_value());
  EXPECT_EQ(got.error().code, Errc::internal);

  std::string plain = random_bytes(3000, 9);
  auto p2 = co_await b.put(plain, "application/octet-stream", BlobTtl::artifact);
  CO_ASSERT(p2.has_value());
  auto path2 = blobs_dir / p2->sha256.substr(0, 2) / p2->sha256.substr(2);
  auto f2 = read_file(path2);
  f2[100] ^= 1;
  write_file(path2, f2);
  auto got2 = co_await b.get(p2->sha256);
  CO_ASSERT(!got2.has_value());
  EXPECT_EQ(got2.error().code, Errc::internal);
  EXPECT_NE(got2.error().message.find("corrupt"), std::string::npos) << got2.error().message;

  // A header claiming a huge body is refused before anything is allocated.
  f2 = read_file(path2);
  f2[4] = 1;  // compressed
  for (int i = 8; i < 16; ++i) f2[i] = static_cast<char>(0x7f);
  write_file(path2, f2);
  auto got3 = co_await b.get(p2->sha256);
  CO_ASSERT(!got3.has_value());
  EXPECT_EQ(got3.error().code, Errc::internal);
}

TEST_F(BlobsTest, CorruptFilesAreDetected) {
  config_.cache_max = 0;
  open();
  run(io_, corrupt_compressed(blobs(), blobs_dir()));
}

// ---------------------------------------------------------------------------------------------
// Limits and hostile input.

asio::awaitable<void> size_limit(Blobs& b) {
  auto over = co_await b.put(std::string(1025, 'x'), "text/plain", BlobTtl::artifact);
  CO_ASSERT(!over.has_value());
  EXPECT_EQ(over.error().code, Errc::payload_too_large);
  EXPECT_NE(over.error().message.find("1025"), std::string::npos) << over.error().message;
  EXPECT_NE(over.error().message.find("1024"), std::string::npos) << over.error().message;
  EXPECT_NE(over.error().message.find("store.blob_max_size"), std::string::npos);
  auto at = co_await b.put(std::string(1024, 'x'), "text/plain", BlobTtl::artifact);
  EXPECT_TRUE(at.has_value());
}

TEST_F(BlobsTest, SizeLimit) {
  config_.max_size = 1024;
  open();
  run(io_, size_limit(blobs()));
  EXPECT_EQ(blob_files(blobs_dir()).size(), 1u);  // only the one at the limit
}

asio::awaitable<void> hostile_ids(Blobs& b, std::vector<std::string> ids) {
  for (const auto& id : ids) {
    auto g = co_await b.get(id);
    CO_ASSERT(!g.has_value());
    EXPECT_EQ(g.error().code, Errc::bad_request) << id;
    auto e = co_await b.exists(id);
    CO_ASSERT(!e.has_value());
    EXPECT_EQ(e.error().code, Errc::bad_request) << id;
    auto r = co_await b.remove(id);
    CO_ASSERT(!r.has_value());
    EXPECT_EQ(r.error().code, Errc::bad_request) << id;
  }
}

TEST_F(BlobsTest, HostileIdsAreBadRequests) {
  // Files a path-following store would reach: one next to the blobs dir, one in the fan-out.
  write_file(dir_.path() / "secret", "secret");
  fs::create_directories(blobs_dir() / "aa");
  write_file(blobs_dir() / "aa" / "x", "x");
  std::string upper = sha256_hex("abc");
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::vector<std::string> ids{
      "../../etc/passwd",
      "../secret",
      "aa/x",
      upper,
      sha256_hex("abc").substr(0, 63),
      sha256_hex("abc") + "0",
      "aa/" + std::string(61, 'a'),
      "aa" + std::string(30, 'a') + "/../" + std::string(28, 'a'),
      "",
      std::string(62, 'a') + "\n\n",
      "/" + std::string(63, 'a'),
  };
  run(io_, hostile_ids(blobs(), ids));
  EXPECT_EQ(read_file(dir_.path() / "secret"), "secret");
  EXPECT_EQ(read_file(blobs_dir() / "aa" / "x"), "x");
}

asio::awaitable<void> planted_symlinks(Blobs& b, fs::path root, fs::path blobs_dir) {
  std::string body = "the real body";
  std::string id = sha256_hex(body);
  auto path = blobs_dir / id.substr(0, 2) / id.substr(2);
  fs::create_directories(path.parent_path());
  write_file(root / "outside", "outside file");
  fs::create_symlink(root / "outside", path);

  auto g = co_await b.get(id);
  CO_ASSERT(!g.has_value());
  EXPECT_EQ(g.error().code, Errc::internal);
  EXPECT_NE(g.error().message.find("symlink"), std::string::npos) << g.error().message;
  auto e = co_await b.exists(id);
  CO_ASSERT(e.has_value());
  EXPECT_FALSE(*e);

  // A put replaces the link with the file; the link's target is untouched.
  auto p = co_await b.put(body, "text/plain", BlobTtl::artifact);
  CO_ASSERT(p.has_value());
  EXPECT_FALSE(fs::is_symlink(path));
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(path)));
  EXPECT_EQ(read_file(root / "outside"), "outside file");
  auto g2 = co_await b.get(id);
  CO_ASSERT(g2.has_value());
  EXPECT_EQ(*g2, body);

  // remove() deletes a planted link, never its target.
  fs::remove(path);
  fs::create_symlink(root / "outside", path);
  auto r = co_await b.remove(id);
  CO_ASSERT(r.has_value());
  EXPECT_TRUE(*r);
  EXPECT_FALSE(fs::exists(fs::symlink_status(path)));
  EXPECT_EQ(read_file(root / "outside"), "outside file");

  // A fan-out directory that is a symlink is not entered, for reads or writes.
  std::string other = "another body";
  std::string other_id = sha256_hex(other);
  fs::create_directories(root / "elsewhere");
  fs::create_symlink(root / "elsewhere", blobs_dir / other_id.substr(0, 2));
  write_file(root / "elsewhere" / other_id.substr(2), other);  // a valid-looking body there
  auto p3 = co_await b.put(other, "text/plain", BlobTtl::artifact);
  CO_ASSERT(!p3.has_value());
  EXPECT_EQ(p3.error().code, Errc::internal);
  auto g3 = co_await b.get(other_id);
  CO_ASSERT(!g3.has_value());
  EXPECT_EQ(g3.error().code, Errc::internal);
  auto r3 = co_await b.remove(other_id);
  CO_ASSERT(!r3.has_value());
  EXPECT_EQ(read_file(root / "elsewhere" / other_id.substr(2)), other);
  EXPECT_EQ(tree(root / "elsewhere").size(), 1u);

  // A FIFO at a blob's name does not hang the reader.
  std::string third = "third body";
  std::string third_id = sha256_hex(third);
  auto fifo = blobs_dir / third_id.substr(0, 2) / third_id.substr(2);
  fs::create_directories(fifo.parent_path());
  CO_ASSERT(::mkfifo(fifo.c_str(), 0600) == 0);
  auto g4 = co_await b.get(third_id);
  CO_ASSERT(!g4.has_value());
  EXPECT_EQ(g4.error().code, Errc::internal);
  auto p4 = co_await b.put(third, "text/plain", BlobTtl::artifact);
  CO_ASSERT(p4.has_value());
  auto g5 = co_await b.get(third_id);
  CO_ASSERT(g5.has_value());
  EXPECT_EQ(*g5, third);
}

TEST_F(BlobsTest, PlantedSymlinksAreNotFollowed) {
  config_.cache_max = 0;  // reads go to disk
  open();
  run(io_, planted_symlinks(blobs(), dir_.path(), blobs_dir()));
}

TEST(BlobsOpen, RefusesASymlinkedBlobsDirectory) {
  TempDir dir;
  fs::create_directories(dir.path() / "elsewhere");
  fs::create_symlink(dir.path() / "elsewhere", dir.path() / "blobs");
  asio::io_context io;
  agentd::core::BlockingPool pool(1, 8);
  auto kv = make_memory_kv(io.get_executor(), KvConfig{});
  BlobsConfig config;
  config.data_dir = dir.path().string();
  try {
    make_blobs(config, kv->cache(), pool);
    ADD_FAILURE() << "opened a symlinked blobs directory";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("symlink"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(tree(dir.path() / "elsewhere").empty());
}

// ---------------------------------------------------------------------------------------------
// The warm copy in the cache and its TTL classes.

asio::awaitable<void> warm_cache(Blobs& b, CountingCache& cache, fs::path blobs_dir) {
  std::string body = "warm me";
  auto put = co_await b.put(body, "text/plain", BlobTtl::artifact);
  CO_ASSERT(put.has_value());
  EXPECT_EQ(cache.sets, 1);
  EXPECT_EQ(cache.last_set_key, "blob:" + put->sha256);

  // A hit is served from the cache: the file is not even read (it is gone).
  auto path = blobs_dir / put->sha256.substr(0, 2) / put->sha256.substr(2);
  auto saved = read_file(path);
  fs::remove(path);
  auto hit = co_await b.get(put->sha256);
  CO_ASSERT(hit.has_value());
  EXPECT_EQ(*hit, body);
  EXPECT_EQ(cache.gets, 1);
  EXPECT_EQ(cache.hits, 1);
  write_file(path, saved);
  ::chmod(path.c_str(), 0600);

  // A miss reads the disk and warms again; the next get is a hit.
  auto dropped = co_await cache.del("blob:" + put->sha256);
  CO_ASSERT(dropped.has_value() && *dropped);
  auto miss = co_await b.get(put->sha256);
  CO_ASSERT(miss.has_value());
  EXPECT_EQ(*miss, body);
  EXPECT_EQ(cache.gets, 2);
  EXPECT_EQ(cache.hits, 1);
  EXPECT_EQ(cache.sets, 2);
  auto hit2 = co_await b.get(put->sha256);
  CO_ASSERT(hit2.has_value());
  EXPECT_EQ(cache.gets, 3);
  EXPECT_EQ(cache.hits, 2);
  EXPECT_EQ(cache.sets, 2);

  // Over blob_cache_max (64 KiB here): never warmed, always read from disk.
  std::string big = random_bytes(64 * 1024 + 1, 5);
  auto pb = co_await b.put(big, "application/octet-stream", BlobTtl::artifact);
  CO_ASSERT(pb.has_value());
  EXPECT_EQ(cache.sets, 2);
  auto gb = co_await b.get(pb->sha256);
  CO_ASSERT(gb.has_value());
  EXPECT_TRUE(*gb == big);
  EXPECT_EQ(cache.sets, 2);
  EXPECT_EQ(cache.gets, 4);
  EXPECT_EQ(cache.hits, 2);
  // At the limit: warmed.
  std::string edge = random_bytes(64 * 1024, 6);
  auto pe = co_await b.put(edge, "application/octet-stream", BlobTtl::artifact);
  CO_ASSERT(pe.has_value());
  EXPECT_EQ(cache.sets, 3);
}

TEST_F(BlobsTest, WarmCopyInTheCache) {
  config_.cache_max = 64 * 1024;
  open();
  run(io_, warm_cache(blobs(), cache_, blobs_dir()));
  EXPECT_EQ(metric("agentd_store_blob_cache_total{result=\"hit\"}"), 2);
  EXPECT_EQ(metric("agentd_store_blob_cache_total{result=\"miss\"}"), 2);
}

asio::awaitable<void> ttl_classes(Blobs& b, CountingCache& cache, fs::path blobs_dir) {
  struct Case {
    BlobTtl ttl;
    std::chrono::milliseconds expect;
  };
  for (auto c : {Case{BlobTtl::session, 11min}, Case{BlobTtl::artifact, 22min},
                 Case{BlobTtl::media, 33min}, Case{BlobTtl::temporary, 44s}}) {
    std::string body = "body of class " + std::string(to_string(c.ttl));
    int sets = cache.sets;
    auto put = co_await b.put(body, "text/plain", c.ttl);
    CO_ASSERT(put.has_value());
    EXPECT_EQ(cache.sets, sets + 1);
    EXPECT_EQ(cache.last_set_ttl, c.expect) << to_string(c.ttl);
    // Re-warmed from disk with the class it was stored with.
    co_await cache.del("blob:" + put->sha256);
    cache.last_set_ttl = -1ms;
    auto got = co_await b.get(put->sha256);
    CO_ASSERT(got.has_value());
    EXPECT_EQ(cache.last_set_ttl, c.expect) << to_string(c.ttl);
  }

  // Stored as temporary, then as media: the class is upgraded on disk; a later temporary put
  // does not downgrade it.
  std::string body = "first temporary, then media";
  auto t = co_await b.put(body, "text/plain", BlobTtl::temporary);
  CO_ASSERT(t.has_value());
  EXPECT_EQ(cache.last_set_ttl, 44s);
  auto path = blobs_dir / t->sha256.substr(0, 2) / t->sha256.substr(2);
  EXPECT_EQ(read_file(path)[5], static_cast<char>(BlobTtl::temporary));
  auto m = co_await b.put(body, "text/plain", BlobTtl::media);
  CO_ASSERT(m.has_value());
  EXPECT_EQ(cache.last_set_ttl, 33min);
  EXPECT_EQ(read_file(path)[5], static_cast<char>(BlobTtl::media));
  auto t2 = co_await b.put(body, "text/plain", BlobTtl::temporary);
  CO_ASSERT(t2.has_value());
  EXPECT_EQ(cache.last_set_ttl, 33min);
  co_await cache.del("blob:" + t->sha256);
  cache.last_set_ttl = -1ms;
  auto g = co_await b.get(t->sha256);
  CO_ASSERT(g.has_value());
  EXPECT_EQ(cache.last_set_ttl, 33min);
}

TEST_F(BlobsTest, TtlClassesPickTheWarmCopysLifetime) {
  config_.cache_ttl = {11min, 22min, 33min, 44s};
  open();
  run(io_, ttl_classes(blobs(), cache_, blobs_dir()));
}

asio::awaitable<void> ttl_zero(Blobs& b, CountingCache& cache) {
  auto put = co_await b.put("no warm copy", "text/plain", BlobTtl::temporary);
  CO_ASSERT(put.has_value());
  EXPECT_EQ(cache.sets, 0);  // a ttl of 0 would be "forever" to the cache
  auto got = co_await b.get(put->sha256);
  CO_ASSERT(got.has_value());
  EXPECT_EQ(cache.sets, 0);
  auto put2 = co_await b.put("warm", "text/plain", BlobTtl::session);
  CO_ASSERT(put2.has_value());
  EXPECT_EQ(cache.sets, 1);
}

TEST_F(BlobsTest, ZeroTtlClassIsNotWarmed) {
  config_.cache_ttl[static_cast<int>(BlobTtl::temporary)] = 0ms;
  open();
  run(io_, ttl_zero(blobs(), cache_));
}

// ---------------------------------------------------------------------------------------------
// Crash safety.

asio::awaitable<void> not_there(Blobs& b, std::string id) {
  auto g = co_await b.get(id);
  CO_ASSERT(!g.has_value());
  EXPECT_EQ(g.error().code, Errc::not_found);
  auto e = co_await b.exists(id);
  EXPECT_TRUE(e.has_value() && !*e);
}

TEST_F(BlobsTest, TempFilesLeftBehindAreIgnoredAndCleaned) {
  auto tmp = blobs_dir() / "tmp";
  // A dead writer's file (no such pid), an old one of a live pid (ours), a fresh one of ours
  // (a writer of this process may be mid-write: kept).
  std::string body = "a partial write";
  write_file(tmp / "999999999-1-1.tmp", body);
  auto old_file = tmp / (std::to_string(::getpid()) + "-1-2.tmp");
  write_file(old_file, body);
  struct timespec times[2] = {{::time(nullptr) - 7200, 0}, {::time(nullptr) - 7200, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, old_file.c_str(), times, 0), 0);
  auto fresh = tmp / (std::to_string(::getpid()) + "-1-3.tmp");
  write_file(fresh, body);

  // None of them is a blob.
  run(io_, not_there(blobs(), sha256_hex(body)));

  open();  // what a restart does
  EXPECT_FALSE(fs::exists(tmp / "999999999-1-1.tmp"));
  EXPECT_FALSE(fs::exists(old_file));
  EXPECT_TRUE(fs::exists(fresh));
}

// A child process stores small blobs, saying "acked <id>" after each, then one larger than its
// RLIMIT_FSIZE: the kernel kills it (SIGXFSZ) in the middle of writing that file. Afterwards the
// partial file is nowhere under a final name, every acknowledged blob is whole, and a restart
// removes the dead writer's temp file.
constexpr std::size_t kCrashLimit = 1 << 20;

asio::awaitable<void> crashing_puts(Blobs& b, int fd) {
  for (unsigned i = 0; i < 4; ++i) {
    auto r =
        co_await b.put(random_bytes(64 << 10, i), "application/octet-stream", BlobTtl::artifact);
    if (!r) ::_exit(3);
    std::string line = "acked " + r->sha256 + "\n";
    if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) ::_exit(4);
  }
  std::string big = random_bytes(4 * kCrashLimit, 99);
  std::string line = "big " + sha256_hex(big) + "\n";
  if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) ::_exit(4);
  co_await b.put(std::move(big), "application/octet-stream", BlobTtl::artifact);
  ::_exit(5);  // not reached: SIGXFSZ ends the process in the write
}

[[noreturn]] void crashing_writer(const std::string& data_dir, int out_fd) {
  asio::io_context io;
  agentd::core::BlockingPool pool(2, 64);
  auto kv = make_memory_kv(io.get_executor(), KvConfig{});
  BlobsConfig config;
  config.data_dir = data_dir;
  config.cache_max = 0;
  auto blobs = make_blobs(config, kv->cache(), pool);
  struct rlimit limit {
    kCrashLimit, kCrashLimit
  };
  if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(6);
  asio::co_spawn(io, crashing_puts(*blobs, out_fd), asio::detached);
  io.run();
  ::_exit(7);
}

asio::awaitable<void> all_valid(Blobs& b, std::vector<std::string> ids) {
  for (const auto& id : ids) {
    auto g = co_await b.get(id);
    EXPECT_TRUE(g.has_value()) << id << ": " << (g ? "" : g.error().message);
    if (g) {
      EXPECT_EQ(g->size(), 64u << 10);
    }
  }
}

TEST(BlobsCrash, WriterKilledMidWriteLeavesOnlyWholeBlobs) {
  TempDir dir;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    crashing_writer(dir.path().string(), fds[1]);
  }
  ::close(fds[1]);
  std::set<std::string> acked;
  std::string big_id;
  std::string buf;
  char chunk[512];
  for (ssize_t n; (n = ::read(fds[0], chunk, sizeof chunk)) > 0;)
    buf.append(chunk, static_cast<std::size_t>(n));
  ::close(fds[0]);
  std::istringstream lines(buf);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("acked ", 0) == 0) acked.insert(line.substr(6));
    if (line.rfind("big ", 0) == 0) big_id = line.substr(4);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGXFSZ)
      << "the writer was not stopped mid-write: status " << status;
  ASSERT_EQ(acked.size(), 4u);
  ASSERT_EQ(big_id.size(), 64u);

  // The interrupted write is a temp file, cut at the limit; its final name does not exist.
  auto tmp = dir.path() / "blobs" / "tmp";
  auto left = tree(tmp);
  ASSERT_EQ(left.size(), 1u) << "the writer died outside the write";
  EXPECT_EQ(fs::file_size(tmp / *left.begin()), kCrashLimit);
  auto files = blob_files(dir.path() / "blobs");
  EXPECT_EQ(files.count(big_id.substr(0, 2) + "/" + big_id.substr(2)), 0u);
  EXPECT_EQ(files.size(), acked.size());

  asio::io_context io;
  agentd::core::BlockingPool pool(2, 64);
  auto kv = make_memory_kv(io.get_executor(), KvConfig{});
  BlobsConfig config;
  config.data_dir = dir.path().string();
  config.cache_max = 0;
  auto blobs = make_blobs(config, kv->cache(), pool);  // the restart
  EXPECT_TRUE(tree(tmp).empty()) << "the dead writer's temp file stays";
  std::vector<std::string> ids(acked.begin(), acked.end());
  run(io, all_valid(*blobs, ids));
  run(io, not_there(*blobs, big_id));
}

// ---------------------------------------------------------------------------------------------
// Concurrency, and the event loop while the disk works.

asio::awaitable<void> put_expect(Blobs& b, std::string body, std::string expect_id, int* ok) {
  auto r = co_await b.put(std::move(body), "text/plain", BlobTtl::artifact);
  if (!r) {
    ADD_FAILURE() << r.error().message;
    co_return;
  }
  EXPECT_EQ(r->sha256, expect_id);
  ++*ok;
}

asio::awaitable<void> concurrent_same(Blobs& b, std::string body, int n, int* ok) {
  Group g(co_await asio::this_coro::executor);
  std::string id = sha256_hex(body);
  for (int i = 0; i < n; ++i) g.spawn(put_expect(b, body, id, ok));
  co_await g.wait();
  auto got = co_await b.get(id);
  CO_ASSERT(got.has_value());
  EXPECT_TRUE(*got == body);
}

TEST_F(BlobsTest, ConcurrentPutsOfTheSameContent) {
  config_.cache_max = 0;
  open();
  int ok = 0;
  std::string body = text_body(300000);
  run(io_, concurrent_same(blobs(), body, 24, &ok));
  EXPECT_EQ(ok, 24);
  EXPECT_EQ(blob_files(blobs_dir()).size(), 1u);
  EXPECT_TRUE(tree(blobs_dir() / "tmp").empty());
}

asio::awaitable<void> concurrent_distinct(Blobs& b, int n, int* ok) {
  Group g(co_await asio::this_coro::executor);
  std::vector<std::string> bodies;
  for (int i = 0; i < n; ++i) bodies.push_back(random_bytes(20000 + i, 100 + i));
  for (const auto& body : bodies) g.spawn(put_expect(b, body, sha256_hex(body), ok));
  co_await g.wait();
  for (const auto& body : bodies) {
    auto got = co_await b.get(sha256_hex(body));
    CO_ASSERT(got.has_value());
    EXPECT_TRUE(*got == body);
  }
}

TEST_F(BlobsTest, ConcurrentPutsOfDistinctContent) {
  int ok = 0;
  run(io_, concurrent_distinct(blobs(), 40, &ok));
  EXPECT_EQ(ok, 40);
  EXPECT_EQ(blob_files(blobs_dir()).size(), 40u);
}

asio::awaitable<void> ticker(bool* running, int* ticks) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  while (*running) {
    t.expires_after(1ms);
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    ++*ticks;
  }
}

asio::awaitable<void> big_put_with_ticker(Blobs& b, int* ticks, Clock::duration* took) {
  std::string body = text_body(24 << 20);
  bool running = true;
  Group g(co_await asio::this_coro::executor);
  g.spawn(ticker(&running, ticks));
  auto start = Clock::now();
  auto r = co_await b.put(std::move(body), "text/plain", BlobTtl::artifact);
  *took = Clock::now() - start;
  running = false;
  co_await g.wait();  // the ticker reads `running`: it ends before this frame does
  CO_ASSERT(r.has_value());
  EXPECT_TRUE(r->compressed);
}

TEST_F(BlobsTest, TheLoopRunsWhileTheDiskWorks) {
  int ticks = 0;
  Clock::duration took{};
  run(io_, big_put_with_ticker(blobs(), &ticks, &took));
  // Hashing and deflating 24 MiB takes far longer than a few milliseconds; a loop blocked by it
  // would not have ticked at all meanwhile.
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(took).count();
  EXPECT_GT(ms, 20);
  EXPECT_GE(ticks, 5) << "the 1 ms timer fired " << ticks << " times in " << ms << " ms";
}

asio::awaitable<void> pool_full(Blobs& b, int* unavailable, int* ok) {
  Group g(co_await asio::this_coro::executor);
  struct One {
    static asio::awaitable<void> put(Blobs& bl, int i, int* u, int* k) {
      auto r = co_await bl.put(text_body(200000, static_cast<unsigned>(i)), "text/plain",
                               BlobTtl::artifact);
      if (r) {
        ++*k;
      } else {
        EXPECT_EQ(r.error().code, Errc::unavailable);
        ++*u;
      }
    }
  };
  for (int i = 0; i < 4; ++i) g.spawn(One::put(b, i, unavailable, ok));
  co_await g.wait();
}

TEST(BlobsPool, FullPoolIsUnavailable) {
  TempDir dir;
  asio::io_context io;
  agentd::core::BlockingPool pool(1, 1);
  auto kv = make_memory_kv(io.get_executor(), KvConfig{});
  BlobsConfig config;
  config.data_dir = dir.path().string();
  auto blobs = make_blobs(config, kv->cache(), pool);
  int unavailable = 0, ok = 0;
  run(io, pool_full(*blobs, &unavailable, &ok));
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(unavailable, 3);
}

}  // namespace
