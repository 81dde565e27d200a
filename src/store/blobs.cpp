// Content-addressed blobs on disk: <data_dir>/blobs/<2 hex>/<62 hex>, each file a 16-byte
// header and the body (deflated when that pays). Every path is resolved relative to directory
// descriptors with O_NOFOLLOW, so no component below <data_dir> can be a symlink.
#include "agentd/store/blobs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <system_error>
#include <utility>
#include <vector>

namespace agentd::store {

std::string_view to_string(BlobTtl c) noexcept {
  switch (c) {
    case BlobTtl::session:
      return "session";
    case BlobTtl::artifact:
      return "artifact";
    case BlobTtl::media:
      return "media";
    case BlobTtl::temporary:
      return "temporary";
  }
  return "artifact";
}

std::optional<BlobTtl> parse_blob_ttl(std::string_view s) noexcept {
  for (std::size_t i = 0; i < kBlobTtlClasses; ++i) {
    auto c = static_cast<BlobTtl>(i);
    if (to_string(c) == s) return c;
  }
  return std::nullopt;
}

bool valid_blob_id(std::string_view id) noexcept {
  return id.size() == 64 && std::all_of(id.begin(), id.end(), [](char ch) {
           return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
         });
}

BlobsConfig parse_blobs_config(const core::ConfigNode& store) {
  BlobsConfig c;
  c.data_dir = store.get_string("data_dir", c.data_dir);
  c.max_size = store.get_size("blob_max_size", c.max_size);
  if (c.max_size == 0) store.child("blob_max_size").fail("must be more than 0");
  c.compression = store.get_bool("blob_compression", c.compression);
  c.compress_min_size = store.get_size("blob_compress_min_size", c.compress_min_size);
  c.cache_max = store.get_size("blob_cache_max", c.cache_max);
  if (auto n = store.get("blob_cache_ttl")) {
    n->expect_map();
    for (std::size_t i = 0; i < kBlobTtlClasses; ++i) {
      auto name = to_string(static_cast<BlobTtl>(i));
      c.cache_ttl[i] = n->get_duration(name, c.cache_ttl[i]);
      if (c.cache_ttl[i].count() < 0) n->child(name).fail("must not be negative");
    }
    n->finish();  // only the four classes
  }
  return c;
}

namespace {

using std::chrono::milliseconds;

// The file header: magic, flags, TTL class, reserved, body size (little endian).
constexpr std::size_t kHeaderSize = 16;
constexpr char kMagic[4] = {'A', 'G', 'B', '1'};
constexpr std::uint8_t kFlagCompressed = 1;
constexpr std::size_t kClassOffset = 5;

struct Header {
  bool compressed = false;
  BlobTtl ttl = BlobTtl::artifact;
  std::uint64_t size = 0;
};

std::string encode_header(const Header& h) {
  std::string out(kHeaderSize, '\0');
  std::memcpy(out.data(), kMagic, 4);
  out[4] = static_cast<char>(h.compressed ? kFlagCompressed : 0);
  out[kClassOffset] = static_cast<char>(h.ttl);
  for (int i = 0; i < 8; ++i) out[8 + i] = static_cast<char>((h.size >> (8 * i)) & 0xff);
  return out;
}

std::optional<Header> decode_header(const unsigned char* p) {
  if (std::memcmp(p, kMagic, 4) != 0) return std::nullopt;
  if ((p[4] & ~kFlagCompressed) != 0 || p[kClassOffset] >= kBlobTtlClasses || p[6] || p[7]) {
    return std::nullopt;
  }
  Header h;
  h.compressed = (p[4] & kFlagCompressed) != 0;
  h.ttl = static_cast<BlobTtl>(p[kClassOffset]);
  for (int i = 0; i < 8; ++i) h.size |= static_cast<std::uint64_t>(p[8 + i]) << (8 * i);
  return h;
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1 || len != 32) {
    throw std::runtime_error("sha256 failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(64, '0');
  for (unsigned int i = 0; i < 32; ++i) {
    out[2 * i] = kHex[md[i] >> 4];
    out[2 * i + 1] = kHex[md[i] & 15];
  }
  return out;
}

// text/*, JSON, XML, YAML, JavaScript, SVG and similar: what deflate shrinks. Images, audio,
// video and archives are already compressed.
bool text_like(std::string_view content_type) {
  std::string t;
  for (char ch : content_type.substr(0, content_type.find(';'))) {
    if (ch != ' ' && ch != '\t')
      t += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  if (t.starts_with("text/")) return true;
  if (t.ends_with("+json") || t.ends_with("+xml") || t.ends_with("+yaml")) return true;
  static constexpr std::string_view kTypes[] = {
      "application/json",       "application/x-ndjson",     "application/jsonl",
      "application/xml",        "application/yaml",         "application/x-yaml",
      "application/javascript", "application/x-javascript", "application/ecmascript",
      "application/sql",        "application/toml",         "application/graphql",
      "application/x-sh",       "application/x-python",     "application/x-tex",
      "application/rtf",        "application/csv",          "application/x-www-form-urlencoded"};
  return std::find(std::begin(kTypes), std::end(kTypes), t) != std::end(kTypes);
}

// A file descriptor closed on scope exit.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

std::string errno_text(int e) { return std::generic_category().message(e); }

Error fail(Errc code, std::string message) { return Error{code, std::move(message)}; }

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_all(int fd, char* p, std::size_t n, off_t offset) {
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, offset);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (r == 0) {
      errno = EIO;  // the file shrank under us
      return false;
    }
    p += r;
    n -= static_cast<std::size_t>(r);
    offset += r;
  }
  return true;
}

// Opens a directory below `parent` without following a symlink; creates it (0700) when asked.
// `created` tells whether this call made it (its parent then needs an fsync).
int open_dir_at(int parent, const char* name, bool create, bool* created = nullptr) {
  int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  int fd = ::openat(parent, name, flags);
  if (fd < 0 && errno == ENOENT && create) {
    if (::mkdirat(parent, name, 0700) == 0) {
      if (created) *created = true;
    } else if (errno != EEXIST) {
      return -1;
    }
    fd = ::openat(parent, name, flags);
  }
  return fd;
}

// The blocking half: every function here runs on a pool thread. Shared with in-flight pool
// calls, so it lives until the last of them is done even when the Blobs goes first.
class Disk {
 public:
  Disk(BlobsConfig config, Fd root, Fd tmp)
      : config_(std::move(config)), root_(std::move(root)), tmp_(std::move(tmp)) {
    std::random_device rd;
    salt_ = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }

