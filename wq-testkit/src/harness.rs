//! What the tests share: the backend factory, failures, waiting, fixtures.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use wq_core::{
    Ack, AckAction, AckOutcome, Backend, ClaimRequest, Client, Job, JobId, ManualClock,
    QueueConfig, RetryPolicy, ShutdownReport, Store, Timestamp, WorkerHandle,
};

/// Makes fresh, isolated backends for the suite: its own schema, key prefix
/// or process-local store per test, so tests run in parallel.
pub trait TestBackend: Send + Sync + 'static {
    /// The backend under test.
    type Backend: Backend;

    /// A new, empty backend. A missing server is a failure whose message
    /// says how to start it.
    fn create(&self) -> impl Future<Output = Result<Self::Backend, Failure>> + Send;

    /// Removes what `create` made.
    fn destroy(&self, backend: Self::Backend) -> impl Future<Output = ()> + Send;
}

/// A broken guarantee, or an error that kept a test from checking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl Failure {
    /// A failure saying `msg`.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

impl From<wq_core::Error> for Failure {
    fn from(e: wq_core::Error) -> Self {
        Failure(format!("unexpected error: {e}"))
    }
}

impl From<wq_core::StoreError> for Failure {
    fn from(e: wq_core::StoreError) -> Self {
        Failure(format!("unexpected store error: {e}"))
    }
}

/// The result of one conformance test.
pub type TestResult = Result<(), Failure>;

/// Fails the test with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::Failure::new(format!($($msg)+)));
        }
    };
}

/// Fails the test unless both sides are equal, showing both.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err($crate::Failure::new(format!(
                "{}: expected {:?}, got {:?}",
                format!($($msg)+),
                r,
                l
            )));
        }
    }};
}

/// Runs `test` on a fresh backend and destroys it afterwards, pass or fail.
pub async fn with_backend<T, F, Fut>(t: &T, test: F) -> TestResult
where
    T: TestBackend,
    F: FnOnce(T::Backend) -> Fut,
    Fut: Future<Output = TestResult>,
{
    let backend = t.create().await?;
    let result = test(backend.clone()).await;
    t.destroy(backend).await;
    result
}

/// Polls `check` until it holds or `within` passes. A check that never
/// returns (a store call that hangs) counts against `within` too.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, Failure>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let timed_out = || Failure(format!("timed out after {within:?} waiting for {what}"));
    loop {
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(held) => {
                if held? {
                    return Ok(());
                }
            }
            Err(_) => return Err(timed_out()),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(timed_out());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Awaits `fut` for at most [`PATIENCE`]: a store call, a task or a worker
/// that never finishes fails the test, naming `what`, instead of hanging it.
pub async fn within<F: Future>(what: &str, fut: F) -> Result<F::Output, Failure> {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .map_err(|_| Failure(format!("{what} did not finish within {PATIENCE:?}")))
}

/// Awaits a spawned task for at most [`PATIENCE`]; a panic fails the test.
pub async fn join<T>(what: &str, task: JoinHandle<T>) -> Result<T, Failure> {
    within(what, task)
        .await?
        .map_err(|e| Failure(format!("{what} panicked: {e}")))
}

/// Shuts `worker` down with a grace of 5 s, for at most [`PATIENCE`].
pub async fn stop(worker: WorkerHandle) -> Result<ShutdownReport, Failure> {
    stop_within(worker, Duration::from_secs(5)).await
}

/// Shuts `worker` down with `grace`, for at most [`PATIENCE`] beyond it.
pub async fn stop_within(worker: WorkerHandle, grace: Duration) -> Result<ShutdownReport, Failure> {
    let id = worker.id().to_owned();
    tokio::time::timeout(grace + PATIENCE, worker.shutdown(grace))
        .await
        .map_err(|_| Failure(format!("worker {id} did not shut down")))
}

/// Crashes `worker` (see [`WorkerHandle::crash`]), for at most [`PATIENCE`].
pub async fn crash(worker: WorkerHandle) -> TestResult {
    let id = worker.id().to_owned();
    within(&format!("the crash of worker {id}"), worker.crash()).await
}

/// How long one conformance test may run in all before
/// [`conformance_tests!`](crate::conformance_tests) fails it: every wait
/// inside is bounded by [`PATIENCE`], and this is the backstop for one that
/// is not.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the conformance test `name` to its end or [`TEST_TIMEOUT`], and
/// panics with its failure; what the test macros expand into.
#[doc(hidden)]
pub async fn run_bounded(name: &str, test: impl Future<Output = TestResult>) {
    match tokio::time::timeout(TEST_TIMEOUT, test).await {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => panic!("{name} failed: {failure}"),
        Err(_) => panic!(
            "{name} hung: no result within {TEST_TIMEOUT:?} (a store call or a worker that never returns)"
        ),
    }
}

/// Generous limit for anything the engine does in tests: the CI machine has
/// two noisy cores, and tests assert properties, never speed.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A retry policy fast enough for tests: 1 ms doubling to 8 ms, no jitter.
pub fn quick_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(8),
        jitter: false,
        disconnected_delay: Duration::from_millis(5),
    }
}

