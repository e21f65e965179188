//! Handlers under tower layers on the memory backend: the layer runs, its
//! errors map onto `JobError` as documented, and readiness is awaited on
//! the clone that is called, once per job.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::limit::ConcurrencyLimitLayer;
use tower::{BoxError, Layer, Service, ServiceBuilder};
use wq_core::{
    Client, Enqueue, HandlerFuture, HandlerService, Job, JobContext, JobError, JobId, JobState,
    QueueConfig, RetryPolicy, Worker,
};
use wq_memory::MemoryStore;

/// Fast retries, so a test sees every attempt within milliseconds.
fn quick_retries(name: &str) -> QueueConfig {
    QueueConfig::new(name).retry(RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(10),
        jitter: false,
        ..RetryPolicy::default()
    })
}

async fn client_with(config: QueueConfig) -> (MemoryStore, Client<MemoryStore>) {
    let store = MemoryStore::new();
    let client = Client::new(store.clone());
    client.declare_queue(config).await.expect("declare");
    (store, client)
}

async fn until_terminal(client: &Client<MemoryStore>, id: JobId) -> Job {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let job = client.get(id).await.expect("get").expect("job exists");
            if job.state.is_terminal() {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("job ends within 10 s")
}

#[test]
fn boxed_job_errors_are_restored_and_others_retry() {
    let own: BoxError = Box::new(JobError::permanent("number not on WhatsApp"));
    assert_eq!(
        JobError::from(own),
        JobError::permanent("number not on WhatsApp")
    );
    let foreign: BoxError = "service overloaded".into();
    assert_eq!(
        JobError::from(foreign),
        JobError::retry("service overloaded")
    );
}

#[tokio::test]
async fn a_tower_timeout_turns_into_a_retryable_failure() {
    let (store, client) = client_with(quick_retries("slow")).await;
    let id = client
        .enqueue(Enqueue::new("slow", &"hi"))
        .await
        .expect("enqueue")
        .job
        .id;
    let slow = |_ctx: JobContext| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<(), JobError>(())
    };
    let service = ServiceBuilder::new()
        .map_err(JobError::from)
        .timeout(Duration::from_millis(20))
        .service(HandlerService::new(slow));
    let worker = Worker::new(store)
        .service("slow", service)
        .start()
        .await
        .expect("start");
    let job = until_terminal(&client, id).await;
    worker.shutdown(Duration::from_secs(5)).await;

    // The queue's own timeout is 5 minutes: only the layer could end these.
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.attempt, 3, "each timeout spent one attempt and retried");
    assert_eq!(job.last_error.as_deref(), Some("request timed out"));
}

#[tokio::test]
async fn a_handlers_own_error_passes_through_a_boxing_layer() {
    let (store, client) = client_with(quick_retries("refused")).await;
    let id = client
        .enqueue(Enqueue::new("refused", &"hi"))
        .await
        .expect("enqueue")
        .job
        .id;
    let refuse = |_ctx: JobContext| async { Err(JobError::permanent("not on WhatsApp")) };
    let service = ServiceBuilder::new()
        .map_err(JobError::from)
        .timeout(Duration::from_secs(5))
        .service(HandlerService::new(refuse));
    let worker = Worker::new(store)
        .service("refused", service)
        .start()
        .await
        .expect("start");
    let job = until_terminal(&client, id).await;
    worker.shutdown(Duration::from_secs(5)).await;

    assert_eq!(
        (job.state, job.attempt, job.last_error.as_deref()),
        (JobState::Dead, 1, Some("not on WhatsApp")),
        "still permanent after the timeout layer boxed it"
    );
}

