//! `wq-bench`: runs the design's workloads W1–W6 against a backend and
//! prints one JSON line per result on stdout (progress goes to stderr).
//!
//! ```text
//! cargo run --release -p wq-bench -- --backend memory --workload all
//! ```

mod counts;
mod events;
mod http;
mod memory;
mod postgres;
mod redis;
mod report;
mod sessions;
mod whatsapp;
mod workloads;

use std::time::Duration;

use clap::{Parser, ValueEnum};

use workloads::{Factory, Params};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendKind {
    /// The in-process backend.
    Memory,
    /// Postgres (`--url`, else `WQ_POSTGRES_URL`, else the local server).
    Postgres,
    /// Redis (`--url`, else `WQ_REDIS_URL`, else the local server).
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    All,
    W1,
    W2,
    /// W2 with a subscribed events hub, against plain W2.
    W2e,
    W3,
    W4,
    W5,
    /// W5 with most sessions blocked, against plain W5.
    W5s,
    W6,
    /// WhatsApp messages through the send pipeline and the HTTP transport
    /// against the fake bridge (not part of `all`: it runs for `--seconds`
    /// per preset).
    Wa,
    /// `Client::counts` and `oldest_wait` with `--retained` completed jobs
    /// kept, against none (not part of `all`).
    Counts,
    /// `POST /api/jobs` on an in-process wq-server from `--clients`
    /// concurrent clients, against `Client::enqueue` called directly (not
    /// part of `all`).
    Http,
}

/// Benchmarks wq's workloads W1-W6.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Which backend.
    #[arg(long, value_enum, default_value = "memory", ignore_case = true)]
    backend: BackendKind,
    /// The server of a networked backend (default: `WQ_POSTGRES_URL` or
    /// `WQ_REDIS_URL`, else the local server).
    #[arg(long)]
    url: Option<String>,
    /// Which workloads (repeatable, or `all`).
    #[arg(long, value_enum, default_value = "all", ignore_case = true)]
    workload: Vec<Workload>,
    /// Jobs per workload (W5: jobs claimed in the sample).
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    /// Groups for W3 and W5.
    #[arg(long, default_value_t = 1_000)]
    groups: u64,
    /// Handlers at once (W2, W3, W4).
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Batch size of W1-batch.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Jobs per second in W4.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds W4 runs.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Jobs waiting in W5.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: u64,
    /// Completed jobs retained in `counts`.
    #[arg(long, default_value_t = 10_000_000)]
    retained: u64,
    /// Concurrent callers in `http`.
    #[arg(long, default_value_t = 50)]
    clients: usize,
}

async fn run<F: Factory>(f: &F, args: &Args) -> Result<(), String> {
    let p = Params {
        jobs: args.jobs,
        groups: args.groups,
        concurrency: args.concurrency,
        batch: args.batch,
        rate: args.rate,
        duration: Duration::from_secs(args.seconds),
        backlog: args.backlog,
    };
    let all = args.workload.contains(&Workload::All);
    let wants = |w| all || args.workload.contains(&w);
    if wants(Workload::W1) {
        workloads::w1(f, &p)
            .await?
            .iter()
            .for_each(report::Report::print);
    }
    if wants(Workload::W2) {
        workloads::w2(f, &p)
            .await?
            .iter()
            .for_each(report::Report::print);
    }
    if wants(Workload::W2e) {
        events::w2_events(f, &p)
            .await?
            .iter()
            .for_each(report::Report::print);
    }
    if wants(Workload::W3) {
        workloads::w3(f, &p)
            .await?
            .iter()
            .for_each(report::Report::print);
    }
    if wants(Workload::W4) {
        workloads::w4(f, &p)
            .await?
            .iter()
            .for_each(report::Report::print);
    }
    let mut plain_w5 = None;
    if wants(Workload::W5) || wants(Workload::W5s) {
        let reports = workloads::w5(f, &p).await?;
        plain_w5 = reports
            .iter()
            .find(|r| r.workload == "W5")
            .and_then(|r| r.p50_ms);
        if wants(Workload::W5) {
            reports.iter().for_each(report::Report::print);
        }
    }
    if wants(Workload::W5s) {
        for mut r in sessions::w5_sessions(f, &p).await? {
            r.vs_w5 = r.p50_ms.zip(plain_w5).map(|(s, w)| s / w.max(1e-9));
            eprintln!(
                "{}: claim+ack p50 {:.4} ms, {:.2}x plain W5",
                r.workload,
                r.p50_ms.unwrap_or(0.0),
                r.vs_w5.unwrap_or(0.0)
            );
            r.print();
        }
    }
    if wants(Workload::W6) {
        sessions::w6(f, &p)
            .await?
            .iter()
            .for_each(report::Report::print);
    }
    if args.workload.contains(&Workload::Wa) {
        whatsapp::wa(f, &p)
            .await?
            .iter()
            .for_each(report::Report::print);
    }
    if args.workload.contains(&Workload::Counts) {
        counts::counts(f, args.retained)
            .await?
            .iter()
            .for_each(report::Report::print);
    }
    if args.workload.contains(&Workload::Http) {
        http::http(f, &p, args.clients)
            .await?
            .iter()
            .for_each(report::Report::print);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = match args.backend {
        BackendKind::Memory => run(&memory::Memory, &args).await,
        BackendKind::Postgres => run(&postgres::Postgres::new(args.url.clone()), &args).await,
        BackendKind::Redis => {
            let url = args
                .url
                .clone()
                .or_else(|| std::env::var("WQ_REDIS_URL").ok())
                .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
            run(&redis::Redis::new(url), &args).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wq-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