  const BlobsConfig& config() const noexcept { return config_; }

  struct Stored {
    BlobInfo info;
    BlobTtl ttl = BlobTtl::artifact;  // the class on disk (for the warm copy)
    bool written = false;             // a new file (not a duplicate)
  };

  BlobResult<Stored> put(const std::string& bytes, const std::string& content_type, BlobTtl ttl) {
    Stored out;
    out.info.sha256 = sha256_hex(bytes);
    out.info.size = bytes.size();
    out.ttl = ttl;
    const std::string& id = out.info.sha256;
    bool created_dir = false;
    Fd dir(open_dir_at(root_.get(), id.substr(0, 2).c_str(), true, &created_dir));
    if (!dir) return io_error("put", id, "cannot open its directory", errno);
    if (created_dir && ::fsync(root_.get()) != 0) {
      return io_error("put", id, "cannot sync the blobs directory", errno);
    }
    std::string name = id.substr(2);

    // Already stored: write nothing, upgrade the class when the new one lives longer.
    if (auto existing = read_existing_header(dir.get(), name, bytes.size())) {
      auto [header, file_size] = *existing;
      out.info.compressed = header.compressed;
      out.info.stored_size = file_size;
      out.ttl = header.ttl;
      if (ttl_of(ttl) > ttl_of(header.ttl)) {
        out.ttl = ttl;
        upgrade_class(dir.get(), name, ttl);
      }
      return out;
    }

    std::string body;
    Header header{false, ttl, bytes.size()};
    if (config_.compression && bytes.size() >= config_.compress_min_size && !bytes.empty() &&
        text_like(content_type)) {
      uLongf len = compressBound(static_cast<uLong>(bytes.size()));
      body.resize(len);
      int rc = compress2(reinterpret_cast<Bytef*>(body.data()), &len,
                         reinterpret_cast<const Bytef*>(bytes.data()),
                         static_cast<uLong>(bytes.size()), Z_DEFAULT_COMPRESSION);
      // Worth a decompression on every disk read only when it saves at least 1/16.
      if (rc == Z_OK && len <= bytes.size() - bytes.size() / 16) {
        body.resize(len);
        header.compressed = true;
      } else {
        body.clear();
      }
    }
    const std::string& payload = header.compressed ? body : bytes;
    std::string head = encode_header(header);

    // Written complete under a temp name, synced, then renamed: the final name only ever
    // shows a whole file. Concurrent writers of the same body each rename an identical file.
    std::string tmp_name;
    Fd file;
    for (int attempt = 0; attempt < 8 && !file; ++attempt) {
      tmp_name = std::to_string(::getpid()) + "-" + std::to_string(salt_) + "-" +
                 std::to_string(counter_.fetch_add(1)) + ".tmp";
      file = Fd(::openat(tmp_.get(), tmp_name.c_str(),
                         O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!file && errno != EEXIST) break;
    }
    if (!file) return io_error("put", id, "cannot create a temp file", errno);
    auto abandon = [&](const char* what) {
      int e = errno;
      file.reset();
      ::unlinkat(tmp_.get(), tmp_name.c_str(), 0);
      return io_error("put", id, what, e);
    };
    if (!write_all(file.get(), head.data(), head.size()) ||
        !write_all(file.get(), payload.data(), payload.size())) {
      return abandon("cannot write");
    }
    if (::fsync(file.get()) != 0) return abandon("cannot sync");
    file.reset();
    if (::renameat(tmp_.get(), tmp_name.c_str(), dir.get(), name.c_str()) != 0) {
      return abandon("cannot rename into place");
    }
    if (::fsync(dir.get()) != 0) return io_error("put", id, "cannot sync its directory", errno);
    out.info.compressed = header.compressed;
    out.info.stored_size = head.size() + payload.size();
    out.written = true;
    return out;
  }

  BlobResult<std::pair<std::string, BlobTtl>> get(const std::string& id) {
    Fd dir(open_dir_at(root_.get(), id.substr(0, 2).c_str(), false));
    if (!dir) {
      if (errno == ENOENT) return fail(Errc::not_found, "blob " + id + " not found");
      return io_error("get", id, "cannot open its directory", errno);
    }
    std::string name = id.substr(2);
    // O_NONBLOCK: a FIFO planted there must not hang the pool thread (no effect on files).
    Fd file(::openat(dir.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!file) {
      if (errno == ENOENT) return fail(Errc::not_found, "blob " + id + " not found");
      if (errno == ELOOP) return internal("get", id, "is a symlink (not followed)");
      return io_error("get", id, "cannot open", errno);
    }
    struct stat st {};
    if (::fstat(file.get(), &st) != 0) return io_error("get", id, "cannot stat", errno);
    if (!S_ISREG(st.st_mode)) return internal("get", id, "is not a regular file");
    auto file_size = static_cast<std::uint64_t>(st.st_size);
    if (file_size < kHeaderSize) return internal("get", id, "is truncated");
    unsigned char raw[kHeaderSize];
    if (!read_all(file.get(), reinterpret_cast<char*>(raw), kHeaderSize, 0)) {
      return io_error("get", id, "cannot read", errno);
    }
    auto header = decode_header(raw);
    if (!header) return internal("get", id, "has no valid header");
    std::uint64_t payload_size = file_size - kHeaderSize;
    // Sizes a corrupt header could claim are bounded before anything is allocated: deflate
    // expands at most ~1032:1.
    if (!header->compressed ? header->size != payload_size
                            : header->size > payload_size * 1032 + 64) {
      return internal("get", id, "has a size that does not match the file");
    }
    std::string payload(payload_size, '\0');
    if (!read_all(file.get(), payload.data(), payload.size(), kHeaderSize)) {
      return io_error("get", id, "cannot read", errno);
    }
    std::string bytes;
    if (header->compressed) {
      bytes.resize(header->size);
      uLongf len = static_cast<uLongf>(header->size);
      int rc = uncompress(reinterpret_cast<Bytef*>(bytes.data()), &len,
                          reinterpret_cast<const Bytef*>(payload.data()),
                          static_cast<uLong>(payload.size()));
      if (rc != Z_OK || len != header->size) return internal("get", id, "does not inflate");
    } else {
      bytes = std::move(payload);
    }
    if (sha256_hex(bytes) != id) {
      return internal("get", id, "is corrupt: its content does not match its sha256");
    }
    return std::pair{std::move(bytes), header->ttl};
  }

  BlobResult<bool> exists(const std::string& id) {
    Fd dir(open_dir_at(root_.get(), id.substr(0, 2).c_str(), false));
    if (!dir) {
      if (errno == ENOENT) return false;
      return io_error("exists", id, "cannot open its directory", errno);
    }
    struct stat st {};
    if (::fstatat(dir.get(), id.substr(2).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return false;
      return io_error("exists", id, "cannot stat", errno);
    }
    return S_ISREG(st.st_mode);
  }

  BlobResult<bool> remove(const std::string& id) {
    Fd dir(open_dir_at(root_.get(), id.substr(0, 2).c_str(), false));
    if (!dir) {
      if (errno == ENOENT) return false;
      return io_error("remove", id, "cannot open its directory", errno);
    }
    // unlinkat never follows: a planted symlink is removed, not its target.
    if (::unlinkat(dir.get(), id.substr(2).c_str(), 0) != 0) {
      if (errno == ENOENT) return false;
      return io_error("remove", id, "cannot delete", errno);
    }
    if (::fsync(dir.get()) != 0) return io_error("remove", id, "cannot sync its directory", errno);
    return true;
  }

  milliseconds ttl_of(BlobTtl c) const { return config_.cache_ttl[static_cast<std::size_t>(c)]; }

 private:
  // The header and size of a complete blob already stored under `name`, or nullopt when there
  // is none (or something else: a symlink, a file that does not look like this body).
  std::optional<std::pair<Header, std::uint64_t>> read_existing_header(int dir,
                                                                       const std::string& name,
                                                                       std::uint64_t size) {
    Fd file(::openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!file) return std::nullopt;
    struct stat st {};
    if (::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
        static_cast<std::uint64_t>(st.st_size) < kHeaderSize) {
      return std::nullopt;
    }
    unsigned char raw[kHeaderSize];
    if (!read_all(file.get(), reinterpret_cast<char*>(raw), kHeaderSize, 0)) return std::nullopt;
    auto header = decode_header(raw);
    auto file_size = static_cast<std::uint64_t>(st.st_size);
    if (!header || header->size != size) return std::nullopt;
    if (!header->compressed && file_size != kHeaderSize + size) return std::nullopt;
    return std::pair{*header, file_size};
  }

  // The class byte is not part of the content: rewriting it in place is safe for readers.
  void upgrade_class(int dir, const std::string& name, BlobTtl ttl) {
    Fd file(::openat(dir, name.c_str(), O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    char c = static_cast<char>(ttl);
    if (!file || ::pwrite(file.get(), &c, 1, kClassOffset) != 1 || ::fdatasync(file.get()) != 0) {
      spdlog::debug("store: blob class of {} not upgraded: {}", name, errno_text(errno));
    }
  }

  Error io_error(const char* op, const std::string& id, const char* what, int e) {
    // O_NOFOLLOW | O_DIRECTORY on a symlink fails with ELOOP or ENOTDIR: say why.
    if (e == ELOOP || e == ENOTDIR) {
      return internal(op, id, std::string(what) + ": a symlink or not a directory (not followed)");
    }
    return internal(op, id, std::string(what) + ": " + errno_text(e));
  }
  Error internal(const char* op, const std::string& id, const std::string& what) {
    return fail(Errc::internal, std::string("blob ") + op + " " + id + ": " + what);
  }

  BlobsConfig config_;
  Fd root_;
  Fd tmp_;
  std::uint64_t salt_ = 0;
  std::atomic<std::uint64_t> counter_{0};
};

// Removes temp files of writers that died (pid gone) or that are older than `max_age`.
void clean_temp(int tmp_fd, milliseconds max_age) {
  int fd = ::dup(tmp_fd);
  if (fd < 0) return;
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    return;
  }
  ::rewinddir(d);
  auto now = std::chrono::system_clock::now();
  std::vector<std::string> doomed;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(tmp_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    auto mtime = std::chrono::system_clock::time_point(
        std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec));
    bool old = now - mtime > max_age;
    bool writer_gone = false;
    long pid = std::strtol(name.c_str(), nullptr, 10);
    if (pid > 0 && pid != ::getpid())
      writer_gone = ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    if (old || writer_gone || !S_ISREG(st.st_mode)) doomed.push_back(std::move(name));
  }
  ::closedir(d);
  for (const auto& name : doomed) {
    if (::unlinkat(tmp_fd, name.c_str(), 0) == 0) {
      spdlog::info("store: removed a blob temp file left behind: {}", name);
    }
  }
}

struct Metrics {
  core::Counter* calls[4][2] = {};  // op x {ok, error}
  core::Counter* cache_hits = nullptr;
  core::Counter* cache_misses = nullptr;
  core::Counter* written_bytes = nullptr;
};
enum Op { kPut = 0, kGet = 1, kExists = 2, kRemove = 3 };

// What a pool call hands back: boost's result<result<bool, Error>> cannot be built from an
// error_code (bool is constructible from one), so the inner result travels in a box.
template <class T>
struct Boxed {
  BlobResult<T> value;
};

class DiskBlobs final : public Blobs {
 public:
  DiskBlobs(std::shared_ptr<Disk> disk, Cache& cache, core::BlockingPool& pool,
            core::Registry* registry)
      : disk_(std::move(disk)), cache_(cache), pool_(pool) {
    if (!registry) return;
    static constexpr const char* kOps[] = {"put", "get", "exists", "remove"};
    for (int op = 0; op < 4; ++op) {
      for (int ok = 0; ok < 2; ++ok) {
        metrics_.calls[op][ok] = &registry->counter(
            "agentd_store_blob_calls_total", "Blob store calls by operation and outcome",
            {{"op", kOps[op]}, {"outcome", ok == 0 ? "ok" : "error"}});
      }
    }
    metrics_.cache_hits = &registry->counter(
        "agentd_store_blob_cache_total", "Blob reads by warm-cache result", {{"result", "hit"}});
    metrics_.cache_misses = &registry->counter(
        "agentd_store_blob_cache_total", "Blob reads by warm-cache result", {{"result", "miss"}});
    metrics_.written_bytes = &registry->counter("agentd_store_blob_written_bytes_total",
                                                "Bytes of new blob files written to disk");
  }

  asio::awaitable<BlobResult<BlobInfo>> put(std::string bytes, std::string content_type,
                                            BlobTtl ttl) override {
    const auto& config = disk_->config();
    if (bytes.size() > config.max_size) {
      count(kPut, false);
      co_return fail(Errc::payload_too_large,
                     "blob of " + std::to_string(bytes.size()) + " bytes is over the limit of " +
                         std::to_string(config.max_size) + " bytes (store.blob_max_size)");
    }
    auto shared = std::make_shared<std::string>(std::move(bytes));
    // The work is a named local, not a temporary inside co_await: g++ 12 destroys a
    // move-captured string twice when the lambda is built in the co_await expression.
    auto work = [disk = disk_, shared, type = content_type, ttl]() -> Boxed<Disk::Stored> {
      try {
        return {disk->put(*shared, type, ttl)};
      } catch (const std::exception& e) {
        return {fail(Errc::internal, std::string("blob put: ") + e.what())};
      }
    };
    auto r = co_await pool_.run(std::move(work));
    if (!r) co_return busy(kPut);
    if (!r->value) co_return failed(kPut, r->value.error());
    Disk::Stored stored = std::move(*r->value);
    count(kPut, true);
    if (stored.written && metrics_.written_bytes) {
      metrics_.written_bytes->inc(static_cast<double>(stored.info.stored_size));
    }
    co_await warm(stored.info.sha256, std::move(*shared), stored.ttl);
    co_return stored.info;
  }

  asio::awaitable<BlobResult<std::string>> get(std::string sha256) override {
    if (!valid_blob_id(sha256)) co_return bad_id(kGet);
    if (warming()) {
      auto cached = co_await cache_.get(disk_->config().cache_prefix + sha256);
      if (cached && *cached) {
        if (metrics_.cache_hits) metrics_.cache_hits->inc();
        count(kGet, true);
        co_return std::move(**cached);
      }
      // A cache error is a miss: the disk has the body.
      if (metrics_.cache_misses) metrics_.cache_misses->inc();
    }
    auto work = [disk = disk_, sha256]() -> Boxed<std::pair<std::string, BlobTtl>> {
      try {
        return {disk->get(sha256)};
      } catch (const std::exception& e) {
        return {fail(Errc::internal, std::string("blob get: ") + e.what())};
      }
    };
    auto r = co_await pool_.run(std::move(work));
    if (!r) co_return busy(kGet);
    if (!r->value) co_return failed(kGet, r->value.error());
    auto [bytes, ttl] = std::move(*r->value);
    count(kGet, true);
    if (warming() && bytes.size() <= disk_->config().cache_max) {
      co_await warm(sha256, std::string(bytes), ttl);
    }
    co_return std::move(bytes);
  }

  asio::awaitable<BlobResult<bool>> exists(std::string sha256) override {
    if (!valid_blob_id(sha256)) co_return bad_id(kExists);
    auto work = [disk = disk_, sha256]() -> Boxed<bool> { return {disk->exists(sha256)}; };
    auto r = co_await pool_.run(std::move(work));
    if (!r) co_return busy(kExists);
    if (!r->value) co_return failed(kExists, r->value.error());
    count(kExists, true);
    co_return *r->value;
  }

  asio::awaitable<BlobResult<bool>> remove(std::string sha256) override {
    if (!valid_blob_id(sha256)) co_return bad_id(kRemove);
    // The warm copy first: a get racing this removal then finds neither.
    if (warming()) (void)co_await cache_.del(disk_->config().cache_prefix + sha256);
    auto work = [disk = disk_, sha256]() -> Boxed<bool> { return {disk->remove(sha256)}; };
    auto r = co_await pool_.run(std::move(work));
    if (!r) co_return busy(kRemove);
    if (!r->value) co_return failed(kRemove, r->value.error());
    count(kRemove, true);
    co_return *r->value;
  }

 private:
  bool warming() const { return disk_->config().cache_max > 0; }

  asio::awaitable<void> warm(std::string sha256, std::string bytes, BlobTtl ttl) {
    auto ttl_ms = disk_->ttl_of(ttl);
    // A ttl of 0 would mean "forever" to the cache: for the blobs it means "no warm copy".
    if (!warming() || bytes.size() > disk_->config().cache_max || ttl_ms.count() <= 0) co_return;
    auto r = co_await cache_.set(disk_->config().cache_prefix + sha256, std::move(bytes), ttl_ms);
    if (!r) spdlog::debug("store: blob {} not warmed: {}", sha256, r.error().message);
  }

  void count(Op op, bool ok) {
    if (auto* c = metrics_.calls[op][ok ? 0 : 1]) c->inc();
  }
  Error bad_id(Op op) {
    count(op, false);
    return fail(Errc::bad_request, "a blob id is 64 lowercase hex characters (a sha256)");
  }
  Error busy(Op op) {
    count(op, false);
    return fail(Errc::unavailable, "blob store: the blocking pool is busy");
  }
  Error failed(Op op, Error e) {
    count(op, false);
    if (e.code == Errc::internal) spdlog::error("store: {}", e.message);
    return e;
  }

  std::shared_ptr<Disk> disk_;
  Cache& cache_;
  core::BlockingPool& pool_;
  Metrics metrics_;
};

}  // namespace

std::unique_ptr<Blobs> make_blobs(const BlobsConfig& config, Cache& cache, core::BlockingPool& pool,
                                  core::Registry* metrics) {
  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  Fd data(::open(config.data_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!data) {
    throw std::runtime_error("blobs: cannot open " + config.data_dir + ": " + errno_text(errno));
  }
  auto where = config.data_dir + "/blobs";
  Fd root(open_dir_at(data.get(), "blobs", true));
  if (!root) {
    throw std::runtime_error("blobs: cannot use " + where +
                             " (it must be a directory, not a symlink): " + errno_text(errno));
  }
  Fd tmp(open_dir_at(root.get(), "tmp", true));
  if (!tmp) {
    throw std::runtime_error("blobs: cannot use " + where +
                             "/tmp (it must be a directory, not a symlink): " + errno_text(errno));
  }
  if (::access(where.c_str(), W_OK) != 0) {
    throw std::runtime_error("blobs: " + where + " is not writable");
  }
  clean_temp(tmp.get(), config.temp_max_age);
  auto disk = std::make_shared<Disk>(config, std::move(root), std::move(tmp));
  return std::make_unique<DiskBlobs>(std::move(disk), cache, pool, metrics);
}

}  // namespace agentd::store
