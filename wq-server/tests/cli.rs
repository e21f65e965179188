//! The `wq` command, run as a process: the operator's commands against
//! Postgres and Redis, each test in a namespace of its own that it removes
//! afterwards, and `wq serve` on the memory backend.
//!
//! Postgres and Redis are started when they do not answer; a test fails,
//! never skips, when they cannot be reached, and says how to start them.

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use wq::{
    Ack, AckAction, AckOutcome, Backend, ClaimRequest, Client, Enqueue, JobId, JobState,
    QueueConfig, Timestamp,
};

/// The variables the command reads besides its flags: removed, so the
/// caller's environment does not change what a test runs.
const WQ_ENV: &[&str] = &[
    "WQ_BACKEND",
    "WQ_URL",
    "WQ_NAMESPACE",
    "WQ_TOKEN",
    "WQ_TENANT_TOKENS",
    "WQ_LISTEN",
    "WQ_CONFIG",
];

/// The longest a command may take before the test gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest `wq serve` may take to listen and be ready.
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);

/// The queue the operator's tests use.
const QUEUE: &str = "cli";

/// The `wq` binary, with none of its variables set.
fn wq() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wq"));
    for var in WQ_ENV {
        command.env_remove(var);
    }
    command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// What a finished command did.
struct Run {
    /// Its arguments.
    args: String,
    /// Whether it exited with 0.
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Its output, to show when an assertion fails.
    fn shown(&self) -> String {
        format!(
            "`wq {}` {}\n--- stdout\n{}--- stderr\n{}",
            self.args,
            if self.success { "succeeded" } else { "failed" },
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `command` to its end.
async fn finish(mut command: Command, args: &[&str]) -> Run {
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`wq {}` ran longer than {COMMAND_TIMEOUT:?}",
                args.join(" ")
            )
        })
        .expect("the wq binary runs");
    Run {
        args: args.join(" "),
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A backend the command opens: its name, URL and namespace.
struct Target {
    backend: &'static str,
    url: String,
    namespace: String,
}

impl Target {
    /// Runs `wq <args>` against this backend.
    async fn run(&self, args: &[&str]) -> Run {
        let mut all = vec![
            "--backend",
            self.backend,
            "--url",
            &self.url,
            "--namespace",
            &self.namespace,
        ];
        all.extend_from_slice(args);
        finish(wq(), &all).await
    }

    /// Runs `wq <args>`, which must succeed; its standard output.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert!(run.success, "{}", run.shown());
        run.stdout
    }
}

/// Runs `body`, then `cleanup` whether or not `body` panicked, then passes
/// the panic on.
async fn cleaned_up<F, C>(body: F, cleanup: C)
where
    F: Future<Output = ()>,
    C: Future<Output = ()>,
{
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    cleanup.await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn postgres_url() -> String {
    std::env::var("WQ_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn redis_url() -> String {
    std::env::var("WQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

const START_POSTGRES: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

const START_REDIS: &str = "redis-server --daemonize yes --port 6379 --save '' --appendonly no";

/// A store in `schema`, starting the local cluster if the server does not
/// answer; panics saying how to start it when it still does not.
async fn postgres(url: &str, schema: &str) -> wq::PgStore {
    let once = || {
        wq::PgStore::builder(url, schema)
            .max_connections(4)
            .connect_timeout(Duration::ZERO)
            .connect()
    };
    if let Ok(store) = once().await {
        return store;
    }
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(START_POSTGRES)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let mut last = String::new();
    for _ in 0..30 {
        match once().await {
            Ok(store) => return store,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "Postgres is not reachable at {url} ({last}). Start it with `{START_POSTGRES}` \
         or point WQ_POSTGRES_URL at a server."
    );
}

/// A store under `prefix`, starting a local server if none answers;
/// panics saying how to start one when it still does not.
async fn redis(url: &str, prefix: &str) -> wq::RedisStore {
    let once = || {
        wq::RedisStore::builder(url)
            .prefix(prefix)
            .connect_timeout(Duration::ZERO)
            .connect()
    };
    if let Ok(store) = once().await {
        return store;
    }
    let _ = std::fs::create_dir_all("/var/lib/redis");
    let _ = std::process::Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1 -::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let mut last = String::new();
    for _ in 0..50 {
        match once().await {
            Ok(store) => return store,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "Redis is not reachable at {url} ({last}). Start it with `{START_REDIS}`, \
         or point WQ_REDIS_URL at a running server."
    );
}

fn fresh(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_on_postgres() {
    let target = Target {
        backend: "postgres",
        url: postgres_url(),
        namespace: fresh("wq_cli_"),
    };
    let store = postgres(&target.url, &target.namespace).await;
    cleaned_up(operator_commands(store.clone(), &target), async {
        if let Err(e) = store.drop_schema().await {
            eprintln!("could not drop schema {}: {e}", target.namespace);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_on_redis() {
    let target = Target {
        backend: "redis",
        url: redis_url(),
        namespace: fresh("wq-cli-"),
    };
    let store = redis(&target.url, &target.namespace).await;
    cleaned_up(operator_commands(store.clone(), &target), async {
        if let Err(e) = store.clear().await {
            eprintln!("could not clear prefix {}: {e}", target.namespace);
        }
    })
    .await;
}

/// Five jobs, two of them dead, then every operator's command on them,
/// each checked in the store.
async fn operator_commands<B: Backend>(store: B, target: &Target) {
    let client = Client::new(store.clone());
    client
        .declare_queue(QueueConfig::new(QUEUE).max_attempts(1))
        .await
        .expect("declare the queue");
    let mut ids = Vec::new();
    let groups = [
        Some("contact-a"),
        Some("contact-a"),
        Some("contact-b"),
        None,
        None,
    ];
    for (n, group) in groups.into_iter().enumerate() {
        let mut job = Enqueue::new(QUEUE, &n);
        if let Some(g) = group {
            job = job.group(g);
        }
        if n == 3 {
            job = job.tenant("acme");
        }
        ids.push(client.enqueue(job).await.expect("enqueue").job.id);
    }

    // Two die: claimed here, and killed as a worker would.
    let now = Timestamp::now();
    let claim = ClaimRequest::new(QUEUE, 2, now, now + Duration::from_secs(60), "cli-test");
    let claimed = store.claim(&claim).await.expect("claim");
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    let acks: Vec<Ack> = claimed
        .iter()
        .map(|j| {
            let kill = AckAction::Kill {
                error: "the contact is unreachable".into(),
            };
            Ack::for_job(j, kill).expect("a claimed job has a lease")
        })
        .collect();
    let outcomes = store.ack(&acks, Timestamp::now()).await.expect("ack");
    assert!(
        outcomes
            .iter()
            .all(|o| *o == AckOutcome::Applied(JobState::Dead)),
        "{outcomes:?}"
    );
    let dead: BTreeSet<JobId> = claimed.iter().map(|j| j.id).collect();
    let tenant_job = ids[3];
    // An ungrouped job left waiting, to cancel.
    let waiting = *ids[3..]
        .iter()
        .rev()
        .find(|id| !dead.contains(id))
        .expect("an ungrouped job was not claimed");
    assert!(state(&client, waiting).await.is_waiting());

    // migrate: opening the store applied the migrations.
    let out = target.ok(&["migrate"]).await;
    assert!(out.contains("up to date"), "{out}");

    // stats: the queue's line, with two dead.
    let out = target.ok(&["stats"]).await;
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let dead_column = header
        .iter()
        .position(|h| *h == "dead")
        .unwrap_or_else(|| panic!("no dead column:\n{out}"));
    let line: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&QUEUE))
        .unwrap_or_else(|| panic!("no line for {QUEUE}:\n{out}"));
    assert_eq!(line.get(dead_column), Some(&"2"), "{out}");

    // jobs list: exactly the dead ones, and the tenant's one.
    let out = target
        .ok(&["jobs", "list", "--queue", QUEUE, "--state", "dead"])
        .await;
    assert_eq!(listed(&out), dead, "{out}");
    let out = target.ok(&["jobs", "list", "--tenant", "acme"]).await;
    assert_eq!(listed(&out), BTreeSet::from([tenant_job]), "{out}");
    let run = target.run(&["jobs", "list", "--state", "sleeping"]).await;
    assert!(
        !run.success && run.stderr.contains("sleeping"),
        "{}",
        run.shown()
    );

    // jobs show: the job as JSON.
    let first_dead = *dead.first().expect("two dead");
    let out = target.ok(&["jobs", "show", &first_dead.to_string()]).await;
    let shown: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    assert_eq!(shown["id"], first_dead.to_string(), "{out}");
    assert_eq!(shown["state"], "dead", "{out}");
    assert_eq!(shown["last_error"], "the contact is unreachable", "{out}");

    // dead retry, one id: it waits to run again.
    let out = target
        .ok(&["dead", "retry", QUEUE, &first_dead.to_string()])
        .await;
    assert_eq!(out.trim(), "1 retried");
    assert!(state(&client, first_dead).await.is_waiting());

    // dead purge, the whole queue: the other dead job is gone.
    let out = target.ok(&["dead", "purge", QUEUE]).await;
    assert_eq!(out.lines().last(), Some("1 purged"), "{out}");
    assert_eq!(counts(&client).await.dead, 0);
    let last_dead = *dead.last().expect("two dead");
    assert_eq!(client.get(last_dead).await.expect("get"), None);
    assert!(client.get(first_dead).await.expect("get").is_some());

    // pause and resume, the queue and a session.
    let out = target.ok(&["pause", QUEUE]).await;
    assert_eq!(out.trim(), format!("{QUEUE} paused"));
    assert!(queue_paused(&client).await);
    let out = target.ok(&["resume", QUEUE]).await;
    assert_eq!(out.trim(), format!("{QUEUE} resumed"));
    assert!(!queue_paused(&client).await);
    target.ok(&["pause", QUEUE, "--session", "s1"]).await;
    assert!(session_paused(&client, "s1").await);
    assert!(!queue_paused(&client).await);
    target.ok(&["resume", QUEUE, "--session", "s1"]).await;
    assert!(!session_paused(&client, "s1").await);

    // jobs cancel: a waiting job ends at once.
    let out = target.ok(&["jobs", "cancel", &waiting.to_string()]).await;
    assert_eq!(out.trim(), format!("{waiting} cancelled"));
    assert_eq!(state(&client, waiting).await, JobState::Cancelled);

    // prune: nothing is past its retention yet.
    let out = target.ok(&["prune"]).await;
    assert_eq!(out.lines().last(), Some("0 pruned"), "{out}");
    assert_eq!(counts(&client).await.cancelled, 1);

    // Bad input: non-zero, and stderr says what is wrong.
    let run = target.run(&["jobs", "show", "not-a-uuid"]).await;
    assert!(!run.success, "{}", run.shown());
    assert!(
        run.stderr.contains("`not-a-uuid` is not a job id"),
        "{}",
        run.shown()
    );
    let unknown = JobId::new();
    let run = target.run(&["jobs", "show", &unknown.to_string()]).await;
    assert!(!run.success, "{}", run.shown());
    assert!(
        run.stderr.contains(&format!("no job {unknown}")),
        "{}",
        run.shown()
    );
    let run = target.run(&["pause", "no-such-queue"]).await;
    assert!(!run.success, "{}", run.shown());
}

/// The ids a job listing shows, one a line.
fn listed(out: &str) -> BTreeSet<JobId> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|id| {
            id.parse()
                .unwrap_or_else(|_| panic!("not an id: {id}\n{out}"))
        })
        .collect()
}

async fn state<B: Backend>(client: &Client<B>, id: JobId) -> JobState {
    client
        .get(id)
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("job {id} is gone"))
        .state
}

async fn counts<B: Backend>(client: &Client<B>) -> wq::Counts {
    client.counts(QUEUE).await.expect("counts")
}

async fn queue_paused<B: Backend>(client: &Client<B>) -> bool {
    client
        .queue(QUEUE)
        .await
        .expect("queue")
        .expect("the queue is declared")
        .paused
}

async fn session_paused<B: Backend>(client: &Client<B>, session: &str) -> bool {
    client
        .session(QUEUE, session)
        .await
        .expect("session")
        .is_some_and(|s| s.paused)
}

/// A running `wq serve`, killed when dropped (so also when a test fails).
struct Serving {
    child: Child,
    /// Where it listens: `http://host:port`.
    base: String,
    /// What it wrote to stderr so far.
    stderr: Arc<Mutex<String>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Serving {
    /// Starts `wq <args>` (a `serve` listening on port 0) and waits until
    /// it says where it listens and `/ready` answers 200.
    async fn start(args: &[&str], http: &reqwest::Client) -> Self {
        let mut child = wq()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the wq binary starts");
        let stdout = child.stdout.take().expect("piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        tokio::spawn(collect(child.stderr.take().expect("piped"), stderr.clone()));
        let mut serving = Serving {
            child,
            base: String::new(),
            stderr,
        };
        let mut lines = BufReader::new(stdout).lines();
        let listening = tokio::time::timeout(SERVE_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("wq: serving on ") {
                    // "http://ADDR (the dashboard at ...)"
                    let base = rest.split_whitespace().next().unwrap_or_default();
                    return Some(base.to_owned());
                }
            }
            None
        })
        .await;
        serving.base = match listening {
            Ok(Some(base)) => base,
            Ok(None) => panic!("wq serve ended before listening:\n{}", serving.log()),
            Err(_) => panic!(
                "wq serve did not listen within {SERVE_TIMEOUT:?}:\n{}",
                serving.log()
            ),
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let deadline = tokio::time::Instant::now() + SERVE_TIMEOUT;
        loop {
            let ready = http.get(serving.url("/ready")).send().await;
            if ready.as_ref().is_ok_and(|r| r.status() == 200) {
                break serving;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/ready did not answer 200 within {SERVE_TIMEOUT:?} (last: {ready:?}):\n{}",
                serving.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Kills the process and waits for it.
    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.child.wait()).await;
    }
}

/// Appends what `from` writes to `into`, line by line.
async fn collect(from: impl AsyncRead + Unpin, into: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(mut s) = into.lock() {
            s.push_str(&line);
            s.push('\n');
        }
    }
}

/// A plain HTTP client, ignoring any proxy the environment names.
fn http() -> reqwest::Client {
    // reqwest comes without a crypto provider: give it ring's (the first
    // test to get here installs it; the others find it installed).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_with_a_token_on_memory() {
    let http = http();
    let args = [
        "--backend",
        "memory",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--token",
        "T",
        "--demo",
    ];
    let server = Serving::start(&args, &http).await;
    let log = || server.log();

    let queues = server.url("/api/queues");
    let anonymous = http.get(&queues).send().await.expect("GET /api/queues");
    assert_eq!(anonymous.status(), 401, "{}", log());
    let wrong = http
        .get(&queues)
        .bearer_auth("not-T")
        .send()
        .await
        .expect("GET /api/queues");
    assert_eq!(wrong.status(), 401, "{}", log());
    let admin = http
        .get(&queues)
        .header("Authorization", "Bearer T")
        .send()
        .await
        .expect("GET /api/queues");
    assert_eq!(admin.status(), 200, "{}", log());
    let listed: serde_json::Value = admin.json().await.expect("JSON");
    let names: Vec<&str> = listed
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {listed}"))
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    assert_eq!(names, ["demo"], "{listed}");

    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(metrics.status(), 200, "{}", log());
    let text = metrics.text().await.expect("text");
    assert!(
        text.contains("wq_queue_jobs{") && text.contains("queue=\"demo\""),
        "{text}"
    );

    let openapi = http
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .expect("GET /api/openapi.json");
    assert_eq!(openapi.status(), 200, "{}", log());
    let doc: serde_json::Value = openapi.json().await.expect("the OpenAPI document is JSON");
    assert!(doc["paths"]["/api/jobs"].is_object(), "{doc}");

    let health = http
        .get(server.url("/health"))
        .send()
        .await
        .expect("GET /health");
    assert_eq!(health.status(), 200, "{}", log());
    let health: serde_json::Value = health.json().await.expect("JSON");
    assert_eq!(health["store"]["reachable"], true, "{health}");
    assert_eq!(health["workers"]["alive"], 1, "the demo's worker: {health}");
    assert_eq!(
        health["workers"]["watched"], 1,
        "the demo's worker: {health}"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_auth_says_so_loudly() {
    let http = http();
    let args = [
        "--backend",
        "memory",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-auth",
    ];
    let server = Serving::start(&args, &http).await;
    let queues = http
        .get(server.url("/api/queues"))
        .send()
        .await
        .expect("GET /api/queues");
    assert_eq!(queues.status(), 200, "{}", server.log());
    assert!(server.log().contains("AUTH IS OFF"), "{}", server.log());
    server.stop().await;
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_token_or_no_auth() {
    let args = ["--backend", "memory", "serve", "--listen", "127.0.0.1:0"];
    let run = finish(wq(), &args).await;
    assert!(!run.success, "{}", run.shown());
    assert!(run.stderr.contains("--no-auth"), "{}", run.shown());
    let run = finish(wq(), &[&args[..], &["--tenant-token", "acme"]].concat()).await;
    assert!(!run.success, "{}", run.shown());
    assert!(run.stderr.contains("tenant=token"), "{}", run.shown());
}

/// A configuration file names the backend and namespace; a flag wins over
/// it; a file with an unknown name is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_file_is_read_and_flags_win() {
    let url = redis_url();
    let namespace = fresh("wq-conf-");
    let store = redis(&url, &namespace).await;
    let dir = std::env::temp_dir().join(fresh("wq-conf-"));
    cleaned_up(
        async {
            let client = Client::new(store.clone());
            client
                .declare_queue(QueueConfig::new("configured"))
                .await
                .expect("declare");
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            let file = dir.join("wq.toml");
            std::fs::write(
                &file,
                format!("backend = \"redis\"\nurl = \"{url}\"\nnamespace = \"{namespace}\"\n"),
            )
            .expect("write the file");
            let path = file.to_string_lossy().into_owned();
            let run = finish(wq(), &["--config", &path, "stats"]).await;
            assert!(run.success, "{}", run.shown());
            assert!(run.stdout.contains("configured"), "{}", run.shown());
            let other = fresh("wq-conf-");
            let run = finish(wq(), &["--config", &path, "--namespace", &other, "stats"]).await;
            assert!(run.success, "{}", run.shown());
            assert!(
                !run.stdout.contains("configured"),
                "the flag's namespace: {}",
                run.shown()
            );
            std::fs::write(&file, "colour = \"blue\"\n").expect("write the file");
            let run = finish(wq(), &["--config", &path, "stats"]).await;
            assert!(
                !run.success && run.stderr.contains("colour"),
                "{}",
                run.shown()
            );
        },
        async {
            let _ = std::fs::remove_dir_all(&dir);
            let _ = store.clear().await;
        },
    )
    .await;
}