#[tokio::test]
async fn a_concurrency_limit_layer_bounds_running_handlers() {
    const JOBS: usize = 8;
    let (store, client) = client_with(QueueConfig::new("limited").concurrency(4)).await;
    let jobs = client
        .enqueue_many((0..JOBS).map(|i| Enqueue::new("limited", &i).group(format!("g{i}"))))
        .await
        .expect("enqueue");
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let handler = move |_ctx: JobContext| {
        let (running, most) = (r.clone(), m.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<(), JobError>(())
        }
    };
    let service = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(1))
        .service(HandlerService::new(handler));
    let worker = Worker::new(store)
        .service("limited", service)
        .start()
        .await
        .expect("start");
    for stored in &jobs {
        let job = until_terminal(&client, stored.job.id).await;
        // A call without a permit from poll_ready would panic and fail it.
        assert_eq!((job.state, job.attempt), (JobState::Completed, 1));
    }
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "the layer, not the queue's 4, set the limit"
    );
}

/// A layer that checks the tower contract on every clone: `call` only
/// after `poll_ready` said ready on that same clone, and readiness that
/// is pending at first.
#[derive(Clone)]
struct Strict<S> {
    inner: S,
    ready: bool,
    pending_once: bool,
    polls: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

struct StrictLayer {
    polls: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl<S> Layer<S> for StrictLayer {
    type Service = Strict<S>;

    fn layer(&self, inner: S) -> Strict<S> {
        Strict {
            inner,
            ready: false,
            pending_once: true,
            polls: self.polls.clone(),
            calls: self.calls.clone(),
        }
    }
}

impl<S> Service<JobContext> for Strict<S>
where
    S: Service<JobContext, Response = (), Error = JobError, Future = HandlerFuture>,
{
    type Response = ();
    type Error = JobError;
    type Future = HandlerFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if std::mem::take(&mut self.pending_once) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = true;
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ctx: JobContext) -> HandlerFuture {
        if !std::mem::take(&mut self.ready) {
            return Box::pin(async { Err(JobError::permanent("called before poll_ready")) });
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.call(ctx)
    }
}

#[tokio::test]
async fn readiness_is_awaited_on_the_called_clone_before_each_job() {
    const JOBS: usize = 5;
    let (store, client) = client_with(QueueConfig::new("strict")).await;
    let jobs = client
        .enqueue_many((0..JOBS).map(|i| Enqueue::new("strict", &i)))
        .await
        .expect("enqueue");
    let (polls, calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let handler = move |_ctx: JobContext| {
        h.fetch_add(1, Ordering::SeqCst);
        async { Ok::<(), JobError>(()) }
    };
    let service = ServiceBuilder::new()
        .layer(StrictLayer {
            polls: polls.clone(),
            calls: calls.clone(),
        })
        .service(HandlerService::new(handler));
    let worker = Worker::new(store)
        .service("strict", service)
        .start()
        .await
        .expect("start");
    for stored in &jobs {
        let job = until_terminal(&client, stored.job.id).await;
        assert_eq!(job.state, JobState::Completed, "{:?}", job.last_error);
    }
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(calls.load(Ordering::SeqCst), JOBS);
    assert_eq!(handled.load(Ordering::SeqCst), JOBS);
    assert_eq!(
        polls.load(Ordering::SeqCst),
        2 * JOBS,
        "each job's clone was polled until ready: pending once, then ready"
    );
}

/// A service that is never ready: its readiness error ends the attempt.
#[derive(Clone)]
struct Closed;

impl Service<JobContext> for Closed {
    type Response = ();
    type Error = JobError;
    type Future = HandlerFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Err(JobError::permanent("service closed")))
    }

    fn call(&mut self, _ctx: JobContext) -> HandlerFuture {
        Box::pin(async { Err(JobError::permanent("called although not ready")) })
    }
}

#[tokio::test]
async fn a_readiness_error_fails_the_attempt_without_a_call() {
    let (store, client) = client_with(QueueConfig::new("closed")).await;
    let id = client
        .enqueue(Enqueue::new("closed", &"hi"))
        .await
        .expect("enqueue")
        .job
        .id;
    let worker = Worker::new(store)
        .service("closed", Closed)
        .start()
        .await
        .expect("start");
    let job = until_terminal(&client, id).await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        (job.state, job.last_error.as_deref()),
        (JobState::Dead, Some("service closed"))
    );
}
