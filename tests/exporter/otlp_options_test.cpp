#include "exporter/otlp_options.h"

#include <gtest/gtest.h>

#include <map>

#include "exporter/auth.h"

namespace kspan {
namespace {

using std::chrono::milliseconds;

// A fake environment.
EnvLookup Env(std::map<std::string, std::string> vars) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* name) -> const char* {
    auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

TEST(OtlpOptionsTest, EmptyEnvironmentKeepsDefaults) {
  OtlpGrpcOptions defaults;
  defaults.endpoint = "http://from-config:4317";
  defaults.headers = {{"a", "1"}};
  auto o = OtlpGrpcOptionsFromEnv(Env({}), defaults);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->endpoint, "http://from-config:4317");
  EXPECT_EQ(o->timeout, milliseconds(10000));
  EXPECT_EQ(o->compression, "none");
  EXPECT_EQ(o->headers, defaults.headers);
  // Empty values count as unset.
  auto empty = OtlpGrpcOptionsFromEnv(Env({{"OTEL_EXPORTER_OTLP_ENDPOINT", ""}}), defaults);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->endpoint, "http://from-config:4317");
}

TEST(OtlpOptionsTest, ReadsEveryVariable) {
  auto o = OtlpGrpcOptionsFromEnv(Env({
      {"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"},
      {"OTEL_EXPORTER_OTLP_INSECURE", "TRUE"},
      {"OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr%3Dt , x-tenant = team%20a,"},
      {"OTEL_EXPORTER_OTLP_TIMEOUT", "2500"},
      {"OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"},
      {"OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"},
      {"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"},
  }));
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->endpoint, "collector:4317");
  EXPECT_TRUE(o->insecure);
  ASSERT_EQ(o->headers.size(), 2u);
  EXPECT_EQ(o->headers[0], (std::pair<std::string, std::string>{"api-key", "s3cr=t"}));
  EXPECT_EQ(o->headers[1], (std::pair<std::string, std::string>{"x-tenant", "team a"}));
  EXPECT_EQ(o->timeout, milliseconds(2500));
  EXPECT_EQ(o->compression, "gzip");
  EXPECT_EQ(o->certificate_file, "/etc/ca.pem");
}

TEST(OtlpOptionsTest, SignalSpecificVariablesWin) {
  auto o = OtlpGrpcOptionsFromEnv(Env({
      {"OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"},
      {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces:4317"},
      {"OTEL_EXPORTER_OTLP_TIMEOUT", "1000"},
      {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "3000"},
      {"OTEL_EXPORTER_OTLP_HEADERS", "a=generic"},
      {"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=traces"},
      {"OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true"},
      {"OTEL_EXPORTER_OTLP_INSECURE", "false"},
  }));
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->endpoint, "https://traces:4317");
  EXPECT_EQ(o->timeout, milliseconds(3000));
  EXPECT_EQ(o->headers, (std::vector<std::pair<std::string, std::string>>{{"b", "traces"}}));
  EXPECT_TRUE(o->insecure);
}

TEST(OtlpOptionsTest, EnvironmentHeadersOverrideConfiguredOnesByName) {
  OtlpGrpcOptions defaults;
  defaults.headers = {{"Authorization", "old"}, {"keep", "1"}};
  auto o = OtlpGrpcOptionsFromEnv(Env({{"OTEL_EXPORTER_OTLP_HEADERS", "authorization=new"}}),
                                  defaults);
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->headers, (std::vector<std::pair<std::string, std::string>>{
                            {"Authorization", "new"}, {"keep", "1"}}));
}

TEST(OtlpOptionsTest, ProtocolSelectsTheTransport) {
  for (const char* protocol : {"http/protobuf", "http/json", "grpc"}) {
    auto o = OtlpGrpcOptionsFromEnv(Env({{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol}}));
    ASSERT_TRUE(o.ok()) << o.status();
    EXPECT_EQ(o->protocol, protocol);
  }
}

