// The `local` sandbox backend: isolated sandboxes on this host with bubblewrap (bwrap).
//
// On disk a sandbox is <root_dir>/<id>/ (mode 0700) holding `work/` (mounted read-write at
// /home/user, the default cwd), `tmp/` (mounted at /tmp) and `sandbox.json` (owner, template,
// timeout, metadata, cgroup paths, agentd's pid). Ids are 32 random hex digits. list() reads the
// metadata files, so what a crashed agentd left is listed, and kill() of such an id removes it
// (its cgroups and files) like a live one.
//
// Each command is one bwrap process (agentd's child): new user, pid, ipc, uts, cgroup and
// network namespaces (--share-net only when the sandbox asked and `allow_network` allows), uid
// and gid 1000 inside, all capabilities dropped, a new session, --die-with-parent; the host's
// `read_only` paths bound read-only (plus the /bin, /lib, /lib64, /sbin symlinks or dirs),
// fresh /proc and /dev; the environment cleared, then PATH, HOME, USER, the sandbox's env and
// the command's env; `/bin/bash -c CMD` (`-l` with login_shell; /bin/sh -c when the host has no
// bash). In the pid namespace bwrap's init is pid 1 and the command pid 2; when the command
// ends, init ends and the kernel kills whatever the command left, so the output pipes reach
// EOF. SIGKILL to the bwrap child (a timeout, kill()) takes the whole namespace with it
// (die-with-parent).
// signal(sig) goes to the process group of the namespace's init (the command's group).
//
// Limits: in the child between fork and exec (Boost.Process's on_exec_setup) the process joins
// the sandbox's cgroups and gets RLIMIT_CPU (cpu_seconds) and RLIMIT_FSIZE (max_file_size).
// Memory and process counts are per sandbox in cgroups: cgroup v1 `memory` and `pids` child
// groups of agentd's own ones when writable, else (a cgroup v2 host) a child of agentd's own
// cgroup with memory and pids enabled in its subtree_control; where neither can be written the
// backend falls back to RLIMIT_AS and RLIMIT_NPROC per command, with a warning (RLIMIT_NPROC
// counts every process of the host uid agentd runs as, and not at all for root: hence cgroups).
// Disk: writes through write_file are refused past `max_disk` of files under the work dir;
// a command's own writes are bounded per file by RLIMIT_FSIZE only.
//
// Output: stdout and stderr are read as they arrive into a queue of at most kQueueBytes; when
// next() does not keep up, reading pauses and the command blocks on its pipe (backpressure).
// A dropped Process stops queueing and keeps draining.
//
// Files: read/write/list/remove run on a small private pool (never on the loop). A path is
// resolved inside the work dir: relative ones under it, absolute ones only below /home/user;
// `..` above it, NUL bytes, over-long paths or names are bad_request. The walk opens each
// component with openat(O_NOFOLLOW) relative to its parent's descriptor, so a symlink anywhere
// on the path (even one the sandbox swaps in meanwhile) is refused, never followed.
//
// Sandbox timeouts: a timer per sandbox kills it at end_at (set_timeout moves it). pause and
// resume: conflict. Destroying the backend SIGKILLs running commands but leaves files and
// cgroups, as a crash would; a new backend's list()/kill() removes them.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/writable_pipe.hpp>
#include <boost/asio/write.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>
#include <chrono>
#include <deque>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agentd/core/runtime.hpp"
#include "agentd/sandbox/manager.hpp"

