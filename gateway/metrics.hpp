// Counters exported at GET /metrics in the Prometheus text format.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace syncline::gateway {

// A fixed-bucket latency histogram (seconds).
class Histogram {
 public:
  static constexpr std::array<double, 12> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                     0.1,   0.25,   0.5,   1,    2.5,   10};
  void Observe(double seconds);
  // Appends the _bucket/_sum/_count lines for `name`.
  void Render(const std::string &name, const std::string &help, std::string *out) const;

 private:
  std::array<uint64_t, kBounds.size()> counts_{};
  uint64_t count_ = 0;
  double sum_ = 0;
};

struct Metrics {
  uint64_t connections_total = 0;
  uint64_t connections_rejected = 0;  // over --max-connections
  uint64_t auth_failures = 0;
  uint64_t protocol_errors = 0;  // malformed, text, too big, before Hello
  uint64_t slow_consumer_disconnects = 0;
  uint64_t messages_in = 0, bytes_in = 0;
  uint64_t messages_out = 0, bytes_out = 0;
  uint64_t ops_sent = 0;
  uint64_t syncs_started = 0, syncs_completed = 0, syncs_failed = 0;
  uint64_t notifications = 0, live_rounds = 0;
  uint64_t live_round_sessions = 0;      // sessions the live rounds looked at
  uint64_t powersync_streams_total = 0;  // POST /sync/stream accepted
  uint64_t uploads_applied = 0, uploads_rejected = 0, uploads_failed = 0;  // POST /upload
  uint64_t live_buckets_over_budget = 0;  // left out of a live round (--live-round-bytes)
  uint64_t fanout_sends = 0;              // live changes written by the fan-out threads
  uint64_t fanout_short_writes = 0;       // ... of which the socket took only part
  uint64_t writes_busy = 0;               // WriteBatches refused over --write-queue-bytes
  uint64_t write_groups = 0;              // apply_writes statements that carried several batches
  uint64_t write_group_batches = 0;       // ... and the batches they carried
  uint64_t write_group_retries = 0;       // ... that failed and were re-run one batch at a time
  uint64_t recheck_notifications = 0;     // NOTIFYs naming changed rules or parameter data
  uint64_t rechecks = 0;                  // checkpoint re-runs they caused
  uint64_t rechecks_coalesced = 0;        // requests for a session already waiting for one
  Histogram checkpoint_seconds;           // syncline.checkpoint() query latency
  Histogram live_round_seconds;           // notification -> live data queued to every client
};

// Appends a counter or gauge line with HELP/TYPE.
void RenderMetric(const std::string &name, const char *type, const std::string &help, double value,
                  std::string *out);

}  // namespace syncline::gateway
