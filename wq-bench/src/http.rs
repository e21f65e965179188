//! `http`: enqueues through `POST /api/jobs` of a wq-server built in this
//! process, against the same enqueues made by calling `Client::enqueue`
//! directly, with the same number of concurrent callers.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wq_core::{Backend, Client, Enqueue};
use wq_server::{Auth, Server};

use crate::report::Report;
use crate::workloads::{Factory, Params, QUEUE, msg, setup};

/// The server's one token.
const TOKEN: &str = "bench-token";
/// Untimed calls per caller before the timed ones (opens the connections).
const WARMUP_PER_CALLER: u64 = 4;

/// Runs `total` calls of `op` from `callers` tasks at once, each taking the
/// next call's number when its last one returned; the wall time and every
/// call's latency.
async fn drive<Op, Fut>(
    callers: usize,
    first: u64,
    total: u64,
    op: Op,
) -> Result<(Duration, Vec<Duration>), String>
where
    Op: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicU64::new(first));
    let end = first + total;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(callers);
    for _ in 0..callers {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, String>(lat);
                }
                let t = Instant::now();
                op(i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(total as usize);
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    Ok((started.elapsed(), all))
}

/// Warms up, then drives `total` calls; the report named `name`.
async fn measure<Op, Fut>(
    backend: &str,
    name: &str,
    callers: usize,
    total: u64,
    op: Op,
) -> Result<Report, String>
where
    Op: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let warmup = WARMUP_PER_CALLER * callers as u64;
    drive(callers, 0, warmup, op.clone()).await?;
    let (elapsed, mut lat) = drive(callers, warmup, total, op).await?;
    let mut r = Report::new(backend, name, total, elapsed).latencies(&mut lat);
    r.concurrency = Some(callers);
    Ok(r)
}

/// An HTTP client for `http://` only: reqwest is built without a TLS
/// provider of its own, so it gets ring's with no certificate to trust.
fn plain_http() -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| e.to_string())
}

/// Serves wq-server over `client` on a local port until `stop` is sent or
/// dropped; its base URL and its task.
async fn serve<B: Backend>(
    client: Client<B>,
    stop: oneshot::Receiver<()>,
) -> Result<(String, tokio::task::JoinHandle<()>), String> {
    let app = Server::new(client, Auth::tokens().admin(TOKEN)).router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stop.await;
        });
        if let Err(e) = served.await {
            eprintln!("http: the server stopped: {e}");
        }
    });
    Ok((format!("http://{addr}"), task))
}

/// `Client::enqueue` from `callers` tasks at once.
async fn direct<F: Factory>(f: &F, p: &Params, callers: usize) -> Result<Report, String> {
    let (client, backend) = setup(f).await?;
    eprintln!(
        "http-direct: {} enqueues from {callers} concurrent callers",
        p.jobs
    );
    let op = move |i: u64| {
        let client = client.clone();
        async move {
            client
                .enqueue(Enqueue::new(QUEUE, &msg(i, 0)))
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    };
    let r = measure(f.name(), "http-direct", callers, p.jobs, op).await?;
    f.cleanup(backend).await;
    Ok(r)
}

/// `POST /api/jobs` from `callers` tasks at once over one shared client.
async fn over_http<F: Factory>(f: &F, p: &Params, callers: usize) -> Result<Report, String> {
    let (client, backend) = setup(f).await?;
    let (stop, stopped) = oneshot::channel();
    let (base, server) = serve(client, stopped).await?;
    eprintln!(
        "http: {} POST /api/jobs from {callers} concurrent clients to {base}",
        p.jobs
    );
    let http = plain_http()?;
    let url: Arc<str> = format!("{base}/api/jobs").into();
    let op = move |i: u64| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let body = serde_json::json!({ "queue": QUEUE, "payload": msg(i, 0) });
            let res = http
                .post(&*url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("POST /api/jobs: {e}"))?;
            let status = res.status();
            let text = res
                .text()
                .await
                .map_err(|e| format!("POST /api/jobs: {e}"))?;
            if status != reqwest::StatusCode::CREATED {
                return Err(format!("POST /api/jobs: {status}: {text}"));
            }
            Ok(())
        }
    };
    let r = measure(f.name(), "http", callers, p.jobs, op).await?;
    let _ = stop.send(());
    if tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .is_err()
    {
        eprintln!("http: the server did not stop within 10 s");
    }
    f.cleanup(backend).await;
    Ok(r)
}

/// `http`: the HTTP enqueue rate against the store's own, same callers;
/// `of_ideal` on the `http` line is the HTTP rate over the direct one.
pub async fn http<F: Factory>(f: &F, p: &Params, callers: usize) -> Result<Vec<Report>, String> {
    let direct = direct(f, p, callers).await?;
    let mut over = over_http(f, p, callers).await?;
    let ratio = over.jobs_per_sec / direct.jobs_per_sec.max(1e-9);
    over.of_ideal = Some(ratio);
    eprintln!(
        "http: {:.0} req/s (p50 {:.3} ms, p99 {:.3} ms) vs direct {:.0} enqueues/s \
         (p50 {:.3} ms, p99 {:.3} ms), {callers} callers: ratio {ratio:.2} (target >= 0.80)",
        over.jobs_per_sec,
        over.p50_ms.unwrap_or(0.0),
        over.p99_ms.unwrap_or(0.0),
        direct.jobs_per_sec,
        direct.p50_ms.unwrap_or(0.0),
        direct.p99_ms.unwrap_or(0.0),
    );
    Ok(vec![direct, over])
}