namespace agentd::sandbox {
namespace {

namespace asio = boost::asio;
namespace bp = boost::process::v2;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::string_view kHome = "/home/user";
constexpr const char* kMetaFile = "sandbox.json";
constexpr const char* kCgroupPrefix = "agentd-sbx-";
constexpr std::size_t kIdBytes = 16;
constexpr std::size_t kMaxPath = 4096;
constexpr std::size_t kMaxName = 255;
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kQueueBytes = 256 * 1024;  // output waiting for next()
constexpr std::size_t kMaxListEntries = 10000;
constexpr int kMaxListDepth = 32;
constexpr int kMaxTreeDepth = 256;  // deeper trees are not walked (usage) or removed
constexpr auto kPoll = 20ms;        // while waiting for killed processes to go
constexpr auto kKillWait = 5s;
constexpr auto kSignalWait = 1s;  // a signal() right after start: until the namespace exists
constexpr const char* kPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

TimeMs now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Error err(Errc code, std::string message) { return Error{code, std::move(message), std::nullopt}; }

std::string random_id() {
  std::array<unsigned char, kIdBytes> b{};
  std::size_t got = 0;
  while (got < b.size()) {
    auto n = ::getrandom(b.data() + got, b.size() - got, 0);
    if (n > 0) got += static_cast<std::size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (auto c : b) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

bool valid_id(std::string_view id) {
  return id.size() == 2 * kIdBytes &&
         std::all_of(id.begin(), id.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// --- small file helpers (start-up and the pool, never the loop for anything big) ---

std::optional<std::string> read_small(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool write_small(const std::string& path, std::string_view data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  ::close(fd);
  return ok;
}

bool write_file_atomic(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return false;
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  ok = ::close(fd) == 0 && ok;
  return ok && ::rename(tmp.c_str(), path.c_str()) == 0;
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
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
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_;
};

// --- paths inside the sandbox (no I/O) ---

// The components of `path` below the work dir, `..` resolved lexically.
Result<std::vector<std::string>> split_path(std::string_view path) {
  if (path.find('\0') != std::string_view::npos) {
    return err(Errc::bad_request, "the path contains a NUL byte");
  }
  if (path.size() > kMaxPath) return err(Errc::bad_request, "the path is too long");
  if (path.starts_with('/')) {
    if (path == kHome) {
      path = {};
    } else if (path.starts_with(kHome) && path[kHome.size()] == '/') {
      path.remove_prefix(kHome.size() + 1);
    } else {
      return err(Errc::bad_request, "the path is outside the sandbox's files (/home/user)");
    }
  }
  std::vector<std::string> parts;
  while (!path.empty()) {
    auto slash = path.find('/');
    auto part = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (parts.empty()) return err(Errc::bad_request, "the path leaves the sandbox's files");
      parts.pop_back();
      continue;
    }
    if (part.size() > kMaxName) return err(Errc::bad_request, "a path component is too long");
    parts.emplace_back(part);
  }
  return parts;
}

std::string inside_path(const std::vector<std::string>& parts, std::size_t n) {
  std::string out(kHome);
  for (std::size_t i = 0; i < n && i < parts.size(); ++i) out += "/" + parts[i];
  return out;
}

// --- file operations under the work dir (pool threads) ---

Error errno_error(int e, const std::string& what) {
  std::string m = what + ": " + ::strerror(e);
  switch (e) {
    case ENOENT:
      return err(Errc::not_found, what + ": no such file or directory");
    case EACCES:
    case EPERM:
      return err(Errc::forbidden, m);
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return err(Errc::payload_too_large, m);
    case ENAMETOOLONG:
    case ELOOP:
    case ENOTDIR:
    case EISDIR:
      return err(Errc::bad_request, m);
    default:
      return err(Errc::internal, m);
  }
}

// Why openat of `name` in `dir` failed, saying so when it is a symlink.
Error open_error(int dir, const std::string& name, int e, const std::string& shown) {
  struct stat st {};
  if ((e == ELOOP || e == ENOTDIR || e == ENXIO) && ::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISLNK(st.st_mode)) return err(Errc::bad_request, shown + " is a symlink (not followed)");
    if (!S_ISDIR(st.st_mode) && e == ENOTDIR) return err(Errc::bad_request, shown + " is not a directory");
  }
  return errno_error(e, shown);
}

Result<Fd> open_root(const std::string& work) {
  Fd fd(::open(work.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return err(Errc::not_found, "the sandbox's work dir is gone");
  return fd;
}

// Opens the directory made of parts[0, n) under the work dir, one component at a time, never
// following a symlink; with `create`, missing directories are made.
Result<Fd> open_dir(const std::string& work, const std::vector<std::string>& parts, std::size_t n,
                    bool create) {
  auto root = open_root(work);
  if (!root) return root.error();
  Fd dir = std::move(*root);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& name = parts[i];
    int fd = ::openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
      if (::mkdirat(dir.get(), name.c_str(), 0755) != 0 && errno != EEXIST) {
        return errno_error(errno, inside_path(parts, i + 1));
      }
      fd = ::openat(dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) return open_error(dir.get(), name, errno, inside_path(parts, i + 1));
    dir = Fd(fd);
  }
  return dir;
}

// Calls fn(name, stat) for each entry of the directory `fd` (not consumed).
template <class F>
bool for_each_entry(int fd, F&& fn) {
  int copy = ::dup(fd);
  if (copy < 0) return false;
  DIR* d = ::fdopendir(copy);
  if (!d) {
    ::close(copy);
    return false;
  }
  ::rewinddir(d);
  std::vector<std::string> names;
  while (auto* e = ::readdir(d)) {
    std::string_view n(e->d_name);
    if (n == "." || n == "..") continue;
    names.emplace_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    struct stat st {};
    if (::fstatat(fd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!fn(n, st)) return false;
  }
  return true;
}

// Bytes of the files under `fd` (allocated blocks), symlinks not followed.
std::uint64_t disk_usage(int fd, int depth = 0) {
  std::uint64_t total = 0;
  for_each_entry(fd, [&](const std::string& name, const struct stat& st) {
    total += static_cast<std::uint64_t>(st.st_blocks) * 512;
    if (S_ISDIR(st.st_mode) && depth < kMaxTreeDepth) {
      Fd sub(::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub) total += disk_usage(sub.get(), depth + 1);
    }
    return true;
  });
  return total;
}

// Removes everything under the directory `fd`, symlinks not followed.
bool remove_tree(int fd, int depth = 0) {
  bool ok = true;
  for_each_entry(fd, [&](const std::string& name, const struct stat& st) {
    if (S_ISDIR(st.st_mode)) {
      Fd sub(::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub && depth < kMaxTreeDepth) ok = remove_tree(sub.get(), depth + 1) && ok;
      if (::unlinkat(fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) ok = false;
    } else if (::unlinkat(fd, name.c_str(), 0) != 0 && errno != ENOENT) {
      ok = false;
    }
    return true;
  });
  return ok;
}

// Removes the directory `path` (a host path agentd made) and all it holds.
bool remove_dir(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return errno == ENOENT;
  bool ok = remove_tree(fd.get());
  fd.reset();
  return (::rmdir(path.c_str()) == 0 || errno == ENOENT) && ok;
}

Result<std::string> read_at(const std::string& work, std::string path, std::size_t max_bytes) {
  auto parts = split_path(path);
  if (!parts) return parts.error();
  if (parts->empty()) return err(Errc::bad_request, "/home/user is a directory");
  auto dir = open_dir(work, *parts, parts->size() - 1, false);
  if (!dir) return dir.error();
  const auto shown = inside_path(*parts, parts->size());
  const auto& name = parts->back();
  Fd fd(::openat(dir->get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY));
  if (!fd) return open_error(dir->get(), name, errno, shown);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error(errno, shown);
  if (!S_ISREG(st.st_mode)) return err(Errc::bad_request, shown + " is not a regular file");
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    return err(Errc::payload_too_large, shown + " has " + std::to_string(st.st_size) +
                                            " bytes, over the limit of " + std::to_string(max_bytes));
  }
  std::string out;
  std::array<char, kReadChunk> buf{};
  for (;;) {
    auto n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, shown);
    if (n == 0) break;
    out.append(buf.data(), static_cast<std::size_t>(n));
    if (out.size() > max_bytes) return err(Errc::payload_too_large, shown + " is over the limit");
  }
  return out;
}

Result<void> write_at(const std::string& work, std::string path, const std::string& data,
                      const LocalConfig& limits) {
  auto parts = split_path(path);
  if (!parts) return parts.error();
  if (parts->empty()) return err(Errc::bad_request, "/home/user is a directory");
  const auto shown = inside_path(*parts, parts->size());
  if (data.size() > limits.max_file_size) {
    return err(Errc::payload_too_large, shown + ": " + std::to_string(data.size()) +
                                            " bytes, over max_file_size");
  }
  auto root = open_root(work);
  if (!root) return root.error();
  auto usage = disk_usage(root->get());
  auto dir = open_dir(work, *parts, parts->size() - 1, true);
  if (!dir) return dir.error();
  const auto& name = parts->back();
  std::uint64_t replaced = 0;
  struct stat old {};
  if (::fstatat(dir->get(), name.c_str(), &old, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(old.st_mode)) {
    replaced = static_cast<std::uint64_t>(old.st_blocks) * 512;
  }
  if (usage - std::min(usage, replaced) + data.size() > limits.max_disk) {
    return err(Errc::payload_too_large, shown + ": the sandbox's disk quota (" +
                                            std::to_string(limits.max_disk) + " bytes) would be exceeded");
  }
  Fd fd(::openat(dir->get(), name.c_str(),
                 O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, 0644));
  if (!fd) return open_error(dir->get(), name, errno, shown);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error(errno, shown);
  if (!S_ISREG(st.st_mode)) return err(Errc::bad_request, shown + " is not a regular file");
  if (::ftruncate(fd.get(), 0) != 0) return errno_error(errno, shown);
  std::size_t done = 0;
  while (done < data.size()) {
    auto n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, shown);
    done += static_cast<std::size_t>(n);
  }
  return {};
}

bool list_into(int fd, const std::string& prefix, int depth, std::vector<FileEntry>& out) {
  return for_each_entry(fd, [&](const std::string& name, const struct stat& st) {
    if (out.size() >= kMaxListEntries) return false;
    FileEntry e;
    e.name = name;
    e.path = prefix + "/" + name;
    e.type = S_ISDIR(st.st_mode) ? "dir" : S_ISLNK(st.st_mode) ? "symlink" : "file";
    e.size = static_cast<std::uint64_t>(st.st_size);
    out.push_back(e);
    if (S_ISDIR(st.st_mode) && depth > 1) {
      Fd sub(::openat(fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub && !list_into(sub.get(), e.path, depth - 1, out)) return false;
    }
    return true;
  });
}

Result<std::vector<FileEntry>> list_at(const std::string& work, std::string path, int depth) {
  auto parts = split_path(path);
  if (!parts) return parts.error();
  auto dir = open_dir(work, *parts, parts->size(), false);
  if (!dir) return dir.error();
  std::vector<FileEntry> out;
  if (!list_into(dir->get(), inside_path(*parts, parts->size()), std::clamp(depth, 1, kMaxListDepth), out)) {
    return err(Errc::payload_too_large, "more than " + std::to_string(kMaxListEntries) +
                                            " entries: list a subdirectory or less deep");
  }
  return out;
}

Result<void> remove_at(const std::string& work, std::string path) {
  auto parts = split_path(path);
  if (!parts) return parts.error();
  if (parts->empty()) return err(Errc::bad_request, "cannot remove /home/user itself");
  auto dir = open_dir(work, *parts, parts->size() - 1, false);
  if (!dir) return dir.error();
  const auto shown = inside_path(*parts, parts->size());
  const auto& name = parts->back();
  struct stat st {};
  if (::fstatat(dir->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno_error(errno, shown);
  if (S_ISDIR(st.st_mode)) {
    Fd sub(::openat(dir->get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) return open_error(dir->get(), name, errno, shown);
    remove_tree(sub.get());
    if (::unlinkat(dir->get(), name.c_str(), AT_REMOVEDIR) != 0) return errno_error(errno, shown);
  } else if (::unlinkat(dir->get(), name.c_str(), 0) != 0) {
    return errno_error(errno, shown);
  }
  return {};
}

// --- cgroups ---

struct MountEntry {
  std::string root, point, fstype, super;
};

std::vector<MountEntry> cgroup_mounts() {
  std::vector<MountEntry> out;
  auto text = read_small("/proc/self/mountinfo");
  if (!text) return out;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::vector<std::string> f;
    std::string w;
    while (ls >> w) f.push_back(w);
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || dash + 3 > f.end()) continue;
    MountEntry m{f[3], f[4], *(dash + 1), *(dash + 3)};
    if (m.fstype == "cgroup" || m.fstype == "cgroup2") out.push_back(std::move(m));
  }
  return out;
}

bool has_token(const std::string& list, std::string_view token, char sep) {
  std::string_view s(list);
  while (!s.empty()) {
    auto p = s.find(sep);
    if (s.substr(0, p) == token) return true;
    if (p == std::string_view::npos) break;
    s.remove_prefix(p + 1);
  }
  return false;
}

// agentd's own cgroup path for a v1 controller ("pids") or v2 (""), from /proc/self/cgroup.
std::optional<std::string> own_cgroup(std::string_view controller) {
  auto text = read_small("/proc/self/cgroup");
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    auto a = line.find(':');
    auto b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string ctrls = line.substr(a + 1, b - a - 1);
    if (controller.empty() ? ctrls.empty() : has_token(ctrls, controller, ',')) return line.substr(b + 1);
  }
  return std::nullopt;
}

std::string join_cgroup(const MountEntry& m, std::string path) {
  if (m.root != "/" && path.starts_with(m.root)) path = path.substr(m.root.size());
  if (path == "/") path.clear();
  return m.point + path;
}

bool writable_dir(const std::string& dir) {
  struct stat st {};
  return ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && ::access(dir.c_str(), W_OK) == 0;
}

// Where sandboxes' cgroups go: parents for the pids and memory controllers (empty: rlimits).
struct CgroupPlan {
  std::string pids_parent;
  std::string memory_parent;
  bool v2 = false;
};

CgroupPlan plan_cgroups() {
  CgroupPlan plan;
  auto mounts = cgroup_mounts();
  for (const char* ctrl : {"pids", "memory"}) {
    for (const auto& m : mounts) {
      if (m.fstype != "cgroup" || !has_token(m.super, ctrl, ',')) continue;
      auto own = own_cgroup(ctrl);
      if (!own) continue;
      auto dir = join_cgroup(m, *own);
      if (!writable_dir(dir)) continue;
      (std::string_view(ctrl) == "pids" ? plan.pids_parent : plan.memory_parent) = dir;
    }
  }
  if (!plan.pids_parent.empty() || !plan.memory_parent.empty()) return plan;
  for (const auto& m : mounts) {
    if (m.fstype != "cgroup2") continue;
    auto own = own_cgroup("");
    if (!own) break;
    auto dir = join_cgroup(m, *own);
    auto controllers = read_small(dir + "/cgroup.controllers").value_or("");
    if (!controllers.empty() && controllers.back() == '\n') controllers.pop_back();
    if (!has_token(controllers, "memory", ' ') || !has_token(controllers, "pids", ' ')) break;
    if (!writable_dir(dir)) break;
    // Fails (EBUSY) when agentd's cgroup holds processes and is not the root: a unit needs
    // Delegate=yes and agentd in a leaf of its own; then rlimits it is.
    if (!write_small(dir + "/cgroup.subtree_control", "+memory +pids")) break;
    plan.pids_parent = plan.memory_parent = dir;
    plan.v2 = true;
    break;
  }
  return plan;
}

// Makes a sandbox's cgroups with its limits; returns their directories (one on v2).
std::vector<std::string> make_cgroups(const CgroupPlan& plan, const std::string& id, const LocalConfig& c,
                                      std::string& pids_dir, std::string& memory_dir) {
  std::vector<std::string> made;
  auto make = [&](const std::string& parent) -> std::string {
    if (parent.empty()) return {};
    std::string dir = parent + "/" + kCgroupPrefix + id;
    if (std::find(made.begin(), made.end(), dir) != made.end()) return dir;
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      spdlog::warn("sandbox[{}]: cannot create cgroup {}: {}; using rlimits", id, dir, ::strerror(errno));
      return {};
    }
    made.push_back(dir);
    return dir;
  };
  pids_dir = make(plan.pids_parent);
  if (!pids_dir.empty() && !write_small(pids_dir + "/pids.max", std::to_string(c.max_processes))) {
    spdlog::warn("sandbox[{}]: cannot set pids.max; using RLIMIT_NPROC", id);
    pids_dir.clear();
  }
  memory_dir = make(plan.memory_parent);
  if (!memory_dir.empty()) {
    auto bytes = std::to_string(c.memory_bytes);
    bool ok = plan.v2 ? write_small(memory_dir + "/memory.max", bytes)
                      : write_small(memory_dir + "/memory.limit_in_bytes", bytes);
    if (plan.v2) {
      write_small(memory_dir + "/memory.swap.max", "0");
    } else {
      write_small(memory_dir + "/memory.memsw.limit_in_bytes", bytes);  // absent without swap accounting
    }
    if (!ok) {
      spdlog::warn("sandbox[{}]: cannot set the memory limit; using RLIMIT_AS", id);
      memory_dir.clear();
    }
  }
  return made;
}

bool cgroup_path_of(const std::string& dir, const std::string& id) {
  // Paths from a metadata file are only used when they are what agentd would have made.
  return dir.starts_with("/sys/fs/cgroup/") && dir.ends_with(std::string("/") + kCgroupPrefix + id) &&
         dir.find("/../") == std::string::npos;
}

std::vector<int> cgroup_pids(const std::string& dir) {
  std::vector<int> out;
  auto text = read_small(dir + "/cgroup.procs");
  if (!text) return out;
  std::istringstream in(*text);
  int pid = 0;
  while (in >> pid) out.push_back(pid);
  return out;
}

// SIGKILLs what is in the cgroups and removes them, polling on the loop (bounded).
asio::awaitable<bool> destroy_cgroups(std::vector<std::string> dirs) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const auto deadline = Clock::now() + kKillWait;
  while (!dirs.empty()) {
    for (auto it = dirs.begin(); it != dirs.end();) {
      write_small(*it + "/cgroup.kill", "1");  // v2 (5.14+); v1 has no such file
      for (int pid : cgroup_pids(*it)) ::kill(pid, SIGKILL);
      if (::rmdir(it->c_str()) == 0 || errno == ENOENT) {
        it = dirs.erase(it);
      } else {
        ++it;
      }
    }
    if (dirs.empty() || Clock::now() >= deadline) break;
    timer.expires_after(kPoll);
    co_await timer.async_wait(kTuple);
  }
  for (const auto& d : dirs) spdlog::error("sandbox: cgroup {} could not be removed", d);
  co_return dirs.empty();
}

// --- commands ---

// Wakes whoever waits; one thread, so a waiter checks its condition and waits with no
// suspension in between. The expiry never changes: notify() completes the waits in flight.
class Notifier {
 public:
  explicit Notifier(asio::any_io_executor ex) : timer_(std::move(ex), Clock::time_point::max()) {}
  asio::awaitable<void> wait() { co_await timer_.async_wait(kTuple); }
  void notify() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
};

#ifdef __GLIBC__
using RlimitResource = __rlimit_resource_t;
#else
using RlimitResource = int;
#endif

// Runs in the child between fork and exec (async-signal-safe calls only).
struct ChildSetup {
  std::array<int, 2> cgroup_procs{-1, -1};  // opened by the parent; "0" moves the writer
  struct Limit {
    RlimitResource resource;
    rlim_t soft, hard;
  };
  std::array<Limit, 5> limits{};
  std::size_t limit_count = 0;

  void add_limit(RlimitResource r, rlim_t soft, rlim_t hard) { limits[limit_count++] = Limit{r, soft, hard}; }

  template <class Launcher, class Path, class Argv>
  bp::error_code on_exec_setup(Launcher&, const Path&, const Argv&) {
    for (int fd : cgroup_procs) {
      if (fd >= 0 && ::write(fd, "0", 1) != 1) return bp::error_code(errno, bp::system_category());
    }
    ::setpgid(0, 0);
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    ::sigemptyset(&sa.sa_mask);
    ::sigaction(SIGPIPE, &sa, nullptr);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (std::size_t i = 0; i < limit_count; ++i) {
      struct rlimit rl {limits[i].soft, limits[i].hard};
      if (::setrlimit(limits[i].resource, &rl) != 0) return bp::error_code(errno, bp::system_category());
    }
    return {};
  }
  // Boost 1.81 exit()s after a failed exec (atexit handlers in the child): _exit instead. It
  // detects the hook with 5 arguments and calls it with 4, hence both.
  template <class Launcher, class Path, class Argv>
  void on_exec_error(Launcher&, const Path&, const Argv&, const bp::error_code&) {
    ::_exit(127);
  }
  template <class Launcher, class Path, class Argv>
  void on_exec_error(Launcher&, const bp::error_code&, const Path&, const Argv&, const bp::error_code&) {
    ::_exit(127);
  }
};

void ignore_sigpipe_once() {
  static const bool done = [] {
    struct sigaction sa {};
    if (::sigaction(SIGPIPE, nullptr, &sa) == 0 && sa.sa_handler == SIG_DFL) {
      sa.sa_handler = SIG_IGN;
      ::sigaction(SIGPIPE, &sa, nullptr);
    }
    return true;
  }();
  (void)done;
}

// A running command's state, shared by its Process, its reader/watcher tasks and its sandbox.
struct Cmd : std::enable_shared_from_this<Cmd> {
  explicit Cmd(asio::any_io_executor e)
      : ex(e), proc(e), in(e), out(e), err(e), deadline(e), events_note(e), room_note(e), stdin_note(e) {}

  asio::any_io_executor ex;
  std::string sandbox_id;
  bp::process proc;
  int pid = -1;
  asio::writable_pipe in;
  asio::readable_pipe out;
  asio::readable_pipe err;
  asio::steady_timer deadline;
  milliseconds timeout{0};

  std::deque<ExecEvent> events;
  std::size_t queued = 0;
  Notifier events_note;
  Notifier room_note;
  bool out_done = false, err_done = false, exited = false, finished = false, ended = false;
  bool detached = false;  // the Process is gone: drain without queueing
  bool timed_out = false;
  bool killed = false;  // by kill() of the sandbox
  int status = -1;

  bool stdin_busy = false, stdin_closed = false;
  Notifier stdin_note;
  std::function<void()> on_exit;  // after the reap: the sandbox forgets it

  void push(ExecEvent e) {
    if (detached) return;
    queued += e.data.size();
    events.push_back(std::move(e));
    events_note.notify();
  }

  // SIGKILL to the bwrap child (still unreaped, so the pid is its own): the namespace follows.
  void kill_all() {
    if (!exited && pid > 0) ::kill(pid, SIGKILL);
  }

  // The host pid of the namespace's init (bwrap's child), 0 while there is none.
  int init_pid() const {
    auto text = read_small("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
    if (!text) return 0;
    std::istringstream children(*text);
    int child = 0;
    children >> child;
    return child;
  }

  void close_stdin_pipe() {
    stdin_closed = true;
    boost::system::error_code ignored;
    in.close(ignored);
    stdin_note.notify();
  }

  void maybe_finish() {
    if (finished || !exited || !out_done || !err_done) return;
    finished = true;
    ExecEvent e;
    e.kind = ExecEvent::Kind::exited;
    e.pid = pid;
    if (WIFEXITED(status)) {
      e.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      e.exit_code = 128 + WTERMSIG(status);
    }
    e.timed_out = timed_out;
    if (timed_out) {
      e.error = "killed after the command's timeout of " + std::to_string(timeout.count()) + " ms";
    } else if (killed) {
      e.error = "the sandbox was killed";
    }
    if (!stdin_closed) close_stdin_pipe();
    if (!detached) {
      events.push_back(std::move(e));
      events_note.notify();
    }
  }
};

asio::awaitable<void> read_pipe(std::shared_ptr<Cmd> cmd, bool is_stdout) {
  auto& pipe = is_stdout ? cmd->out : cmd->err;
  std::vector<char> buf(kReadChunk);
  for (;;) {
    while (!cmd->detached && cmd->queued >= kQueueBytes) co_await cmd->room_note.wait();
    auto [ec, n] = co_await pipe.async_read_some(asio::buffer(buf), kTuple);
    if (n > 0) {
      ExecEvent e;
      e.kind = is_stdout ? ExecEvent::Kind::stdout_data : ExecEvent::Kind::stderr_data;
      e.pid = cmd->pid;
      e.data.assign(buf.data(), n);
      cmd->push(std::move(e));
    }
    if (ec) break;
  }
  boost::system::error_code ignored;
  pipe.close(ignored);
  (is_stdout ? cmd->out_done : cmd->err_done) = true;
  cmd->maybe_finish();
}

asio::awaitable<void> watch_exit(std::shared_ptr<Cmd> cmd) {
  auto [ec, code] = co_await cmd->proc.async_wait(kTuple);
  (void)code;
  if (!ec) {
    cmd->status = cmd->proc.native_exit_code();
  } else {
    asio::steady_timer poll(cmd->ex);
    for (;;) {
      int status = 0;
      auto r = ::waitpid(cmd->pid, &status, WNOHANG);
      if (r == cmd->pid) {
        cmd->status = status;
        break;
      }
      if (r < 0 && errno != EINTR) break;
      poll.expires_after(kPoll);
      co_await poll.async_wait(kTuple);
    }
  }
  cmd->proc.detach();  // reaped: no later kill may hit a reused pid
  cmd->exited = true;
  cmd->deadline.cancel();
  if (cmd->on_exit) std::exchange(cmd->on_exit, nullptr)();
  cmd->maybe_finish();
}

asio::awaitable<void> enforce_deadline(std::shared_ptr<Cmd> cmd) {
  cmd->deadline.expires_after(cmd->timeout);
  auto [ec] = co_await cmd->deadline.async_wait(kTuple);
  if (ec || cmd->exited) co_return;
  cmd->timed_out = true;
  cmd->kill_all();
}

asio::awaitable<Result<void>> write_stdin(std::shared_ptr<Cmd> cmd, std::string data) {
  while (cmd->stdin_busy && !cmd->stdin_closed) co_await cmd->stdin_note.wait();
  if (cmd->stdin_closed) co_return err(Errc::conflict, "the command's stdin is closed");
  cmd->stdin_busy = true;
  auto [ec, n] = co_await asio::async_write(cmd->in, asio::buffer(data), kTuple);
  (void)n;
  cmd->stdin_busy = false;
  cmd->stdin_note.notify();
  if (ec) co_return err(Errc::conflict, "cannot write to the command's stdin: " + ec.message());
  co_return Result<void>();
}

asio::awaitable<void> feed_stdin(std::shared_ptr<Cmd> cmd, std::string data) {
  if (!data.empty()) {
    auto r = co_await write_stdin(cmd, std::move(data));
    if (!r) spdlog::debug("sandbox[{}]: stdin: {}", cmd->sandbox_id, r.error().message);
  }
  while (cmd->stdin_busy && !cmd->stdin_closed) co_await cmd->stdin_note.wait();
  if (!cmd->stdin_closed) cmd->close_stdin_pipe();
}

void spawn_logged(asio::any_io_executor ex, asio::awaitable<void> task, std::string what) {
  asio::co_spawn(ex, std::move(task), [what = std::move(what)](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      spdlog::error("sandbox: {} failed: {}", what, x.what());
    } catch (...) {
      spdlog::error("sandbox: {} failed", what);
    }
  });
}

class LocalProcess final : public Process {
 public:
  explicit LocalProcess(std::shared_ptr<Cmd> cmd) : cmd_(std::move(cmd)) {}
  ~LocalProcess() override {
    cmd_->detached = true;
    cmd_->events.clear();
    cmd_->queued = 0;
    cmd_->room_note.notify();
  }
  int pid() const noexcept override { return cmd_->pid; }

  asio::awaitable<Result<std::optional<ExecEvent>>> next() override {
    auto cmd = cmd_;
    while (cmd->events.empty() && !cmd->ended) co_await cmd->events_note.wait();
    if (cmd->events.empty()) co_return std::optional<ExecEvent>();
    ExecEvent e = std::move(cmd->events.front());
    cmd->events.pop_front();
    cmd->queued -= e.data.size();
    cmd->room_note.notify();
    if (e.kind == ExecEvent::Kind::exited) cmd->ended = true;
    co_return std::optional<ExecEvent>(std::move(e));
  }

  asio::awaitable<Result<void>> send_stdin(std::string data) override {
    return write_stdin(cmd_, std::move(data));
  }

  asio::awaitable<Result<void>> close_stdin() override {
    auto cmd = cmd_;
    while (cmd->stdin_busy && !cmd->stdin_closed) co_await cmd->stdin_note.wait();
    if (!cmd->stdin_closed) cmd->close_stdin_pipe();
    co_return Result<void>();
  }

  asio::awaitable<Result<void>> signal(int sig) override {
    auto cmd = cmd_;
    if (sig <= 0 || sig >= NSIG) co_return err(Errc::bad_request, "invalid signal " + std::to_string(sig));
    if (sig == SIGKILL) {
      if (cmd->exited) co_return err(Errc::not_found, "the command has ended");
      cmd->kill_all();
      co_return Result<void>();
    }
    // Right after start the namespace may not exist yet: wait for it (bounded).
    asio::steady_timer timer(cmd->ex);
    const auto until = Clock::now() + kSignalWait;
    for (;;) {
      if (cmd->exited) co_return err(Errc::not_found, "the command has ended");
      int init = cmd->init_pid();
      if (init > 0 && ::kill(-init, sig) == 0) co_return Result<void>();
      if (Clock::now() >= until) co_return err(Errc::not_found, "the command's processes are gone");
      timer.expires_after(kPoll);
      co_await timer.async_wait(kTuple);
    }
  }

 private:
  std::shared_ptr<Cmd> cmd_;
};

// --- sandboxes ---

struct Sandbox {
  explicit Sandbox(asio::any_io_executor ex) : timer(std::move(ex)) {}
  Info info;
  std::string dir, work, tmp;
  bool network = false;
  std::map<std::string, std::string> env;
  std::string pids_cgroup, memory_cgroup;
  std::vector<std::string> cgroups;
  std::chrono::milliseconds timeout{0};
  asio::steady_timer timer;
  Clock::time_point end{};
  std::set<std::shared_ptr<Cmd>> cmds;
  bool dying = false;
};

json meta_of(const Info& info, milliseconds timeout, bool network, const std::vector<std::string>& cgroups) {
  return json{{"id", info.id},
              {"backend", "local"},
              {"template", info.template_id},
              {"owner", info.owner},
              {"metadata", info.metadata},
              {"created", info.started_at},
              {"end_at", info.end_at},
              {"timeout_ms", timeout.count()},
              {"network", network},
              {"cgroups", cgroups},
              {"agentd_pid", ::getpid()}};
}

std::optional<Info> info_of(const json& j) {
  if (!j.is_object()) return std::nullopt;
  Info i;
  i.id = j.value("id", "");
  if (!valid_id(i.id)) return std::nullopt;
  i.backend = "local";
  i.template_id = j.value("template", "");
  i.state = "running";
  i.owner = j.value("owner", "");
  i.started_at = j.value("created", TimeMs{0});
  i.end_at = j.value("end_at", TimeMs{0});
  if (auto m = j.find("metadata"); m != j.end() && m->is_object()) {
    for (auto& [k, v] : m->items()) {
      if (v.is_string()) i.metadata[k] = v.get<std::string>();
    }
  }
  return i;
}

struct Leftover {
  Info info;
  std::vector<std::string> cgroups;
};

std::optional<Leftover> read_leftover(const std::string& root, const std::string& id) {
  auto text = read_small(root + "/" + id + "/" + kMetaFile);
  if (!text) return std::nullopt;
  auto j = json::parse(*text, nullptr, false);
  auto info = info_of(j);
  if (!info || info->id != id) return std::nullopt;
  Leftover l{*info, {}};
  if (auto c = j.find("cgroups"); c != j.end() && c->is_array()) {
    for (const auto& d : *c) {
      if (d.is_string() && cgroup_path_of(d.get<std::string>(), id)) l.cgroups.push_back(d.get<std::string>());
    }
  }
  return l;
}

class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(asio::any_io_executor ex, const Config& config, core::Registry& metrics)
      : ex_(std::move(ex)),
        config_(config.local),
        pool_(2, 256),
        created_(metrics.counter("agentd_sandbox_local_created_total", "Local sandboxes created")),
        commands_(metrics.counter("agentd_sandbox_local_commands_total", "Commands started in local sandboxes")),
        timeouts_(metrics.counter("agentd_sandbox_local_command_timeouts_total",
                                  "Commands in local sandboxes killed at their deadline")),
        alive_(metrics.gauge("agentd_sandbox_local_alive", "Local sandboxes alive")) {
    plan_ = plan_cgroups();
    if (plan_.pids_parent.empty() || plan_.memory_parent.empty()) {
      spdlog::warn(
          "sandbox: no writable cgroup for {}; per-command rlimits instead (RLIMIT_NPROC counts all "
          "processes of agentd's uid)",
          plan_.pids_parent.empty() && plan_.memory_parent.empty() ? "pids and memory"
          : plan_.pids_parent.empty()                               ? "pids"
                                                                    : "memory");
      if (plan_.pids_parent.empty() && ::geteuid() == 0) {
        spdlog::warn("sandbox: agentd runs as root, which RLIMIT_NPROC does not bind: only command "
                     "deadlines bound the number of processes in a sandbox");
      }
    }
    spdlog::info("sandbox: local backend in {} (cgroups: pids {}, memory {})", config_.root_dir,
                 plan_.pids_parent.empty() ? "-" : plan_.pids_parent,
                 plan_.memory_parent.empty() ? "-" : plan_.memory_parent);
    if (::access("/usr/bin/bash", X_OK) != 0 && ::access("/bin/bash", X_OK) != 0) {
      shell_ = {"/bin/sh", "-c"};
    } else if (config_.login_shell) {
      shell_ = {"/bin/bash", "-l", "-c"};
    } else {
      shell_ = {"/bin/bash", "-c"};
    }
  }

  // Like a crash, minus running processes: files and cgroups stay for list()/kill().
  void shutdown() {
    for (auto& [id, sb] : sandboxes_) {
      sb->dying = true;
      sb->timer.cancel();
      for (const auto& c : sb->cmds) c->kill_all();
    }
    sandboxes_.clear();
    alive_.set(0);
  }

  template <class T, class F>
  asio::awaitable<Result<T>> on_pool(F fn) {
    auto r = co_await pool_.run(std::move(fn));
    if (!r) co_return err(Errc::unavailable, "too many sandbox file operations waiting");
    co_return std::move(*r);
  }

  std::shared_ptr<Sandbox> find(const std::string& id) {
    auto it = sandboxes_.find(id);
    return it == sandboxes_.end() ? nullptr : it->second;
  }

  static asio::awaitable<Result<Info>> create(std::shared_ptr<Core> self, CreateOptions o);
  static asio::awaitable<Result<void>> kill(std::shared_ptr<Core> self, std::string id);
  static asio::awaitable<Result<void>> set_timeout(std::shared_ptr<Core> self, std::string id, milliseconds t);
  static asio::awaitable<Result<std::vector<Info>>> list(std::shared_ptr<Core> self);
  static asio::awaitable<Result<std::unique_ptr<Process>>> start(std::shared_ptr<Core> self, std::string id,
                                                                 ExecOptions o);
  static asio::awaitable<void> expire(std::weak_ptr<Core> weak, std::shared_ptr<Sandbox> sb);

  asio::any_io_executor ex_;
  LocalConfig config_;
  core::BlockingPool pool_;
  core::Counter& created_;
  core::Counter& commands_;
  core::Counter& timeouts_;
  core::Gauge& alive_;
  CgroupPlan plan_;
  std::vector<std::string> shell_;
  std::map<std::string, std::shared_ptr<Sandbox>> sandboxes_;

 private:
  std::vector<std::string> bwrap_args(const Sandbox& sb, const ExecOptions& o, const std::string& cwd) const;
  void arm(const std::shared_ptr<Sandbox>& sb);
};

struct Prepared {
  std::vector<std::string> cgroups;
  std::string pids, memory;
};

asio::awaitable<Result<Info>> Core::create(std::shared_ptr<Core> self, CreateOptions o) {
  if (o.timeout <= milliseconds(0)) co_return err(Errc::bad_request, "the timeout must be positive");
  auto sb = std::make_shared<Sandbox>(self->ex_);
  const std::string id = random_id();
  sb->info.id = id;
  sb->info.backend = "local";
  sb->info.template_id = o.template_id;
  sb->info.state = "running";
  sb->info.started_at = now_ms();
  sb->info.end_at = sb->info.started_at + o.timeout.count();
  sb->info.metadata = std::move(o.metadata);
  sb->info.owner = std::move(o.owner);
  sb->dir = self->config_.root_dir + "/" + id;
  sb->work = sb->dir + "/work";
  sb->tmp = sb->dir + "/tmp";
  sb->network = o.network && self->config_.allow_network;
  if (o.network && !self->config_.allow_network) {
    spdlog::info("sandbox[{}]: network asked for but not allowed (sandbox.local.allow_network)", id);
  }
  sb->env = std::move(o.env);
  for (const auto& [k, v] : sb->env) {
    if (k.empty() || k.find_first_of("=\0", 0, 2) != std::string::npos || v.find('\0') != std::string::npos) {
      co_return err(Errc::bad_request, "invalid environment variable name or value");
    }
  }
  sb->timeout = o.timeout;

  // Directories, cgroups and the metadata file, off the loop.
  auto plan = self->plan_;
  auto limits = self->config_;
  // (GCC 12: a lambda temporary inside co_await's arguments is mis-copied; hence locals.)
  auto prepare = [sb, plan, limits]() -> Result<Prepared> {
    std::error_code ec;
    std::filesystem::create_directories(limits.root_dir, ec);
    if (ec) return err(Errc::internal, "cannot create " + limits.root_dir + ": " + ec.message());
    if (::mkdir(sb->dir.c_str(), 0700) != 0) return errno_error(errno, "cannot create " + sb->dir);
    if (::mkdir(sb->work.c_str(), 0755) != 0 || ::mkdir(sb->tmp.c_str(), 01777) != 0 ||
        ::chmod(sb->tmp.c_str(), 01777) != 0) {
      auto e = errno_error(errno, "cannot create the work dir");
      remove_dir(sb->dir);
      return e;
    }
    Prepared p;
    p.cgroups = make_cgroups(plan, sb->info.id, limits, p.pids, p.memory);
    auto meta = meta_of(sb->info, sb->timeout, sb->network, p.cgroups).dump();
    if (!write_file_atomic(sb->dir + "/" + kMetaFile, meta)) {
      auto e = errno_error(errno, "cannot write the sandbox's metadata");
      for (const auto& d : p.cgroups) ::rmdir(d.c_str());
      remove_dir(sb->dir);
      return e;
    }
    return p;
  };
  auto made = co_await self->on_pool<Prepared>(std::move(prepare));
  if (!made) co_return made.error();
  sb->cgroups = std::move(made->cgroups);
  sb->pids_cgroup = std::move(made->pids);
  sb->memory_cgroup = std::move(made->memory);
  self->sandboxes_[id] = sb;
  self->created_.inc();
  self->alive_.set(static_cast<double>(self->sandboxes_.size()));
  self->arm(sb);
  spawn_logged(self->ex_, expire(self, sb), "sandbox timeout");
  spdlog::info("sandbox[{}]: created (owner {}, timeout {} ms, network {})", id, sb->info.owner,
               o.timeout.count(), sb->network);
  co_return sb->info;
}

void Core::arm(const std::shared_ptr<Sandbox>& sb) {
  sb->end = Clock::now() + milliseconds(sb->info.end_at - now_ms());
  sb->timer.expires_at(sb->end);
}

asio::awaitable<void> Core::expire(std::weak_ptr<Core> weak, std::shared_ptr<Sandbox> sb) {
  for (;;) {
    co_await sb->timer.async_wait(kTuple);
    if (sb->dying) co_return;
    if (Clock::now() >= sb->end) break;
  }
  auto self = weak.lock();
  if (!self) co_return;
  spdlog::info("sandbox[{}]: timed out; killing it", sb->info.id);
  auto r = co_await kill(self, sb->info.id);
  if (!r) spdlog::warn("sandbox[{}]: kill at timeout: {}", sb->info.id, r.error().message);
}

asio::awaitable<Result<void>> Core::kill(std::shared_ptr<Core> self, std::string id) {
  if (!valid_id(id)) co_return err(Errc::not_found, "no sandbox with this id");
  std::vector<std::string> cgroups;
  std::string dir = self->config_.root_dir + "/" + id;
  auto sb = self->find(id);
  if (sb) {
    sb->dying = true;
    sb->timer.cancel();
    self->sandboxes_.erase(id);
    self->alive_.set(static_cast<double>(self->sandboxes_.size()));
    for (const auto& c : sb->cmds) {
      c->killed = true;
      c->kill_all();
    }
    cgroups = sb->cgroups;
  } else {
    // What an earlier run left: its metadata names the cgroups.
    auto root = self->config_.root_dir;
    auto read = [root, id]() -> Result<std::optional<Leftover>> { return read_leftover(root, id); };
    auto left = co_await self->on_pool<std::optional<Leftover>>(std::move(read));
    if (!left) co_return left.error();
    if (!*left) co_return err(Errc::not_found, "no sandbox with this id");
    cgroups = (*left)->cgroups;
  }
  bool cgroups_gone = co_await destroy_cgroups(cgroups);
  if (sb) {
    // Without cgroups: wait (bounded) until the killed commands are reaped.
    asio::steady_timer timer(self->ex_);
    const auto until = Clock::now() + kKillWait;
    while (Clock::now() < until &&
           std::any_of(sb->cmds.begin(), sb->cmds.end(), [](const auto& c) { return !c->exited; })) {
      timer.expires_after(kPoll);
      co_await timer.async_wait(kTuple);
    }
  }
  auto remove = [dir]() -> Result<void> {
    if (!remove_dir(dir)) return err(Errc::internal, "the sandbox's files could not all be removed");
    return {};
  };
  auto removed = co_await self->on_pool<void>(std::move(remove));
  if (!removed) co_return removed.error();
  if (!cgroups_gone) co_return err(Errc::internal, "the sandbox's cgroups could not be removed");
  spdlog::info("sandbox[{}]: killed{}", id, sb ? "" : " (left by an earlier run)");
  co_return Result<void>();
}

asio::awaitable<Result<void>> Core::set_timeout(std::shared_ptr<Core> self, std::string id, milliseconds t) {
  auto sb = self->find(id);
  if (!sb) co_return err(Errc::not_found, "no sandbox with this id");
  if (t <= milliseconds(0)) co_return err(Errc::bad_request, "the timeout must be positive");
  sb->timeout = t;
  sb->info.end_at = now_ms() + t.count();
  self->arm(sb);  // cancels the wait: expire() looks again
  auto meta = meta_of(sb->info, sb->timeout, sb->network, sb->cgroups).dump();
  auto path = sb->dir + "/" + kMetaFile;
  auto write = [meta, path]() -> Result<void> {
    if (!write_file_atomic(path, meta)) return errno_error(errno, "cannot update the sandbox's metadata");
    return {};
  };
  co_return co_await self->on_pool<void>(std::move(write));
}

asio::awaitable<Result<std::vector<Info>>> Core::list(std::shared_ptr<Core> self) {
  auto root = self->config_.root_dir;
  auto scan = [root]() -> Result<std::vector<Info>> {
    std::vector<Info> out;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
      auto id = it->path().filename().string();
      if (!valid_id(id)) continue;
      if (auto l = read_leftover(root, id)) out.push_back(l->info);
    }
    return out;
  };
  auto found = co_await self->on_pool<std::vector<Info>>(std::move(scan));
  if (!found) co_return found.error();
  for (auto& i : *found) {
    if (auto sb = self->find(i.id)) i = sb->info;
  }
  co_return std::move(*found);
}

std::vector<std::string> Core::bwrap_args(const Sandbox& sb, const ExecOptions& o, const std::string& cwd) const {
  std::vector<std::string> a = {"--unshare-all", "--unshare-user", "--uid", "1000", "--gid", "1000",
                                "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                                "--hostname", "sandbox"};
  if (sb.network) a.push_back("--share-net");
  auto covered = [&](const std::string& p) {
    return std::any_of(config_.read_only.begin(), config_.read_only.end(), [&](const std::string& r) {
      return p == r || (p.starts_with(r) && (r == "/" || p[r.size()] == '/'));
    });
  };
  for (const auto& p : config_.read_only) {
    a.insert(a.end(), {"--ro-bind-try", p, p});
  }
  for (const char* p : {"/bin", "/lib", "/lib64", "/sbin", "/lib32", "/libx32"}) {
    struct stat st {};
    if (::lstat(p, &st) != 0 || covered(p)) continue;
    if (S_ISLNK(st.st_mode)) {
      std::array<char, 256> target{};
      auto n = ::readlink(p, target.data(), target.size() - 1);
      if (n > 0) a.insert(a.end(), {"--symlink", std::string(target.data(), static_cast<std::size_t>(n)), p});
    } else if (S_ISDIR(st.st_mode)) {
      a.insert(a.end(), {"--ro-bind", p, p});
    }
  }
  a.insert(a.end(), {"--proc", "/proc", "--dev", "/dev", "--bind", sb.work, std::string(kHome), "--bind",
                     sb.tmp, "/tmp", "--chdir", cwd, "--clearenv", "--setenv", "PATH", kPath, "--setenv",
                     "HOME", std::string(kHome), "--setenv", "USER", "user"});
  for (const auto& [k, v] : sb.env) a.insert(a.end(), {"--setenv", k, v});
  for (const auto& [k, v] : o.env) a.insert(a.end(), {"--setenv", k, v});
  a.push_back("--");
  a.insert(a.end(), shell_.begin(), shell_.end());
  a.push_back(o.cmd);
  return a;
}

asio::awaitable<Result<std::unique_ptr<Process>>> Core::start(std::shared_ptr<Core> self, std::string id,
                                                              ExecOptions o) {
  auto sb = self->find(id);
  if (!sb) co_return err(Errc::not_found, "no sandbox with this id");
  if (o.cmd.empty() || o.cmd.find('\0') != std::string::npos) {
    co_return err(Errc::bad_request, "the command is empty or contains a NUL byte");
  }
  for (const auto& [k, v] : o.env) {
    if (k.empty() || k.find_first_of("=\0", 0, 2) != std::string::npos || v.find('\0') != std::string::npos) {
      co_return err(Errc::bad_request, "invalid environment variable name or value");
    }
  }
  if (o.timeout <= milliseconds(0)) co_return err(Errc::bad_request, "the timeout must be positive");
  std::string cwd(kHome);
  if (!o.cwd.empty()) {
    if (o.cwd.find('\0') != std::string::npos || o.cwd.size() > kMaxPath) {
      co_return err(Errc::bad_request, "invalid cwd");
    }
    cwd = o.cwd.starts_with('/') ? o.cwd : std::string(kHome) + "/" + o.cwd;
  }
  auto args = self->bwrap_args(*sb, o, cwd);

  ChildSetup setup;
  Fd pids_fd, memory_fd;
  if (!sb->pids_cgroup.empty()) pids_fd = Fd(::open((sb->pids_cgroup + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
  if (!sb->memory_cgroup.empty() && sb->memory_cgroup != sb->pids_cgroup) {
    memory_fd = Fd(::open((sb->memory_cgroup + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
  }
  if ((!sb->pids_cgroup.empty() && !pids_fd) ||
      (!sb->memory_cgroup.empty() && sb->memory_cgroup != sb->pids_cgroup && !memory_fd)) {
    co_return err(Errc::internal, std::string("cannot open the sandbox's cgroup: ") + ::strerror(errno));
  }
  setup.cgroup_procs = {pids_fd.get(), memory_fd.get()};
  const auto& c = self->config_;
  auto cpu = static_cast<rlim_t>(c.cpu_seconds);
  setup.add_limit(RLIMIT_CPU, cpu, cpu + 1);
  setup.add_limit(RLIMIT_FSIZE, static_cast<rlim_t>(c.max_file_size), static_cast<rlim_t>(c.max_file_size));
  setup.add_limit(RLIMIT_CORE, 0, 0);
  if (sb->memory_cgroup.empty()) {
    setup.add_limit(RLIMIT_AS, static_cast<rlim_t>(c.memory_bytes), static_cast<rlim_t>(c.memory_bytes));
  }
  if (sb->pids_cgroup.empty()) {
    setup.add_limit(RLIMIT_NPROC, static_cast<rlim_t>(c.max_processes), static_cast<rlim_t>(c.max_processes));
  }

  ignore_sigpipe_once();
  auto cmd = std::make_shared<Cmd>(self->ex_);
  cmd->sandbox_id = id;
  cmd->timeout = o.timeout;
  std::array<const char*, 2> envp{"PATH=/usr/bin:/bin", nullptr};
  bp::posix::default_launcher launcher;
  launcher.env = const_cast<char**>(envp.data());
  bp::error_code ec;
  std::string failure;
  try {
    bp::process_stdio stdio{cmd->in, cmd->out, cmd->err};
    if (stdio.in.ec || stdio.out.ec || stdio.err.ec) {
      failure = "cannot create pipes";
    } else {
      cmd->proc = launcher(self->ex_, ec, c.bwrap, args, stdio, setup);
      if (ec) failure = ec.message();
    }
  } catch (const std::exception& e) {
    failure = e.what();
    if (launcher.pid > 0 && !cmd->proc.is_open()) {
      ::kill(launcher.pid, SIGKILL);
      int status = 0;
      ::waitpid(launcher.pid, &status, 0);  // just killed: returns at once
    }
  }
  if (!failure.empty()) {
    if (launcher.pid > 0 && !cmd->proc.is_open()) {
      int status = 0;
      ::waitpid(launcher.pid, &status, 0);  // an exec that failed: the child _exits at once
    }
    co_return err(Errc::internal, "cannot start " + c.bwrap + ": " + failure);
  }
  cmd->pid = cmd->proc.id();
  self->commands_.inc();
  sb->cmds.insert(cmd);
  ExecEvent started;
  started.kind = ExecEvent::Kind::started;
  started.pid = cmd->pid;
  cmd->push(std::move(started));
  spawn_logged(self->ex_, read_pipe(cmd, true), "stdout reader");
  spawn_logged(self->ex_, read_pipe(cmd, false), "stderr reader");
  spawn_logged(self->ex_, watch_exit(cmd), "exit watcher");
  spawn_logged(self->ex_, enforce_deadline(cmd), "command deadline");
  if (o.stdin_data) spawn_logged(self->ex_, feed_stdin(cmd, std::move(*o.stdin_data)), "stdin writer");
  // Once reaped, the sandbox (if still there) forgets the command.
  cmd->on_exit = [weak_sb = std::weak_ptr<Sandbox>(sb), weak_cmd = std::weak_ptr<Cmd>(cmd),
                  timeouts = &self->timeouts_] {
    auto s = weak_sb.lock();
    auto me = weak_cmd.lock();
    if (me && me->timed_out) timeouts->inc();
    if (s && me) s->cmds.erase(me);
  };
  co_return std::unique_ptr<Process>(std::make_unique<LocalProcess>(cmd));
}

class LocalBackend final : public Backend {
 public:
  LocalBackend(asio::any_io_executor ex, const Config& config, core::Registry& metrics)
      : core_(std::make_shared<Core>(std::move(ex), config, metrics)) {}
  ~LocalBackend() override { core_->shutdown(); }

  std::string_view name() const noexcept override { return "local"; }
  asio::awaitable<Result<Info>> create(CreateOptions options) override {
    return Core::create(core_, std::move(options));
  }
  asio::awaitable<Result<void>> kill(std::string id) override { return Core::kill(core_, std::move(id)); }
  asio::awaitable<Result<void>> set_timeout(std::string id, milliseconds timeout) override {
    return Core::set_timeout(core_, std::move(id), timeout);
  }
  asio::awaitable<Result<std::vector<Info>>> list() override { return Core::list(core_); }
  asio::awaitable<Result<void>> pause(std::string) override { return unsupported(); }
  asio::awaitable<Result<void>> resume(std::string) override { return unsupported(); }

  asio::awaitable<Result<std::unique_ptr<Process>>> start(std::string id, ExecOptions options) override {
    return Core::start(core_, std::move(id), std::move(options));
  }

  asio::awaitable<Result<std::string>> read_file(std::string id, std::string path, std::size_t max_bytes) override {
    auto core = core_;
    auto sb = core->find(id);
    if (!sb) co_return err(Errc::not_found, "no sandbox with this id");
    auto work = sb->work;
    auto job = [work, path = std::move(path), max_bytes]() { return read_at(work, path, max_bytes); };
    co_return co_await core->on_pool<std::string>(std::move(job));
  }
  asio::awaitable<Result<void>> write_file(std::string id, std::string path, std::string data) override {
    auto core = core_;
    auto sb = core->find(id);
    if (!sb) co_return err(Errc::not_found, "no sandbox with this id");
    auto work = sb->work;
    auto limits = core->config_;
    auto job = [work, path = std::move(path), data = std::move(data), limits]() {
      return write_at(work, path, data, limits);
    };
    co_return co_await core->on_pool<void>(std::move(job));
  }
  asio::awaitable<Result<std::vector<FileEntry>>> list_files(std::string id, std::string path, int depth) override {
    auto core = core_;
    auto sb = core->find(id);
    if (!sb) co_return err(Errc::not_found, "no sandbox with this id");
    auto work = sb->work;
    auto job = [work, path = std::move(path), depth]() { return list_at(work, path, depth); };
    co_return co_await core->on_pool<std::vector<FileEntry>>(std::move(job));
  }
  asio::awaitable<Result<void>> remove(std::string id, std::string path) override {
    auto core = core_;
    auto sb = core->find(id);
    if (!sb) co_return err(Errc::not_found, "no sandbox with this id");
    auto work = sb->work;
    auto job = [work, path = std::move(path)]() { return remove_at(work, path); };
    co_return co_await core->on_pool<void>(std::move(job));
  }
  std::optional<std::string> desktop_url(const std::string&) const override { return std::nullopt; }

 private:
  static asio::awaitable<Result<void>> unsupported() {
    co_return err(Errc::conflict, "not supported by the local backend");
  }
  std::shared_ptr<Core> core_;
};

}  // namespace

std::unique_ptr<Backend> make_local_backend(boost::asio::any_io_executor ex, const Config& config,
                                            core::Registry& metrics) {
  return std::make_unique<LocalBackend>(std::move(ex), config, metrics);
}

}  // namespace agentd::sandbox
