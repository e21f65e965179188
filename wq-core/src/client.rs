//! The [`Client`]: enqueue jobs and operate queues.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rand::RngExt;
use serde::Serialize;

use crate::admin::{Admin, Counts, DeadJobs, ListQuery, Position};
use crate::admission::{Admission, Admissions, Allowance};
use crate::error::{Error, ValidationError};
use crate::events::{EventKind, Events, JobEvent, listening};
use crate::job::{Job, JobId, JobState, NewJob, Payload, RunAt};
use crate::name::{GroupKey, QueueName, SessionKey};
use crate::queue::{QueueConfig, QueueInfo};
use crate::session::{PauseChange, SessionInfo, SessionLimits, Sessions};
use crate::store::{Enqueued, Store};
use crate::time::{SharedClock, SystemClock, Timestamp};
use crate::typed::IntoEnqueue;
use crate::validate;

/// How long a client trusts its copy of a queue's settings.
const CONFIG_TTL: Duration = Duration::from_secs(10);

/// Jobs pruned per round trip by [`Client::prune`].
const PRUNE_BATCH: usize = 1_000;

/// One job to enqueue, built fluently and checked when it is enqueued.
///
/// ```
/// use std::time::Duration;
/// use wq::Enqueue;
///
/// let job = Enqueue::new("message", &serde_json::json!({ "text": "hi" }))
///     .group("customer-42")
///     .chained(Duration::from_secs(2), Duration::from_millis(500))
///     .idempotency_key("order-42-confirmation");
/// # let _ = job;
/// ```
#[derive(Clone, Debug)]
pub struct Enqueue {
    queue: QueueName,
    payload: Result<Payload, ValidationError>,
    group: Option<GroupKey>,
    session: Option<SessionKey>,
    tenant: Option<Arc<str>>,
    priority: Option<i16>,
    when: When,
    max_attempts: Option<u32>,
    idempotency_key: Option<Arc<str>>,
    id: Option<JobId>,
}

#[derive(Clone, Copy, Debug)]
enum When {
    Now,
    Delay(Duration),
    At(Timestamp),
    Chained { delay: Duration, jitter: Duration },
}

impl Enqueue {
    /// A job for `queue` carrying `payload` as JSON.
    pub fn new<T: Serialize + ?Sized>(queue: impl Into<QueueName>, payload: &T) -> Self {
        let payload = Payload::from_json(payload).map_err(|e| {
            ValidationError::new("payload", format!("does not serialize to JSON: {e}"))
        });
        Self::with_payload(queue.into(), payload)
    }

    /// A job carrying an already-built payload.
    pub fn raw(queue: impl Into<QueueName>, payload: Payload) -> Self {
        Self::with_payload(queue.into(), Ok(payload))
    }

    /// A job whose payload the caller built and checked itself: a layer
    /// with its own payload rules passes their verdict here, and an error is
    /// returned, naming its field, when the job is enqueued.
    pub fn checked(queue: impl Into<QueueName>, payload: Result<Payload, ValidationError>) -> Self {
        Self::with_payload(queue.into(), payload)
    }

    fn with_payload(queue: QueueName, payload: Result<Payload, ValidationError>) -> Self {
        Self {
            queue,
            payload,
            group: None,
            session: None,
            tenant: None,
            priority: None,
            when: When::Now,
            max_attempts: None,
            idempotency_key: None,
            id: None,
        }
    }

