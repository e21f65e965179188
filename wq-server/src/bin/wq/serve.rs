//! `wq serve`: the HTTP API, health and metrics, and with `--demo` a
//! workload that fills and drains a queue so the counts move.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use wq::{Backend, Client, Enqueue, Events, JobContext, JobError, QueueConfig, Worker};
use wq_server::{Auth, HealthPolicy, Server};

use crate::Failure;

/// The demo's queue.
const DEMO_QUEUE: &str = "demo";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, env = "WQ_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// The admin token: every call may use it.
    #[arg(long, env = "WQ_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// A token for one tenant's jobs, as `tenant=token` (repeat it, or
    /// separate them with commas).
    #[arg(
        long = "tenant-token",
        env = "WQ_TENANT_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) tenant_tokens: Vec<String>,
    /// Serve without any token check: anyone who reaches the port is an
    /// admin. For a demo on a trusted machine only.
    #[arg(long)]
    no_auth: bool,
    /// Fill a `demo` queue with jobs and run them, so the counts move.
    #[arg(long)]
    demo: bool,
    /// `/health` says degraded above this many due jobs.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) degraded_backlog: u64,
    /// `/health` says unhealthy above this many due jobs.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) unhealthy_backlog: u64,
}

pub async fn serve<B: Backend>(
    store: B,
    client: Client<B>,
    args: ServeArgs,
) -> Result<(), Failure> {
    let auth = auth(&args)?;
    let events = Events::new(4_096);
    let client = client.with_events(events.clone());
    wq_server::metrics::record_events(&events);
    let demo = if args.demo {
        Some(start_demo(store, &client, &events).await?)
    } else {
        None
    };
    let workers: Vec<wq_server::WorkerProbe> = demo
        .iter()
        .map(|w| std::sync::Arc::new(w.liveness()) as wq_server::WorkerProbe)
        .collect();
    let app = Server::new(client, auth)
        .health(HealthPolicy {
            degraded_backlog: args.degraded_backlog,
            unhealthy_backlog: args.unhealthy_backlog,
            workers,
        })
        .router();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving: the dashboard at /ui/, the API under /api/ (its OpenAPI document at /api/openapi.json), /health, /ready, /metrics");
    println!("wq: serving on http://{addr} (the dashboard at http://{addr}/ui/)");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    if let Some(worker) = demo {
        worker.shutdown(Duration::from_secs(10)).await;
    }
    Ok(())
}

/// The tokens from the arguments; serving with none needs `--no-auth`.
fn auth(args: &ServeArgs) -> Result<Auth, Failure> {
    if args.no_auth {
        let banner = "AUTH IS OFF: anyone who can reach this port can read, enqueue, retry, purge \
                      and pause everything. Serve this way on a trusted machine only.";
        tracing::warn!("{banner}");
        eprintln!("\n*** wq: {banner} ***\n");
        return Ok(Auth::disabled());
    }
    let mut auth = Auth::tokens();
    if let Some(t) = &args.token {
        auth = auth.admin(t);
    }
    for pair in &args.tenant_tokens {
        let (tenant, token) = pair
            .split_once('=')
            .filter(|(t, k)| !t.is_empty() && !k.is_empty())
            .ok_or("--tenant-token takes `tenant=token`")?;
        auth = auth.tenant(tenant, token);
    }
    if args.token.as_deref() == Some("") {
        return Err("the token is empty: give a non-empty --token or WQ_TOKEN".into());
    }
    if auth.is_empty() {
        return Err("give a token (--token or WQ_TOKEN), or serve without auth (--no-auth)".into());
    }
    Ok(auth)
}

/// Declares the demo queue, starts its worker, and enqueues three waves of
/// jobs over 50 contacts: most complete, one in seven fails its first
/// attempt, one in forty fails every attempt and ends dead.
async fn start_demo<B: Backend>(
    store: B,
    client: &Client<B>,
    events: &Events,
) -> Result<wq::WorkerHandle, Failure> {
    client
        .declare_queue(QueueConfig::new(DEMO_QUEUE).concurrency(8))
        .await?;
    let worker = Worker::new(store)
        .events(events.clone())
        .handle(DEMO_QUEUE, |job: JobContext| async move {
            let n: u64 = job.payload()?;
            tokio::time::sleep(Duration::from_millis(20 + n % 180)).await;
            if n.is_multiple_of(40) {
                return Err(JobError::retry("the demo's contact is unreachable"));
            }
            if n.is_multiple_of(7) && job.attempt() == 1 {
                return Err(JobError::retry("the demo's bridge timed out"));
            }
            Ok(())
        })
        .start()
        .await?;
    let client = client.clone();
    tokio::spawn(async move {
        // Three waves of 600 jobs, 20 s apart: the counts fill, then drain.
        for wave in 0..3u64 {
            let jobs = (wave * 600..(wave + 1) * 600)
                .map(|n| Enqueue::new(DEMO_QUEUE, &n).group(format!("contact-{}", n % 50)));
            if let Err(e) = client.enqueue_many(jobs).await {
                tracing::warn!(error = %e, "demo: enqueue failed");
            }
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
    });
    Ok(worker)
}

/// Resolves at Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
