// One OpenTelemetry resource per observed process, from the kernel's view of
// it: what /proc says about its executable, its cgroup (-> container and
// Kubernetes pod) and its environment's OpenTelemetry service name, never
// what it sends about itself (but for the service.name of its own spans,
// which the receiver has checked came from it).
//
// Built once per process image and shared by all of its spans, so the
// batcher groups them under one ResourceSpans. A process's identity follows
// it through its life:
//   exec   a new image: a new resource, read from /proc at once while the
//          process is young; spans that began before the exec keep the old
//          one (their start time says which);
//   exit   the pid may be reused: spans that begin after the exit are
//          another process's, and the exited one's resource is forgotten
//          a grace period later (its last spans may still be on the way).
// Exec and exit come from the process family's ring (bpf/process.bpf.c),
// which the ring reader drains before the others.
//
// Resource attributes (docs/containers.md has where each comes from):
//   service.name  the name the process's own spans carry; else
//                 OTEL_SERVICE_NAME (or service.name in
//                 OTEL_RESOURCE_ATTRIBUTES) in its environment; else the
//                 Kubernetes container name; else the container's name;
//                 else the executable's name
//   process.pid, process.executable.name, process.executable.path,
//   process.linux.cgroup, kspan.process.namespace_pid (in a container)
//   container.id, container.runtime, container.name, container.image.name
//   k8s.pod.uid, k8s.pod.name, k8s.namespace.name, k8s.container.name,
//   kspan.k8s.pod.qos_class
//   host.name, host.id, host.arch, os.type
//   and the agent-wide attributes (resource.attributes,
//   OTEL_RESOURCE_ATTRIBUTES of the agent) under keys not already set.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "exporter/self_metrics.h"
#include "exporter/span.h"

namespace kspan {

class ContainerMetadata;

// host.id, host.arch, os.type as the OpenTelemetry resource conventions
// define them (host.id: the machine id of /etc/machine-id; host.arch:
// amd64, arm64, ...). `host_root` is where the node's /etc is.
Attributes DetectHostAttributes(const std::string& host_root = "/");

// "service.name" and the value of OTEL_SERVICE_NAME (else service.name of
// OTEL_RESOURCE_ATTRIBUTES) in a NUL-separated environment block; empty
// when neither is set. Nothing else of the environment is kept.
std::string ServiceNameFromEnviron(std::string_view environ);

class ProcessResources {
 public:
  struct Options {
    std::string proc_root = "/proc";
    std::string host_name;  // empty: gethostname()
    // host.id, host.arch, os.type; detected by the agent (DetectHostAttributes).
    Attributes host_attributes;
    // Added to every resource under keys not already set (agent-wide:
    // k8s.cluster.name, deployment.environment.name, ...).
    Attributes extra_attributes;
    // service.name of work no process owns (a connection nobody accepted).
    std::string host_service_name = "kernel";
    // Container names (null: container.id and pod ids only). Must outlive this.
    ContainerMetadata* containers = nullptr;
    std::size_t max_entries = 16384;
    // A live process's resource is re-read this often (names that appear
    // later: a container's, a Kubernetes pod's).
    std::chrono::seconds ttl{60};
    // How long an exited process's identity is kept for its late spans.
    std::chrono::seconds exited_grace{120};
    std::size_t max_environ_bytes = 128 << 10;
  };

  ProcessResources();
  explicit ProcessResources(Options options, MetricsRegistry* metrics = nullptr);
  ~ProcessResources();

  // The resource of the process `pid` for a span that began at `mono_ns`
  // (CLOCK_MONOTONIC; 0: its current image, for a look that is no span's).
  // `comm` (from the kernel record) names the process when /proc no longer
  // has it. Pid 0 is the host itself. Thread-safe.
  std::shared_ptr<const Resource> For(std::uint32_t pid, std::string_view comm,
                                      std::uint64_t mono_ns);

  // The process family's records (any thread).
  // `ppid`: the parent, whose image a process runs from fork to exec.
  void OnExec(std::uint32_t pid, std::uint32_t ppid, std::uint64_t mono_ns, std::string_view comm,
              std::string_view filename);
  void OnExit(std::uint32_t pid, std::uint64_t mono_ns);

  // The service.name a process gives its own spans (the receiver checked it
  // sent them): its kernel spans carry it too from now on.
  void LearnServiceName(std::uint32_t pid, std::string_view name);

  // Forgets exited processes past their grace period (the agent's tick).
  void Sweep(std::uint64_t now_mono_ns);

  std::size_t size() const;
  const std::string& host_name() const { return host_name_; }

 private:
  struct Entry {
    std::shared_ptr<const Resource> current;  // null: build at next use
    std::chrono::steady_clock::time_point built{};
    // Exec time of the current image (0: it was running before kspan).
    std::uint64_t image_since_ns = 0;
    std::shared_ptr<const Resource> previous;  // the image before that exec
    std::uint64_t exited_ns = 0;               // 0: alive
    std::string learned_service;
    std::string exec_comm;      // of the current image, from its exec record
    std::string exec_filename;  // of the current image, from its exec record
    // The parent whose image this process ran before its exec, when kspan
    // never read that image itself (0: none, or read).
    std::uint32_t forked_from = 0;
    std::uint64_t last_used_ns = 0;
    // image_since_ns is when kspan found, by /proc, that the process had
    // exec'd (its exec record not read yet): an upper bound until it is.
    bool exec_inferred = false;
  };
  // What /proc says about a live process; `alive` false when it is gone.
  struct Facts;
  Facts Read(std::uint32_t pid) const;
  std::shared_ptr<const Resource> ForAt(std::uint32_t pid, std::string_view comm, std::uint64_t mono_ns,
                                        int depth);
  std::shared_ptr<const Resource> Make(std::uint32_t pid, const Facts& facts, std::string_view comm,
                                       std::string_view filename, const std::string& learned) const;
  std::shared_ptr<const Resource> Minimal(std::uint32_t pid, std::string_view comm,
                                          std::string_view filename) const;
  void AddCommon(Attributes& a) const;
  // A span of `pid` that began at mono_ns while the process ran `comm`,
  // looked up after an exec kspan has no record of yet (/proc shows
  // `facts`, another program): records the new image as current and the
  // old one (its parent's, for a forked child) as the image before.
  bool AnyThreadNamed(std::uint32_t pid, std::string_view comm) const;
  void NoteUnreadExec(std::uint32_t pid, std::string_view comm, std::uint64_t mono_ns, const Facts& facts);
  // The entry of `pid`, made (room made first) when there is none; under mu_.
  Entry& Slot(std::uint32_t pid, std::uint64_t now_ns);
  void MakeRoom(std::uint64_t now_ns);

  Options options_;
  std::string host_name_;
  std::shared_ptr<const Resource> kernel_;
  MetricsRegistry* metrics_;
  mutable std::mutex mu_;
  std::unordered_map<std::uint32_t, Entry> cache_;
  Counter* built_ = nullptr;
  Counter* execs_ = nullptr;
  Counter* reused_ = nullptr;
};

}  // namespace kspan
