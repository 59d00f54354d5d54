// TLS and mTLS for OTLP/HTTP and OTLP/gRPC against real servers with a test
// CA generated at test time (openssl CLI, temp dir; no key is committed).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "exporter/otlp_grpc_sender.h"
#include "exporter/otlp_http_sender.h"
#include "tests/exporter/test_spans.h"
#include "tests/support/otlp_http_test_server.h"
#include "tests/support/otlp_test_server.h"

namespace kspan {
namespace {

using testing::HttpServerTls;
using testing::OtlpHttpTestServer;

const testing::TestPki& Pki() {
  static const testing::TestPki pki = testing::MakeTestPki(
      (std::filesystem::temp_directory_path() / ("kspan-pki-" + std::to_string(::getpid())))
          .string());
  return pki;
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

SpanBatch One() { return SpanBatch{{testing::MakeSpan(1)}}; }
auto Far() { return std::chrono::steady_clock::now() + std::chrono::seconds(10); }

ExportResult HttpSend(const std::string& url, const std::string& ca, TlsOptions tls = {}) {
  OtlpGrpcOptions o;
  o.endpoint = url;
  o.protocol = "http/protobuf";
  o.certificate_file = ca;
  o.tls = tls;
  auto s = OtlpHttpSender::Create(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return (*s)->Send(One(), Far());
}

TEST(TlsTest, HttpsWithTestCa) {
  OtlpHttpTestServer server(HttpServerTls{Pki().server_cert, Pki().server_key, ""});
  EXPECT_EQ(HttpSend(server.base_url(), Pki().ca_cert).outcome, ExportResult::Outcome::kSuccess);
  // The wrong CA: verification fails, a configuration error (permanent).
  EXPECT_EQ(HttpSend(server.base_url(), Pki().other_ca_cert).outcome,
            ExportResult::Outcome::kPermanent);
  // Server name override: the certificate names otlp.test too.
  EXPECT_EQ(HttpSend(server.base_url(), Pki().ca_cert, {.server_name = "otlp.test"}).outcome,
            ExportResult::Outcome::kSuccess);
  EXPECT_EQ(HttpSend(server.base_url(), Pki().ca_cert, {.server_name = "wrong.test"}).outcome,
            ExportResult::Outcome::kPermanent);
  EXPECT_EQ(server.spans().size(), 2u);
}

TEST(TlsTest, HttpsMutualTls) {
  OtlpHttpTestServer server(
      HttpServerTls{Pki().server_cert, Pki().server_key, Pki().ca_cert});
  // Without a client certificate the server refuses the handshake.
  EXPECT_NE(HttpSend(server.base_url(), Pki().ca_cert).outcome, ExportResult::Outcome::kSuccess);
  EXPECT_EQ(HttpSend(server.base_url(), Pki().ca_cert,
                     {.cert_file = Pki().client_cert, .key_file = Pki().client_key})
                .outcome,
            ExportResult::Outcome::kSuccess);
  EXPECT_EQ(server.spans().size(), 1u);
}

TEST(TlsTest, GrpcTlsAndMutualTls) {
  grpc::SslServerCredentialsOptions opts(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  opts.pem_root_certs = Read(Pki().ca_cert);
  opts.pem_key_cert_pairs.push_back({Read(Pki().server_key), Read(Pki().server_cert)});
  testing::OtlpTestServer server(0, grpc::SslServerCredentials(opts));
  OtlpGrpcOptions o;
  o.endpoint = "https://127.0.0.1:" + std::to_string(server.port());
  o.certificate_file = Pki().ca_cert;
  o.timeout = std::chrono::milliseconds(3000);
  {
    auto s = OtlpGrpcSender::Create(o);
    ASSERT_TRUE(s.ok());
    EXPECT_NE((*s)->Send(One(), Far()).outcome, ExportResult::Outcome::kSuccess);
  }
  o.tls = {.cert_file = Pki().client_cert, .key_file = Pki().client_key, .server_name = "otlp.test"};
  auto s = OtlpGrpcSender::Create(o);
  ASSERT_TRUE(s.ok()) << s.status();
  const auto r = (*s)->Send(One(), Far());
  EXPECT_EQ(r.outcome, ExportResult::Outcome::kSuccess) << r.code << " " << r.message;
  EXPECT_EQ(server.spans().size(), 1u);
}

}  // namespace
}  // namespace kspan
