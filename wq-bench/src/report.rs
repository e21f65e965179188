//! One JSON line per result.

use std::time::Duration;

use serde::Serialize;

/// A workload's result, printed as one JSON line on stdout.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub backend: String,
    pub workload: String,
    pub jobs: u64,
    pub groups: Option<u64>,
    pub concurrency: Option<usize>,
    pub seconds: f64,
    pub jobs_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub order_violations: Option<u64>,
    /// Throughput as a share of the ideal the limits allow (W6).
    pub of_ideal: Option<f64>,
    /// Claim cost against plain W5 in the same run (W5-sessions).
    pub vs_w5: Option<f64>,
    /// W2-events: its time over plain W2's in the same round.
    pub vs_w2: Option<f64>,
}

impl Report {
    /// A result of `jobs` jobs in `elapsed`.
    pub fn new(backend: &str, workload: &str, jobs: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            backend: backend.to_owned(),
            workload: workload.to_owned(),
            jobs,
            groups: None,
            concurrency: None,
            seconds,
            jobs_per_sec: if seconds > 0.0 {
                jobs as f64 / seconds
            } else {
                0.0
            },
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
            order_violations: None,
            of_ideal: None,
            vs_w5: None,
            vs_w2: None,
        }
    }

    /// Adds latency percentiles from `samples`.
    pub fn latencies(mut self, samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| -> Option<f64> {
            if samples.is_empty() {
                return None;
            }
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            Some(samples[i].as_secs_f64() * 1_000.0)
        };
        self.p50_ms = at(0.50);
        self.p95_ms = at(0.95);
        self.p99_ms = at(0.99);
        self
    }

    /// Prints the line.
    pub fn print(&self) {
        match serde_json::to_string(self) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("cannot print report: {e}"),
        }
    }
}