TEST(OtlpOptionsTest, SignalEndpointIsTheFullUrlGenericIsABase) {
  auto o = OtlpGrpcOptionsFromEnv(Env({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"}}));
  ASSERT_TRUE(o.ok());
  EXPECT_FALSE(o->endpoint_is_full_url);
  o = OtlpGrpcOptionsFromEnv(Env({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"},
                                  {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/x"}}));
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->endpoint_is_full_url);
  EXPECT_EQ(o->endpoint, "http://t:4318/x");
}

TEST(OtlpOptionsTest, ClientCertificateAndKey) {
  auto o = OtlpGrpcOptionsFromEnv(Env({{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"},
                                       {"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "/k.pem"}}));
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->tls.cert_file, "/c.pem");
  EXPECT_EQ(o->tls.key_file, "/k.pem");
}

TEST(OtlpOptionsTest, InvalidValuesNameTheVariable) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"OTEL_EXPORTER_OTLP_PROTOCOL", "thrift"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector:21"},
      {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://"},
      {"OTEL_EXPORTER_OTLP_INSECURE", "yes"},
      {"OTEL_EXPORTER_OTLP_TIMEOUT", "10s"},
      {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-1"},
      {"OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"},
      {"OTEL_EXPORTER_OTLP_HEADERS", "novalue"},
      {"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "k=%zz"},
      {"OTEL_EXPORTER_OTLP_HEADERS", "=v"},
  };
  for (const auto& [name, value] : bad) {
    auto o = OtlpGrpcOptionsFromEnv(Env({{name, value}}));
    ASSERT_FALSE(o.ok()) << name << "=" << value;
    EXPECT_NE(o.status().message().find(name), std::string::npos) << o.status();
  }
}

TEST(OtlpOptionsTest, HeaderErrorsDoNotEchoTheValue) {
  auto o = OtlpGrpcOptionsFromEnv(Env({{"OTEL_EXPORTER_OTLP_HEADERS", "token=abc%"}}));
  ASSERT_FALSE(o.ok());
  EXPECT_EQ(o.status().message().find("abc"), std::string::npos) << o.status();
}

TEST(OtlpOptionsTest, ParseHeaders) {
  auto h = ParseOtlpHeaders("a=1,b=x%2Cy,c=");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*h, (std::vector<std::pair<std::string, std::string>>{
                    {"a", "1"}, {"b", "x,y"}, {"c", ""}}));
  EXPECT_FALSE(ParseOtlpHeaders("a=%4").ok());
}


TEST(OtlpOptionsTest, HeaderValuesCannotInjectHeaderLines) {
  EXPECT_TRUE(ValidateHeader("x-tenant", "team a\tb", false).ok());
  EXPECT_TRUE(ValidateHeader("x-tenant", "caf\xC3\xA9", false).ok());  // obs-text: HTTP allows
  EXPECT_FALSE(ValidateHeader("x-tenant", "caf\xC3\xA9", true).ok());  // gRPC does not
  EXPECT_TRUE(ValidateHeader("trace-bin", std::string("\x00\xFF", 2), true).ok());
  for (const std::string& value : {std::string("a\r\nX-Injected: 1"), std::string("a\nb"),
                                   std::string("a\rb"), std::string("a\0b", 3), std::string("\x7F")}) {
    for (bool grpc : {false, true}) {
      const auto s = ValidateHeader("x-tenant", value, grpc);
      EXPECT_FALSE(s.ok()) << grpc;
      EXPECT_EQ(s.message().find("Injected"), std::string::npos);
    }
  }
  EXPECT_FALSE(ValidateHeader("x tenant", "v", false).ok());
  EXPECT_FALSE(ValidateHeader("x:tenant", "v", false).ok());
  EXPECT_FALSE(ValidateHeader("", "v", false).ok());
  EXPECT_FALSE(ValidateHeader("x!tenant", "v", true).ok());  // a token, not a gRPC key
  EXPECT_TRUE(ValidateHeader("x!tenant", "v", false).ok());

  // An auth secret is a header value too: a token file or variable with a
  // line break in it would otherwise add a header of the secret's choosing.
  AuthOptions auth;
  auth.bearer_token_env = "TOKEN";
  const auto env = Env({{"TOKEN", "abc\r\nX-Injected: 1"}});
  const auto h = HeadersWithAuth({}, auth, env);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().message().find("abc"), std::string::npos) << h.status();
  EXPECT_FALSE(HeadersWithAuth({{"x-a", "1\n2"}}, {}, Env({})).ok());
  EXPECT_TRUE(HeadersWithAuth({{"x-a", "1 2"}}, {}, Env({})).ok());
}

}  // namespace
}  // namespace kspan
