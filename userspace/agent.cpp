#include "userspace/agent.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "userspace/kernel_features.h"

namespace kspan {

Agent::Agent(AgentConfig config) : config_(std::move(config)) {}

Agent::~Agent() { Stop(std::chrono::seconds(5)); }

absl::Status Agent::Start() {
  KernelRequirements req;
  req.btf_override = config_.bpf.btf;
  if (auto s = CheckKernel(req); !s.ok()) return s;

  if (!config_.admin_listen.empty()) {
    admin_ = std::make_unique<AdminServer>(metrics_);
    if (auto s = admin_->Start(config_.admin_listen); !s.ok()) return s;
  }
  if (auto s = EnsureBpffs(req); !s.ok()) return s;
  auto pins = PinDirectory::Create(config_.bpf.pin_path);
  if (!pins.ok()) return pins.status();
  pins_.emplace(std::move(*pins));

  auto pipeline = ExportPipeline::Create(config_.exporter, metrics_);
  if (!pipeline.ok()) return pipeline.status();
  pipeline_ = std::move(*pipeline);

  clock_ = std::make_unique<ClockSync>();
  resources_ = std::make_unique<ProcessResources>();
  assembler_ = std::make_unique<SpanAssembler>(
      *clock_, *resources_, metrics_, [this](Span&& s) { pipeline_->Submit(std::move(s)); });
  decoder_ = std::make_unique<EventDecoder>(*assembler_, metrics_);
  reader_ = std::make_unique<RingReader>();

  if (config_.capture.tcp_connect) {
    CaptureOptions opts;
    opts.self_tgid = static_cast<std::uint32_t>(getpid());
    opts.ring_buffer_bytes = config_.capture.ring_buffer_bytes;
    opts.wakeup_bytes = config_.capture.wakeup_bytes;
    opts.btf_path = config_.bpf.btf;
    opts.pin_dir = pins_->path();
    tcp_ = std::make_unique<TcpCapture>(opts);
    if (auto s = tcp_->Start(); !s.ok()) return s;
    if (auto s = reader_->Add(tcp_->ring_fd(), "kspan_tcp_ring", decoder_.get()); !s.ok()) {
      return s;
    }
    spdlog::info("capture variant tcp_state={}", tcp_->variant());
  } else {
    spdlog::warn("all capture disabled in config: kspan only exports");
  }
  RegisterCaptureMetrics();
  if (tcp_) {
    if (auto s = reader_->Start(config_.capture.poll_interval); !s.ok()) return s;
  }
  last_totals_log_ = std::chrono::steady_clock::now();
  if (admin_) admin_->SetReady(true);
  return absl::OkStatus();
}

void Agent::RegisterCaptureMetrics() {
  metrics_.AddCallbackCounter("kspan_ring_records_total", "Records read from BPF ring buffers.",
                              {}, [this] { return static_cast<double>(reader_->records_read()); },
                              this);
  metrics_.AddCallbackGauge("kspan_clock_offset_seconds",
                            "CLOCK_REALTIME minus CLOCK_MONOTONIC applied to kernel timestamps.",
                            {}, [this] { return clock_->offset_ns() / 1e9; }, this);
  metrics_.AddCallbackGauge("kspan_clock_skew_seconds",
                            "Change of the realtime offset at the last re-sample (skew corrected).",
                            {}, [this] { return clock_->last_skew_ns() / 1e9; }, this);
  if (!tcp_) return;
  struct Slot {
    int index;
    bool lost;  // an event lost in the kernel, else one submitted
    const char* label;
  };
  static constexpr Slot kSlots[] = {
      {KSPAN_TCP_STAT_CONNECT_EMITTED, false, "tcp_connect"},
      {KSPAN_TCP_STAT_ACCEPT_EMITTED, false, "tcp_accept"},
      {KSPAN_TCP_STAT_CONN_EMITTED, false, "tcp_connection"},
      {KSPAN_TCP_STAT_NOTE_EMITTED, false, "tcp_note"},
      {KSPAN_TCP_STAT_RING_FULL, true, "ring_full"},
      {KSPAN_TCP_STAT_START_TABLE_FULL, true, "start_table_full"},
      {KSPAN_TCP_STAT_CONN_TABLE_FULL, true, "conn_table_full"},
  };
  for (const auto& slot : kSlots) {
    const int index = slot.index;
    auto value = [this, index] { return static_cast<double>(tcp_->ReadStats()[index]); };
    if (slot.lost) {
      metrics_.AddCallbackCounter("kspan_bpf_dropped_total",
                                  "Kernel events lost before reaching userspace, by reason.",
                                  {{"family", "tcp"}, {"reason", slot.label}}, value, this);
    } else {
      metrics_.AddCallbackCounter("kspan_bpf_events_total",
                                  "Records BPF programs submitted to ring buffers, by kind.",
                                  {{"family", "tcp"}, {"kind", slot.label}}, value, this);
    }
  }
}

void Agent::LogTotals() {
  const auto st = tcp_ ? tcp_->ReadStats() : TcpStats{};
  const std::uint64_t events = st[KSPAN_TCP_STAT_CONNECT_EMITTED] +
                               st[KSPAN_TCP_STAT_ACCEPT_EMITTED] +
                               st[KSPAN_TCP_STAT_CONN_EMITTED] + st[KSPAN_TCP_STAT_NOTE_EMITTED];
  const std::uint64_t lost = st[KSPAN_TCP_STAT_RING_FULL] + st[KSPAN_TCP_STAT_START_TABLE_FULL] +
                             st[KSPAN_TCP_STAT_CONN_TABLE_FULL];
  const std::uint64_t spans = metrics_.CounterTotal("kspan_spans_assembled_total");
  if (spans == last_logged_spans_ && lost == last_logged_lost_) return;
  last_logged_spans_ = spans;
  last_logged_lost_ = lost;
  spdlog::info(
      "totals: kernel events {} (lost in kernel {}), decoded {}, decode errors {}, spans {}, "
      "exported {} (sum over destinations), dropped {}",
      events, lost, decoder_->decoded(), decoder_->errors(), spans,
      metrics_.CounterTotal("kspan_exporter_spans_exported_total"),
      metrics_.CounterTotal("kspan_exporter_batcher_dropped_spans_total") +
          metrics_.CounterTotal("kspan_exporter_spans_dropped_total"));
}

void Agent::Tick() {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_totals_log_ >= std::chrono::seconds(60)) {
    last_totals_log_ = now;
    LogTotals();
  }
}

void Agent::Stop(std::chrono::milliseconds deadline) {
  if (stopped_) return;
  stopped_ = true;
  if (admin_) admin_->SetReady(false);
  if (tcp_) tcp_->Detach();
  if (reader_) reader_->Stop();  // drains what the kernel already submitted
  if (pipeline_) pipeline_->Shutdown(deadline);
  if (decoder_) LogTotals();
  metrics_.RemoveCallbacks(this);
  tcp_.reset();   // destroys the skeleton and its pin
  pins_.reset();  // removes /sys/fs/bpf/kspan
  if (admin_) admin_->Stop();
}

}  // namespace kspan