    /// Orders the job after earlier jobs of `group`, one in flight at a time.
    pub fn group(mut self, group: impl Into<GroupKey>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Runs the job under `session`'s limits and pause (see
    /// [`SessionLimits`](crate::SessionLimits)); e.g. the number that sends it.
    pub fn session(mut self, session: impl Into<SessionKey>) -> Self {
        self.session = Some(session.into());
        self
    }

    /// Tags the job with a tenant (e.g. the account it acts for).
    pub fn tenant(mut self, tenant: impl Into<Arc<str>>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets the priority (lower runs first among due group heads).
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Runs no earlier than `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.when = When::Delay(delay);
        self
    }

    /// Runs no earlier than `at`.
    pub fn run_at(mut self, at: Timestamp) -> Self {
        self.when = When::At(at);
        self
    }

    /// Time chaining: runs `delay` plus up to `jitter` after the group's
    /// latest job (or after now, whichever is later), computed atomically by
    /// the backend. Needs a group.
    pub fn chained(mut self, delay: Duration, jitter: Duration) -> Self {
        self.when = When::Chained { delay, jitter };
        self
    }

    /// Overrides the queue's attempt limit.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Deduplicates: while a job with this key is retained in the queue, an
    /// enqueue returns it and stores nothing.
    pub fn idempotency_key(mut self, key: impl Into<Arc<str>>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Pre-assigns the job id; enqueueing an id that exists returns that job.
    pub fn id(mut self, id: JobId) -> Self {
        self.id = Some(id);
        self
    }

    /// The target queue.
    pub fn queue_name(&self) -> &QueueName {
        &self.queue
    }

    /// Checks everything against the queue's settings and resolves the time.
    pub fn build(self, config: &QueueConfig, now: Timestamp) -> Result<NewJob, ValidationError> {
        let payload = self.payload?;
        validate::payload(&payload, config.max_payload_bytes)?;
        if let Some(g) = &self.group {
            validate::name_like("group", g.as_str(), validate::MAX_GROUP_KEY)?;
        }
        if let Some(s) = &self.session {
            validate::name_like("session", s.as_str(), validate::MAX_SESSION_KEY)?;
        }
        if let Some(t) = &self.tenant {
            validate::name_like("tenant", t, validate::MAX_TENANT)?;
        }
        if let Some(k) = &self.idempotency_key {
            validate::name_like("idempotency_key", k, validate::MAX_IDEMPOTENCY_KEY)?;
        }
        let max_attempts = self.max_attempts.unwrap_or(config.retry.max_attempts);
        validate::max_attempts(max_attempts)?;
        let run_at = match self.when {
            When::Now => RunAt::At(now),
            When::Delay(d) => {
                validate::delay("delay", d)?;
                RunAt::At(now + d)
            }
            When::At(t) => {
                validate::delay("run_at", t.duration_since(now))?;
                RunAt::At(t)
            }
            When::Chained { delay, jitter } => {
                validate::delay("delay", delay)?;
                validate::delay("jitter", jitter)?;
                if self.group.is_none() {
                    return Err(ValidationError::new(
                        "group",
                        "time chaining spaces jobs within a group; set one",
                    ));
                }
                let jitter_us = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
                let sampled = match jitter_us {
                    0 => 0,
                    j => rand::rng().random_range(0..=j),
                };
                RunAt::Chained {
                    offset: delay + Duration::from_micros(sampled),
                }
            }
        };
        Ok(NewJob {
            id: self.id.unwrap_or_default(),
            queue: self.queue,
            tenant: self.tenant,
            group: self.group,
            session: self.session,
            priority: self.priority.unwrap_or(config.default_priority),
            run_at,
            max_attempts,
            idempotency_key: self.idempotency_key,
            payload,
        })
    }
}

/// Enqueues jobs and operates queues over any [`Store`].
///
/// Cheap to clone; clones share the store, the clock and the cache of queue
/// settings.
#[derive(Debug)]
pub struct Client<S> {
    inner: Arc<Inner<S>>,
    events: Option<Events>,
}

impl<S> Clone for Client<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            events: self.events.clone(),
        }
    }
}

#[derive(Debug)]
struct Inner<S> {
    store: S,
    clock: SharedClock,
    configs: RwLock<HashMap<QueueName, (Arc<QueueConfig>, Instant)>>,
}

impl<S: Store> Client<S> {
    /// A client reading the system clock.
    pub fn new(store: S) -> Self {
        Self::with_clock(store, SystemClock::shared())
    }

    /// A client reading `clock` (tests pass a [`crate::ManualClock`]).
    pub fn with_clock(store: S, clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                configs: RwLock::new(HashMap::new()),
            }),
            events: None,
        }
    }

    /// Tells `events` of every job this client stores or cancels.
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = Some(events);
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Creates or updates a queue.
    pub async fn declare_queue(&self, config: QueueConfig) -> Result<(), Error> {
        validate::queue_config(&config)?;
        self.inner.store.declare_queue(&config).await?;
        self.inner
            .configs
            .write()
            .insert(config.name.clone(), (Arc::new(config), Instant::now()));
        Ok(())
    }

    /// A queue's settings and state.
    pub async fn queue(&self, name: &str) -> Result<Option<QueueInfo>, Error> {
        validate::queue_name(name)?;
        Ok(self.inner.store.queue_info(&QueueName::from(name)).await?)
    }

    async fn config(&self, name: &QueueName) -> Result<Arc<QueueConfig>, Error> {
        if let Some((c, at)) = self.inner.configs.read().get(name)
            && at.elapsed() < CONFIG_TTL
        {
            return Ok(c.clone());
        }
        validate::queue_name(name.as_str())?;
        let info = self
            .inner
            .store
            .queue_info(name)
            .await?
            .ok_or_else(|| ValidationError::unknown_queue(name.as_str()))?;
        let config = Arc::new(info.config);
        self.inner
            .configs
            .write()
            .insert(name.clone(), (config.clone(), Instant::now()));
        Ok(config)
    }

    /// Enqueues one job: an [`Enqueue`], or a [`TypedJob`](crate::TypedJob)
    /// value with its type's queue and options; returns it once stored.
    pub async fn enqueue(&self, job: impl IntoEnqueue) -> Result<Enqueued, Error> {
        let job = job.into_enqueue();
        let config = self.config(&job.queue).await?;
        let new = job.build(&config, self.now())?;
        let mut stored = self.inner.store.enqueue(vec![new], self.now()).await?;
        self.tell_enqueued(&stored);
        stored
            .pop()
            .ok_or_else(|| Error::Store(crate::StoreError::backend("enqueue returned nothing")))
    }

    /// Enqueues a batch in one round trip, all or nothing: one bad job
    /// refuses the batch, naming the job's index and field.
    pub async fn enqueue_many(
        &self,
        jobs: impl IntoIterator<Item = impl IntoEnqueue>,
    ) -> Result<Vec<Enqueued>, Error> {
        let jobs: Vec<Enqueue> = jobs.into_iter().map(IntoEnqueue::into_enqueue).collect();
        if jobs.len() > validate::MAX_BATCH {
            return Err(ValidationError::new(
                "jobs",
                format!(
                    "{} jobs; one batch takes at most {}",
                    jobs.len(),
                    validate::MAX_BATCH
                ),
            )
            .into());
        }
        let now = self.now();
        let mut built = Vec::with_capacity(jobs.len());
        let mut last: Option<Arc<QueueConfig>> = None;
        for (i, job) in jobs.into_iter().enumerate() {
            let config = match &last {
                Some(c) if c.name == job.queue => c.clone(),
                _ => self.config(&job.queue).await.map_err(|e| match e {
                    Error::Invalid(v) => Error::Invalid(v.at(i)),
                    other => other,
                })?,
            };
            built.push(job.build(&config, now).map_err(|e| e.at(i))?);
            last = Some(config);
        }
        if built.is_empty() {
            return Ok(Vec::new());
        }
        let stored = self.inner.store.enqueue(built, now).await?;
        self.tell_enqueued(&stored);
        Ok(stored)
    }

    /// Tells the client's events of the jobs a call stored.
    fn tell_enqueued(&self, stored: &[Enqueued]) {
        let Some(events) = listening(&self.events) else {
            return;
        };
        let at = self.now();
        for e in stored.iter().filter(|e| e.created) {
            events.send(JobEvent {
                id: e.job.id,
                queue: e.job.queue.clone(),
                at,
                kind: EventKind::Enqueued {
                    run_at: e.job.run_at,
                },
            });
        }
    }

    /// One job by id.
    pub async fn get(&self, id: JobId) -> Result<Option<Job>, Error> {
        Ok(self.inner.store.get(id).await?)
    }

    /// Deletes every finished job past its queue's retention; returns how many.
    pub async fn prune(&self) -> Result<u64, Error> {
        let mut total = 0;
        loop {
            let n = self.inner.store.prune(self.now(), PRUNE_BATCH).await?;
            total += n;
            if n < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// The queue's and session's names, checked (the queue declared).
    async fn session_key(
        &self,
        queue: &str,
        session: &str,
    ) -> Result<(QueueName, SessionKey), Error> {
        validate::name_like("session", session, validate::MAX_SESSION_KEY)?;
        let name = QueueName::from(queue);
        self.config(&name).await?;
        Ok((name, SessionKey::from(session)))
    }
}

/// An operator's calls: queues, listing, counts, the dead-letter queue,
/// cancelling and pausing.
impl<S: Store + Admin> Client<S> {
    /// Every declared queue.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, Error> {
        Ok(self.inner.store.list_queues().await?)
    }

    /// Cancels a job: at once if it waits; if it runs, its handler is told
    /// at the next heartbeat and the job ends `cancelled` (or `completed` if
    /// the handler finished first).
    pub async fn cancel(&self, id: JobId) -> Result<Job, Error> {
        let job = self.inner.store.cancel(id, self.now()).await?;
        if let Some(events) = listening(&self.events)
            && job.state == JobState::Cancelled
        {
            events.send(JobEvent {
                id: job.id,
                queue: job.queue.clone(),
                at: self.now(),
                kind: EventKind::Cancelled,
            });
        }
        Ok(job)
    }

    /// Stops workers from claiming from `queue`; enqueueing goes on.
    pub async fn pause(&self, queue: &str) -> Result<(), Error> {
        self.set_paused(queue, true).await
    }

    /// Lets workers claim from `queue` again, waking them at once.
    pub async fn resume(&self, queue: &str) -> Result<(), Error> {
        self.set_paused(queue, false).await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), Error> {
        let name = QueueName::from(queue);
        self.config(&name).await?;
        Ok(self.inner.store.set_paused(&name, paused).await?)
    }

    /// Jobs matching `query`, in id order.
    pub async fn list(&self, query: ListQuery) -> Result<Vec<Job>, Error> {
        validate::list_limit(query.limit)?;
        if let Some(q) = &query.queue {
            validate::queue_name(q.as_str())?;
        }
        if let Some(t) = &query.tenant {
            validate::name_like("tenant", t, validate::MAX_TENANT)?;
        }
        if let Some(g) = &query.group {
            validate::name_like("group", g.as_str(), validate::MAX_GROUP_KEY)?;
        }
        if query.queue.is_none() && (query.group.is_some() || query.idempotency_key.is_some()) {
            return Err(ValidationError::new(
                "queue",
                "groups and idempotency keys belong to a queue: name the queue",
            )
            .into());
        }
        if let Some(k) = &query.idempotency_key {
            validate::name_like("idempotency_key", k, validate::MAX_IDEMPOTENCY_KEY)?;
        }
        Ok(self.inner.store.list(&query).await?)
    }

    /// Up to `limit` dead jobs of `queue`.
    pub async fn dead(&self, queue: &str, limit: usize) -> Result<Vec<Job>, Error> {
        self.list(
            ListQuery::new()
                .queue(queue)
                .state(crate::JobState::Dead)
                .limit(limit),
        )
        .await
    }

    /// Runs dead jobs again with fresh attempts; returns how many.
    pub async fn retry_dead(&self, which: DeadJobs) -> Result<u64, Error> {
        self.check_dead_selection(&which).await?;
        Ok(self.inner.store.retry_dead(&which, self.now()).await?)
    }

    /// Deletes dead jobs; returns how many.
    pub async fn purge_dead(&self, which: DeadJobs) -> Result<u64, Error> {
        self.check_dead_selection(&which).await?;
        Ok(self.inner.store.purge_dead(&which, self.now()).await?)
    }

    async fn check_dead_selection(&self, which: &DeadJobs) -> Result<(), Error> {
        match which {
            DeadJobs::All(q) => self.config(q).await.map(drop),
            DeadJobs::Ids(ids) if ids.len() > validate::MAX_BATCH => Err(ValidationError::new(
                "ids",
                format!("{} ids; at most {}", ids.len(), validate::MAX_BATCH),
            )
            .into()),
            DeadJobs::Ids(_) => Ok(()),
        }
    }

    /// Jobs of `queue` by state.
    pub async fn counts(&self, queue: &str) -> Result<Counts, Error> {
        let name = QueueName::from(queue);
        self.config(&name).await?;
        Ok(self.inner.store.counts(&name).await?)
    }

    /// How long the job next in line in `queue` has been due (see
    /// [`Admin::next_in_line`]); `None` when nothing is due.
    pub async fn oldest_wait(&self, queue: &str) -> Result<Option<Duration>, Error> {
        let name = QueueName::from(queue);
        self.config(&name).await?;
        let now = self.now();
        let due = self.inner.store.next_in_line(&name, now).await?;
        Ok(due.map(|at| now.duration_since(at)))
    }

    /// Where a waiting job stands in its group and its queue.
    pub async fn position(&self, id: JobId) -> Result<Option<Position>, Error> {
        Ok(self.inner.store.position(id).await?)
    }
}

/// Admissions: each session's budget of new groups.
impl<S: Store + Admissions> Client<S> {
    /// Sets (or, with `None`, lifts) how many new groups `session` may take
    /// on per window; a bad allowance gets a [`ValidationError`] naming the
    /// field, and nothing is stored.
    pub async fn set_allowance(
        &self,
        queue: &str,
        session: &str,
        allowance: Option<Allowance>,
    ) -> Result<(), Error> {
        let (queue, session) = self.session_key(queue, session).await?;
        if let Some(a) = &allowance {
            a.validate()?;
        }
        Ok(self
            .inner
            .store
            .set_allowance(&queue, &session, allowance.as_ref())
            .await?)
    }

    /// Refuses `session` new groups until `until`.
    pub async fn hold_admissions(
        &self,
        queue: &str,
        session: &str,
        until: Timestamp,
    ) -> Result<(), Error> {
        let (queue, session) = self.session_key(queue, session).await?;
        Ok(self
            .inner
            .store
            .hold_admissions(&queue, &session, until)
            .await?)
    }

    /// Admits `session` to `group` now (see [`Admissions::admit`]).
    pub async fn admit(&self, queue: &str, session: &str, group: &str) -> Result<Admission, Error> {
        let (queue, session) = self.session_key(queue, session).await?;
        validate::name_like("group", group, validate::MAX_GROUP_KEY)?;
        let now = self.now();
        Ok(self
            .inner
            .store
            .admit(&queue, &session, &GroupKey::from(group), now)
            .await?)
    }
}

/// Sessions: limits, pause and counts per session of a queue.
impl<S: Store + Sessions> Client<S> {
    /// Sets the limits of `session` in `queue`; every worker process
    /// applies them from its next claim.
    ///
    /// ```
    /// use std::time::Duration;
    /// use wq::{Client, Enqueue, MemoryStore, QueueConfig, Rate, SessionLimits};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), wq::Error> {
    /// let client = Client::new(MemoryStore::new());
    /// client.declare_queue(QueueConfig::new("message")).await?;
    /// let limits = SessionLimits::new()
    ///     .max_running(1)
    ///     .rate(Rate::new(20, Duration::from_secs(1)));
    /// client.set_session_limits("message", "5511999990000", limits).await?;
    /// client
    ///     .enqueue(Enqueue::new("message", "hi").group("ana").session("5511999990000"))
    ///     .await?;
    /// let info = client.session("message", "5511999990000").await?.unwrap();
    /// assert_eq!((info.limits, info.waiting), (limits, 1));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_session_limits(
        &self,
        queue: &str,
        session: &str,
        limits: SessionLimits,
    ) -> Result<(), Error> {
        let (queue, session) = self.session_key(queue, session).await?;
        limits.validate()?;
        Ok(self
            .inner
            .store
            .set_session_limits(&queue, &session, &limits)
            .await?)
    }

    /// Stops workers from starting `session`'s jobs, as an operator
    /// ([`OPERATOR_PAUSE`](crate::OPERATOR_PAUSE), which no process lifts
    /// by itself); its groups keep their order and no attempt is spent.
    pub async fn pause_session(&self, queue: &str, session: &str) -> Result<(), Error> {
        self.change_session_pause(queue, session, PauseChange::operator())
            .await
            .map(drop)
    }

    /// Lets workers start `session`'s jobs again, whoever paused it and
    /// why, waking them at once.
    pub async fn resume_session(&self, queue: &str, session: &str) -> Result<(), Error> {
        self.change_session_pause(queue, session, PauseChange::Resume)
            .await
            .map(drop)
    }

    /// Changes `session`'s pause as `change` says against the pause in
    /// force; true if it changed. A bad reason gets a [`ValidationError`]
    /// naming `reason`.
    pub async fn change_session_pause(
        &self,
        queue: &str,
        session: &str,
        change: PauseChange,
    ) -> Result<bool, Error> {
        let (queue, session) = self.session_key(queue, session).await?;
        change.validate()?;
        Ok(self
            .inner
            .store
            .set_session_paused(&queue, &session, &change)
            .await?)
    }

    /// One session's limits, pause and counts.
    pub async fn session(&self, queue: &str, session: &str) -> Result<Option<SessionInfo>, Error> {
        let (queue, session) = self.session_key(queue, session).await?;
        Ok(self.inner.store.session_info(&queue, &session).await?)
    }

    /// Up to `limit` sessions of `queue` after `after`, by key.
    pub async fn sessions(
        &self,
        queue: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<SessionInfo>, Error> {
        validate::list_limit(limit)?;
        let name = QueueName::from(queue);
        self.config(&name).await?;
        let after = after.map(SessionKey::from);
        Ok(self
            .inner
            .store
            .list_sessions(&name, after.as_ref(), limit)
            .await?)
    }
}
