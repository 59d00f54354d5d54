// The rule that says, from its environment, whether a process exports its
// traces to this kspan: the variable forms the Node, Java, Python, Go and
// .NET SDKs read, IPv6 and container endpoints, and the three modes.
#include "userspace/otel_environment.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "tests/userspace/fake_proc.h"

namespace kspan {
namespace {

using ::kspan::testing::Environ;

// kspan's defaults: gRPC on 4317, HTTP on 4318.
EnvironmentVerdict Judge(std::initializer_list<std::string> vars,
                         EnvironmentEnrollMode mode = EnvironmentEnrollMode::kReceiver,
                         int grpc_port = 4317, int http_port = 4318) {
  return JudgeEnvironment(ParseOtelEnvironment(Environ(vars)),
                          EnvironmentRule{.mode = mode, .grpc_port = grpc_port, .http_port = http_port});
}

// Only the port of a host name counts; an address literal must be one of
// this host's (the test host's loopback is; a TEST-NET address is not).
TEST(EnvironmentRuleTest, AnAddressOfAnotherHostIsAnotherCollector) {
  EnvironmentRule rule{.grpc_port = 4317, .http_port = 4318, .is_host_address = IsAddressOfThisHost};
  auto judge = [&](const std::string& endpoint) {
    return JudgeEnvironment(
               ParseOtelEnvironment(kspan::testing::Environ({"OTEL_EXPORTER_OTLP_ENDPOINT=" + endpoint})),
               rule)
        .exports_here;
  };
  EXPECT_TRUE(judge("http://127.0.0.1:4318"));
  EXPECT_TRUE(judge("http://[::1]:4317"));
  EXPECT_TRUE(judge("http://0.0.0.0:4318"));
  EXPECT_TRUE(judge("http://collector.example:4318"));  // a name: the port decides
  EXPECT_FALSE(judge("http://192.0.2.10:4318"));
  EXPECT_FALSE(judge("http://[2001:db8::1]:4317"));
  EXPECT_TRUE(IsIpLiteral("10.88.0.1"));
  EXPECT_TRUE(IsIpLiteral("fe80::1"));
  EXPECT_FALSE(IsIpLiteral("host.containers.internal"));
  EXPECT_FALSE(IsAddressOfThisHost("192.0.2.10"));
  EXPECT_TRUE(IsAddressOfThisHost("127.0.0.53"));
}

TEST(OtlpEndpointPortTest, ReadsTheFormsSdksAccept) {
  EXPECT_EQ(OtlpEndpointPort("http://localhost:4318"), 4318);
  EXPECT_EQ(OtlpEndpointPort("http://127.0.0.1:4318/v1/traces"), 4318);
  EXPECT_EQ(OtlpEndpointPort("  http://localhost:4318/  "), 4318);
  EXPECT_EQ(OtlpEndpointPort("localhost:4317"), 4317);  // Go, gRPC, no scheme
  EXPECT_EQ(OtlpEndpointPort("[::1]:4317"), 4317);
  EXPECT_EQ(OtlpEndpointPort("http://[::1]:4318/v1/traces"), 4318);
  EXPECT_EQ(OtlpEndpointPort("http://[fe80::1%25eth0]:4318"), 4318);
  EXPECT_EQ(ParseOtlpEndpoint("http://[::1]:4318/v1/traces")->host, "::1");
  EXPECT_EQ(ParseOtlpEndpoint("http://[fe80::1%25eth0]:4318")->host, "fe80::1");
  EXPECT_EQ(ParseOtlpEndpoint("https://user:pw@collector:4318")->host, "collector");
  EXPECT_EQ(OtlpEndpointPort("http://172.17.0.1:4318"), 4318);  // the Docker bridge
  EXPECT_EQ(OtlpEndpointPort("http://host.docker.internal:4317"), 4317);
  EXPECT_EQ(OtlpEndpointPort("http://user:secret@collector:4318"), 4318);
  EXPECT_EQ(OtlpEndpointPort("https://otel.example.com"), 443);
  EXPECT_EQ(OtlpEndpointPort("http://otel.example.com/otlp"), 80);
  EXPECT_EQ(OtlpEndpointPort("unix:///run/otel.sock"), std::nullopt);
  EXPECT_EQ(OtlpEndpointPort("http://collector:99999"), std::nullopt);
  EXPECT_EQ(OtlpEndpointPort("http://collector:43x8"), std::nullopt);
  EXPECT_EQ(OtlpEndpointPort(""), std::nullopt);
}

TEST(OtelEnvironmentTest, ParsesOnlyTheVariablesItReadsAndTheFirstDefinition) {
  const auto env = ParseOtelEnvironment(Environ({
      "PATH=/usr/bin",
      "OTEL_EXPORTER_OTLP_ENDPOINT= http://localhost:4318 ",
      "OTEL_EXPORTER_OTLP_ENDPOINT=http://elsewhere:9999",
      "XOTEL_SERVICE_NAME=not-this",
      "OTEL_RESOURCE_ATTRIBUTES=service.name=from-attributes,team=a",
      "OTEL_TRACES_EXPORTER=otlp",
  }));
  EXPECT_EQ(env.endpoint, "http://localhost:4318");
  EXPECT_EQ(env.traces_exporter, "otlp");
  EXPECT_FALSE(env.service_name_set);
  EXPECT_EQ(env.service_name, "from-attributes");
  EXPECT_TRUE(env.traces_endpoint.empty());
}

TEST(OtelEnvironmentTest, EndpointNamingAReceiverPortOnAnyHost) {
  // Node (@opentelemetry/sdk-node), http/protobuf on the host.
  auto v = Judge({"OTEL_SERVICE_NAME=checkout", "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318"});
  EXPECT_TRUE(v.exports_here);
  EXPECT_EQ(v.reason, "OTEL_EXPORTER_OTLP_ENDPOINT names receiver port 4318");
  EXPECT_EQ(v.service_name, "checkout");
  // Java agent in a container, gRPC through the bridge gateway.
  v = Judge({"OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_EXPORTER_OTLP_ENDPOINT=http://172.17.0.1:4317",
             "JAVA_TOOL_OPTIONS=-javaagent:/otel/opentelemetry-javaagent.jar"});
  EXPECT_TRUE(v.exports_here) << v.reason;
  // Go, host:port and IPv6.
  EXPECT_TRUE(Judge({"OTEL_EXPORTER_OTLP_ENDPOINT=[::1]:4317"}).exports_here);
  // kspan on other ports: the endpoint must name those.
  EXPECT_TRUE(Judge({"OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:14318"},
                    EnvironmentEnrollMode::kReceiver, 0, 14318)
                  .exports_here);
  v = Judge({"OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318"}, EnvironmentEnrollMode::kReceiver,
            0, 14318);
  EXPECT_FALSE(v.exports_here);
  EXPECT_EQ(v.reason, "OTEL_EXPORTER_OTLP_ENDPOINT names port 4318, not a receiver port");
}

TEST(OtelEnvironmentTest, TracesEndpointWinsOverTheGeneralOne) {
  // The SDKs send traces to the signal-specific endpoint when it is set.
  auto v = Judge({"OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318",
                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=https://api.vendor.example/v1/traces"});
  EXPECT_FALSE(v.exports_here);
  EXPECT_EQ(v.reason, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT names port 443, not a receiver port");
  v = Judge({"OTEL_EXPORTER_OTLP_ENDPOINT=https://api.vendor.example",
             "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://[::1]:4318/v1/traces"});
  EXPECT_TRUE(v.exports_here);
  EXPECT_EQ(v.reason, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT names receiver port 4318");
}

TEST(OtelEnvironmentTest, EndpointWithoutTcpPortIsNotOurs) {
  auto v = Judge({"OTEL_EXPORTER_OTLP_ENDPOINT=unix:///run/otel.sock"});
  EXPECT_FALSE(v.exports_here);
  EXPECT_EQ(v.reason, "OTEL_EXPORTER_OTLP_ENDPOINT names no TCP port");
}

TEST(OtelEnvironmentTest, NoEndpointMeansTheSdkDefaultPortForItsProtocol) {
  // Python with the grpc exporter, kspan with only its HTTP receiver.
  auto v = Judge({"OTEL_SERVICE_NAME=worker", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc"},
                 EnvironmentEnrollMode::kReceiver, 0, 4318);
  EXPECT_FALSE(v.exports_here);
  EXPECT_EQ(v.reason, "no endpoint, and kspan's receiver is not on the SDK default port");
  v = Judge({"OTEL_SERVICE_NAME=worker", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"},
            EnvironmentEnrollMode::kReceiver, 0, 4318);
  EXPECT_TRUE(v.exports_here);
  EXPECT_EQ(v.reason, "no endpoint: the SDK default port 4318 (http/protobuf) is a receiver port");
  // The traces protocol wins over the general one.
  EXPECT_TRUE(Judge({"OTEL_SERVICE_NAME=w", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
                     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc"},
                    EnvironmentEnrollMode::kReceiver, 4317, 0)
                  .exports_here);
  // No protocol: either default port (the SDKs' defaults differ).
  EXPECT_TRUE(Judge({"OTEL_SERVICE_NAME=w"}, EnvironmentEnrollMode::kReceiver, 4317, 0).exports_here);
  EXPECT_TRUE(Judge({"OTEL_SERVICE_NAME=w"}, EnvironmentEnrollMode::kReceiver, 0, 4318).exports_here);
  EXPECT_FALSE(Judge({"OTEL_SERVICE_NAME=w"}, EnvironmentEnrollMode::kReceiver, 14317, 14318).exports_here);
  // Python's transport-specific exporter names fix the port.
  EXPECT_FALSE(Judge({"OTEL_TRACES_EXPORTER=otlp_proto_http"}, EnvironmentEnrollMode::kReceiver, 4317, 0)
                   .exports_here);
  EXPECT_TRUE(Judge({"OTEL_TRACES_EXPORTER=otlp_proto_grpc"}, EnvironmentEnrollMode::kReceiver, 4317, 0)
                  .exports_here);
}

TEST(OtelEnvironmentTest, NoEndpointNeedsAServiceNameOrAnExporter) {
  auto v = Judge({"OTEL_RESOURCE_ATTRIBUTES=service.name=x", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"});
  EXPECT_FALSE(v.exports_here);
  EXPECT_EQ(v.reason, "no OpenTelemetry exporter variables");
  EXPECT_EQ(v.service_name, "x");
  EXPECT_TRUE(Judge({"OTEL_TRACES_EXPORTER=otlp"}).exports_here);
  EXPECT_FALSE(Judge({"OTEL_SERVICE_NAME="}).exports_here);  // empty is unset
}

TEST(OtelEnvironmentTest, DisabledSdkOrOtherExportersAreNotSenders) {
  auto v = Judge({"OTEL_SDK_DISABLED=TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318"});
  EXPECT_FALSE(v.exports_here);
  EXPECT_EQ(v.reason, "OTEL_SDK_DISABLED is true");
  EXPECT_TRUE(Judge({"OTEL_SDK_DISABLED=false", "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318"})
                  .exports_here);
  v = Judge({"OTEL_TRACES_EXPORTER=zipkin", "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318"});
  EXPECT_FALSE(v.exports_here);
  EXPECT_EQ(v.reason, "OTEL_TRACES_EXPORTER does not list otlp");
  EXPECT_EQ(Judge({"OTEL_TRACES_EXPORTER=none", "OTEL_SERVICE_NAME=a"}).reason,
            "OTEL_TRACES_EXPORTER is none");
  EXPECT_TRUE(Judge({"OTEL_TRACES_EXPORTER=console, OTLP", "OTEL_SERVICE_NAME=a"}).exports_here);
}

TEST(OtelEnvironmentTest, AnyModeTakesAnyVariableUnlessDisabled) {
  constexpr auto kAny = EnvironmentEnrollMode::kAny;
  EXPECT_TRUE(Judge({"OTEL_EXPORTER_OTLP_ENDPOINT=https://api.vendor.example"}, kAny).exports_here);
  EXPECT_TRUE(Judge({"OTEL_TRACES_EXPORTER=zipkin"}, kAny).exports_here);
  EXPECT_FALSE(Judge({"OTEL_SDK_DISABLED=true", "OTEL_SERVICE_NAME=a"}, kAny).exports_here);
  EXPECT_FALSE(Judge({"OTEL_TRACES_EXPORTER=none"}, kAny).exports_here);
  EXPECT_FALSE(Judge({"OTEL_LOG_LEVEL=debug"}, kAny).exports_here);
}

TEST(OtelEnvironmentTest, OffModeNeverEnrolls) {
  auto v = Judge({"OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318"}, EnvironmentEnrollMode::kOff);
  EXPECT_FALSE(v.exports_here);
  EXPECT_EQ(v.reason, "correlation.enroll_from_environment is off");
}

TEST(OtelEnvironmentTest, ReceiverOffMeansNoSender) {
  EXPECT_EQ(Judge({"OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318"},
                  EnvironmentEnrollMode::kReceiver, 0, 0)
                .reason,
            "kspan's OTLP receiver is off");
}

TEST(OtelEnvironmentTest, ModeNames) {
  for (auto m : {EnvironmentEnrollMode::kReceiver, EnvironmentEnrollMode::kAny, EnvironmentEnrollMode::kOff}) {
    EXPECT_EQ(ParseEnvironmentEnrollMode(EnvironmentEnrollModeName(m)), m);
  }
  EXPECT_EQ(ParseEnvironmentEnrollMode("Receiver"), std::nullopt);
}

}  // namespace
}  // namespace kspan