/// A client on a manual clock standing at the real current time.
pub fn manual_client<B: Backend>(backend: &B) -> (Client<B>, Arc<ManualClock>) {
    let clock = ManualClock::starting_now();
    (Client::with_clock(backend.clone(), clock.clone()), clock)
}

/// Declares `config` and fails the test if that fails.
pub async fn declare<B: Store>(client: &Client<B>, config: QueueConfig) -> TestResult {
    client.declare_queue(config).await.map_err(Failure::from)
}

/// Claims up to `limit` jobs of `queue` at `now` with a lease of `lease`.
pub async fn claim<B: Store>(
    backend: &B,
    queue: &str,
    limit: usize,
    now: Timestamp,
    lease: Duration,
) -> Result<Vec<Job>, Failure> {
    Ok(backend
        .claim(&claim_request(queue, limit, now, lease))
        .await?)
}

/// The claim the suite's helpers make, as the test's worker.
fn claim_request(queue: &str, limit: usize, now: Timestamp, lease: Duration) -> ClaimRequest {
    ClaimRequest::new(queue, limit, now, now + lease, "test-worker")
}

/// Claims through `ack_and_claim` with nothing to acknowledge, and checks
/// the next due time it may bring against `Scheduler::next_due`.
pub async fn claim_with_next_due<B: Backend>(
    backend: &B,
    queue: &str,
    limit: usize,
    now: Timestamp,
    lease: Duration,
) -> Result<Vec<Job>, Failure> {
    let req = claim_request(queue, limit, now, lease);
    let done = backend.ack_and_claim(&[], Some(&req), now).await?;
    if let Some(brought) = done.next_due {
        let asked = backend.next_due(&queue.into(), now).await?;
        ensure_eq!(brought, asked, "next due from the claim and from next_due");
    }
    Ok(done.jobs)
}

/// The fencing token a claimed job carries.
pub fn token(job: &Job) -> Result<u64, Failure> {
    job.lease
        .as_ref()
        .map(|l| l.token)
        .ok_or_else(|| Failure::new(format!("claimed job {} has no lease", job.id)))
}

/// Acknowledges one claimed job and returns the outcome.
pub async fn ack<B: Store>(
    backend: &B,
    job: &Job,
    action: AckAction,
    now: Timestamp,
) -> Result<AckOutcome, Failure> {
    let ack = Ack::for_job(job, action)
        .ok_or_else(|| Failure::new(format!("claimed job {} has no lease", job.id)))?;
    let mut out = backend.ack(std::slice::from_ref(&ack), now).await?;
    out.pop()
        .ok_or_else(|| Failure::new("ack returned no outcome"))
}

/// Completes claimed jobs in one acknowledgement batch.
pub async fn complete_all<B: Store>(
    backend: &B,
    jobs: &[Job],
    now: Timestamp,
) -> Result<Vec<AckOutcome>, Failure> {
    let acks = jobs
        .iter()
        .map(|j| {
            Ack::for_job(j, AckAction::complete())
                .ok_or_else(|| Failure::new(format!("claimed job {} has no lease", j.id)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(backend.ack(&acks, now).await?)
}

/// A job that must exist.
pub async fn must_get<B: Store>(backend: &B, id: JobId) -> Result<Job, Failure> {
    backend
        .get(id)
        .await?
        .ok_or_else(|| Failure(format!("job {id} is missing")))
}

/// Seconds as a [`Duration`].
pub const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Runs `cases` random sequences from `ops` (overridden by the
/// `WQ_PROPTEST_CASES` environment variable), each through `case` on a
/// two-thread runtime, shrinking a failure at most `max_shrink_iters`
/// times; `Err` holds the shrunk sequence and what broke.
pub(crate) fn run_cases<S, F, Fut>(
    ops: S,
    cases: u32,
    max_shrink_iters: u32,
    case: F,
) -> Result<(), String>
where
    S: proptest::strategy::Strategy,
    F: Fn(S::Value) -> Fut,
    Fut: Future<Output = TestResult>,
{
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let cases = std::env::var("WQ_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("no runtime: {e}"))?;
    let config = Config {
        cases,
        max_shrink_iters,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new(config)
        .run(&ops, |value| {
            rt.block_on(case(value))
                .map_err(|f| TestCaseError::fail(f.0))
        })
        .map_err(|e| e.to_string())
}
