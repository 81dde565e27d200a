// The in-process test server and its routes.
#include "component/fixture.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sstream>

#include "agentd/net/sse.hpp"

namespace agentd::test {

namespace asio = boost::asio;
using net::Request;
using net::Response;

net::ServerConfig ServerOptions::fast_defaults() {
  net::ServerConfig c;
  c.header_timeout = std::chrono::milliseconds(2000);
  c.idle_timeout = std::chrono::milliseconds(2000);
  c.sse_keepalive = std::chrono::milliseconds(200);
  c.access_log = false;
  return c;
}

TestServer::TestServer(ServerOptions options) {
  auto config = std::move(options.config);
  config.listeners = {{"127.0.0.1", 0, options.tls}};
  if (options.tls) {
    cert_ = make_test_cert();
    config.tls = net::TlsConfig{cert_->cert_file, cert_->key_file, config.tls ? config.tls->min_version : "1.2"};
  }
  std::vector<api::Client> clients{{"tester", kToken, {"*"}},
                                   {"limited", kLimitedToken, {"models:*"}}};
  api_ = std::make_unique<api::Api>(clients, config.cors, metrics_);
  api_->add_readiness_check("test", [] { return api::ReadyState{true, "fine"}; });
  add_routes();
  server_ = net::make_http_server(io_, config, api_->handler(), metrics_);
  port_ = server_->start().at(0).port;
  thread_ = std::thread([this] { io_.run(); });
}

TestServer::~TestServer() {
  io_.stop();
  if (thread_.joinable()) thread_.join();
}

std::optional<TlsClientOptions> TestServer::tls() const {
  if (!cert_) return std::nullopt;
  return TlsClientOptions{cert_->cert_file};
}

std::optional<double> TestServer::metric(const std::string& series) const {
  std::istringstream in(metrics_.render());
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nullopt;
}

std::optional<double> TestServer::wait_metric(const std::string& series, double min,
                                              std::chrono::milliseconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto v = metric(series);
  while ((!v || *v < min) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    v = metric(series);
  }
  return v;
}

void TestServer::shutdown(std::chrono::milliseconds grace) {
  asio::post(io_, [this, grace] { server_->shutdown(grace, [this] { done_.set_value(); }); });
}

bool TestServer::wait_shutdown_done(std::chrono::milliseconds timeout) {
  return done_future_.wait_for(timeout) == std::future_status::ready;
}

std::size_t TestServer::connections() {
  std::promise<std::size_t> p;
  asio::post(io_, [&] { p.set_value(server_->connections()); });
  return p.get_future().get();
}

namespace {
int int_param(const Request& req, const char* name, int fallback) {
  auto v = req.query_param(name);
  return v && !v->empty() ? std::stoi(*v) : fallback;
}
}  // namespace

void TestServer::add_routes() {
  auto& r = api_->router();
  r.add("POST", "/echo", [](Request& req) -> asio::awaitable<Response> {
    auto body = net::parse_json_object(req);
    if (body.error) co_return std::move(*body.error);
    co_return Response::json(200, {{"received", *body.value}});
  });
  r.add("GET", "/items/{id}", [](Request& req) -> asio::awaitable<Response> {
    co_return Response::json(200, {{"id", req.params.at("id")}, {"client", req.client}});
  });
  r.add("GET", "/slow", [this](Request& req) -> asio::awaitable<Response> {
    int ms = int_param(req, "ms", 100);
    ++slow_started;
    asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
    co_await t.async_wait(asio::use_awaitable);
    co_return Response::json(200, {{"slept", ms}});
  });
  // n events of `size` bytes, `delay` ms apart, ids 1..n.
  r.add("GET", "/events", [](Request& req) -> asio::awaitable<Response> {
    int n = int_param(req, "n", 3), size = int_param(req, "size", 8),
        delay = int_param(req, "delay", 0);
    co_return Response::stream(
        [n, size, delay](std::shared_ptr<net::SseStream> s) -> asio::awaitable<void> {
          asio::steady_timer t(co_await asio::this_coro::executor);
          for (int i = 1; i <= n; ++i) {
            std::string data(static_cast<std::size_t>(size), 'x');
            if (!s->push({std::to_string(i), "tick", data, std::nullopt})) co_return;
            t.expires_after(std::chrono::milliseconds(delay));
            co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
          }
        });
  });
  // One event, then hold the stream open until the connection side closes it.
  r.add("GET", "/events/hold", [this](Request&) -> asio::awaitable<Response> {
    co_return Response::stream([this](std::shared_ptr<net::SseStream> s) -> asio::awaitable<void> {
      s->push({"1", "hello", "{\"hi\":true}", std::nullopt});
      asio::steady_timer t(co_await asio::this_coro::executor);
      while (!s->closed()) {
        t.expires_after(std::chrono::milliseconds(10));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      producer_state = static_cast<int>(s->state());
    });
  });
  // 64KiB events every millisecond until the stream refuses them.
  r.add("GET", "/events/flood", [this](Request&) -> asio::awaitable<Response> {
    co_return Response::stream([this](std::shared_ptr<net::SseStream> s) -> asio::awaitable<void> {
      asio::steady_timer t(co_await asio::this_coro::executor);
      std::string data(64 * 1024, 'f');
      for (int i = 0; i < 100000; ++i) {
        if (!s->push({std::to_string(i), "", data, std::nullopt})) break;
        ++events_pushed;
        t.expires_after(std::chrono::milliseconds(1));
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      }
      producer_state = static_cast<int>(s->state());
    });
  });
}

}  // namespace agentd::test
