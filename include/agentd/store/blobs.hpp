// The store's blobs: content-addressed (sha256) bodies of artifacts and media under
// `<store.data_dir>/blobs`, written atomically, compressed when that pays, with a warm copy in
// the cache whose lifetime depends on the blob's TTL class.
#pragma once

#include <array>
#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agentd/core/config.hpp"
#include "agentd/core/metrics.hpp"
#include "agentd/core/runtime.hpp"
#include "agentd/store/kv.hpp"

namespace agentd::store {

// How long a blob's warm copy stays in the cache (the body on disk stays until remove()).
enum class BlobTtl : std::uint8_t { session = 0, artifact = 1, media = 2, temporary = 3 };
inline constexpr std::size_t kBlobTtlClasses = 4;
std::string_view to_string(BlobTtl c) noexcept;
std::optional<BlobTtl> parse_blob_ttl(std::string_view s) noexcept;

// The keys under `store:` the blobs read (see docs/persistence.md, "Blobs").
struct BlobsConfig {
  std::string data_dir = "./data";       // blobs live in <data_dir>/blobs
  std::uint64_t max_size = 64ULL << 20;  // larger bodies are refused (payload_too_large)
  bool compression = true;
  // Text-like bodies (text/*, JSON, XML, YAML, JavaScript, SVG, ...) at least this large are
  // deflated, and stored so only when that is smaller.
  std::uint64_t compress_min_size = 4096;
  // Larger bodies get no warm copy in the cache (0: never warm).
  std::uint64_t cache_max = 1ULL << 20;
  // TTL of the warm copy per class (index: BlobTtl); 0 = no warm copy for that class.
  std::array<std::chrono::milliseconds, kBlobTtlClasses> cache_ttl{
      std::chrono::hours(1), std::chrono::hours(24), std::chrono::hours(48),
      std::chrono::minutes(5)};
  std::string cache_prefix = "blob:";  // cache key: <cache_prefix><sha256>
  // Temp files of writers that died are removed at start once older than this (those of a
  // writer whose pid is gone from this machine at once).
  std::chrono::milliseconds temp_max_age = std::chrono::hours(1);
};

// Reads `data_dir`, `blob_max_size`, `blob_compression`, `blob_compress_min_size`,
// `blob_cache_max` and `blob_cache_ttl` (a map of session/artifact/media/temporary durations;
// other keys are refused) from the `store` node. Does not call store.finish().
BlobsConfig parse_blobs_config(const core::ConfigNode& store);

// What put() stored.
struct BlobInfo {
  std::string sha256;             // 64 lowercase hex characters of the uncompressed body
  std::uint64_t size = 0;         // bytes of the body
  std::uint64_t stored_size = 0;  // bytes of the file on disk (header included)
  bool compressed = false;        // deflated on disk
};

template <class T>
using BlobResult = boost::system::result<T, Error>;

// Content-addressed bodies. Use from the loop thread of the executor the Cache belongs to;
// the disk work (hashing, compression, reads, writes, fsync) runs on the blocking pool.
// Errors (Error::code): bad_request (an id that is not 64 lowercase hex characters),
// payload_too_large (over max_size), not_found, unavailable (the blocking pool is full),
// internal (an I/O error, a blob that is not a regular file, or whose content no longer matches
// its id); the message says which and names the id.
class Blobs {
 public:
  virtual ~Blobs() = default;
  // Stores `bytes` under their sha256 and warms the cache with the class's TTL. Storing the
  // same bytes again writes nothing (the class is upgraded when the new one lives longer).
  // Returns once the body is durable: the file and its directory are fsynced, and the file
  // appears under its final name only complete (temp file, then rename).
  virtual asio::awaitable<BlobResult<BlobInfo>> put(std::string bytes, std::string content_type,
                                                    BlobTtl ttl) = 0;
  // The body: the warm copy when there is one, otherwise read from disk, checked against the
  // id, and warmed again with the TTL of the class it was stored with.
  virtual asio::awaitable<BlobResult<std::string>> get(std::string sha256) = 0;
  // Whether the body is on disk.
  virtual asio::awaitable<BlobResult<bool>> exists(std::string sha256) = 0;
  // Deletes the body and its warm copy; true when the body was there.
  virtual asio::awaitable<BlobResult<bool>> remove(std::string sha256) = 0;
};

// Whether `id` is 64 lowercase hex characters (what put() returns, and the only form accepted).
bool valid_blob_id(std::string_view id) noexcept;

// Creates <data_dir>/blobs (0700; a symlink there is refused) and removes temp files of dead
// writers. Blocking: call at start. Throws std::runtime_error when the directory cannot be
// used. `cache`, `pool` and `metrics` (may be null; otherwise agentd_store_blob_* series) must
// outlive the Blobs.
std::unique_ptr<Blobs> make_blobs(const BlobsConfig& config, Cache& cache, core::BlockingPool& pool,
                                  core::Registry* metrics = nullptr);

}  // namespace agentd::store
