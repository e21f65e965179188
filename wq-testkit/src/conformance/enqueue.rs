//! Guarantees 1 and 4, and bad input: enqueue stores everything or nothing,
//! idempotency keys deduplicate, and invalid input names its field.

use std::future::Future as _;
use std::task::Poll;
use std::time::Duration;

use wq_core::{
    AckAction, Client, Clock as _, Enqueue, Error, GroupKey, JobId, JobState, ListQuery, NewJob,
    Payload, QueueConfig, QueueName, RunAt, Store, StoreError,
};
use wq_whatsapp::{EnqueueMessage as _, OutboundMessage};

use crate::harness::{
    Failure, TestBackend, TestResult, ack, claim, declare, join, manual_client, secs, with_backend,
};
use crate::{ensure, ensure_eq};

/// A known idempotency key returns the existing job and stores nothing, in
/// single and batch enqueues, before and after the job finished; the key is
/// scoped to its queue. A pre-assigned id behaves the same way.
pub async fn idempotent_enqueue<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("inbound")).await?;
        declare(&client, QueueConfig::new("other")).await?;
        let first = client
            .enqueue(Enqueue::new("inbound", &"v1").idempotency_key("wamid.A"))
            .await?;
        ensure!(first.created, "the first enqueue stores the job");
        let again = client
            .enqueue(Enqueue::new("inbound", &"v2").idempotency_key("wamid.A"))
            .await?;
        ensure!(!again.created, "a known key stores nothing");
        ensure_eq!(
            again.job.id,
            first.job.id,
            "a known key returns the existing job"
        );
        ensure_eq!(
            again.job.payload.as_str(),
            "\"v1\"",
            "the existing payload is kept"
        );

        let batch = client
            .enqueue_many([
                Enqueue::new("inbound", &"b1").idempotency_key("wamid.B"),
                Enqueue::new("inbound", &"b2").idempotency_key("wamid.B"),
                Enqueue::new("inbound", &"a3").idempotency_key("wamid.A"),
            ])
            .await?;
        ensure!(
            batch[0].created && !batch[1].created && !batch[2].created,
            "batch dedup"
        );
        ensure_eq!(
            batch[1].job.id,
            batch[0].job.id,
            "a key repeated within a batch"
        );
        ensure_eq!(batch[2].job.id, first.job.id, "a known key within a batch");

        let elsewhere = client
            .enqueue(Enqueue::new("other", &"v1").idempotency_key("wamid.A"))
            .await?;
        ensure!(elsewhere.created, "keys are scoped to their queue");

        let now = clock.now();
        let jobs = claim(&b, "inbound", 10, now, secs(30)).await?;
        for j in &jobs {
            ack(&b, j, AckAction::complete(), now).await?;
        }
        let after = client
            .enqueue(Enqueue::new("inbound", &"v3").idempotency_key("wamid.A"))
            .await?;
        ensure!(
            !after.created,
            "a finished job still holds its key while retained"
        );
        ensure_eq!(
            after.job.state,
            JobState::Completed,
            "the existing job is returned as it is"
        );

        let id = JobId::new();
        let pre = client.enqueue(Enqueue::new("inbound", &"p").id(id)).await?;
        let dup = client
            .enqueue(Enqueue::new("inbound", &"p2").id(id))
            .await?;
        ensure!(
            pre.created && !dup.created,
            "a pre-assigned id deduplicates"
        );
        ensure_eq!(
            client.counts("inbound").await?.total(),
            3,
            "jobs stored in inbound"
        );
        Ok(())
    })
    .await
}

/// Eight concurrent enqueues of one key store one job and all get its id.
pub async fn concurrent_idempotent_enqueue<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(&client, QueueConfig::new("race")).await?;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                client
                    .enqueue(
                        Enqueue::new("race", &i)
                            .idempotency_key("same-key")
                            .group("g"),
                    )
                    .await
            }));
        }
        let mut ids = Vec::new();
        let mut created = 0;
        for task in tasks {
            let e = join("an enqueuer", task).await??;
            created += usize::from(e.created);
            ids.push(e.job.id);
        }
        ensure_eq!(created, 1, "enqueues that stored a job");
        ids.dedup();
        ensure_eq!(ids.len(), 1, "distinct ids returned");
        ensure_eq!(client.counts("race").await?.total(), 1, "jobs stored");
        Ok(())
    })
    .await
}

/// Enqueues of one idempotency key without a group, racing from many tasks
/// at once, single and in batches, store one job per key: nothing
/// serializes them but the key itself. Every caller gets that job's id.
pub async fn concurrent_idempotent_enqueue_without_group<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        declare(&client, QueueConfig::new("race")).await?;
        let (rounds, tasks_per_round) = (8, 12);
        for round in 0..rounds {
            let key = format!("wamid.{round}");
            let mut tasks = Vec::new();
            for i in 0..tasks_per_round {
                let (client, key) = (client.clone(), key.clone());
                tasks.push(tokio::spawn(async move {
                    if i % 2 == 0 {
                        let e = client
                            .enqueue(Enqueue::new("race", &i).idempotency_key(key))
                            .await?;
                        Ok::<_, wq_core::Error>(vec![e])
                    } else {
                        // A batch carrying the key beside a job of its own.
                        let batch = [
                            Enqueue::new("race", &i).idempotency_key(format!("own.{i}.{key}")),
                            Enqueue::new("race", &i).idempotency_key(key),
                        ];
                        Ok(client.enqueue_many(batch).await?.split_off(1))
                    }
                }));
            }
            let mut ids = Vec::new();
            let mut created = 0;
            for task in tasks {
                for e in join("an enqueuer", task).await?? {
                    created += usize::from(e.created);
                    ids.push(e.job.id);
                }
            }
            ensure_eq!(created, 1, "enqueues of key {key} that stored a job");
            ids.sort();
            ids.dedup();
            ensure_eq!(ids.len(), 1, "distinct ids returned for key {key}");
        }
        let own = tasks_per_round / 2;
        let stored = client.counts("race").await?.total();
        ensure_eq!(
            stored,
            (rounds * (1 + own)) as u64,
            "jobs stored (one per contested key, one per batch's own key)"
        );
        let listed = client
            .list(ListQuery::new().queue("race").limit(1_000))
            .await?;
        let mut keys: Vec<_> = listed
            .iter()
            .filter_map(|j| j.idempotency_key.clone())
            .collect();
        keys.sort();
        let before = keys.len();
        keys.dedup();
        ensure_eq!(keys.len(), before, "jobs listed per idempotency key");
        Ok(())
    })
    .await
}

/// A batch with one bad job stores nothing, at the client (which names the
/// job and field) and at the store (which refuses an unknown queue whole).
/// A batch over several queues whose caller gives up part way, as a client
/// that dies or times out between two of the store's calls would, leaves the
/// whole batch or none of it: the store may not write it queue by queue.
pub async fn batch_enqueue_is_atomic<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("atomic")).await?;
        let mut jobs: Vec<_> = (0..5).map(|i| Enqueue::new("atomic", &i)).collect();
        jobs[3] = Enqueue::raw("atomic", Payload::from_trusted("null"));
        match client.enqueue_many(jobs).await {
            Err(Error::Invalid(v)) => {
                ensure_eq!(v.field, "payload", "field named");
                ensure_eq!(v.index, Some(3), "job named");
            }
            other => return Err(Failure(format!("a batch with an empty payload: {other:?}"))),
        }
        let new = |queue: &str| NewJob {
            id: JobId::new(),
            queue: QueueName::from(queue),
            tenant: None,
            group: Some(GroupKey::from("g")),
            session: None,
            priority: 0,
            run_at: RunAt::At(clock.now()),
            max_attempts: 3,
            idempotency_key: None,
            payload: Payload::from_trusted("1"),
        };
        let direct = b
            .enqueue(vec![new("atomic"), new("atomic"), new("nope")], clock.now())
            .await;
        ensure!(
            matches!(&direct, Err(StoreError::UnknownQueue(q)) if q.as_str() == "nope"),
            "the store refuses a batch naming an unknown queue: {direct:?}"
        );
        ensure_eq!(
            client.counts("atomic").await?.total(),
            0,
            "jobs stored after refusals"
        );
        let listed = client.list(ListQuery::new().queue("atomic")).await?;
        ensure!(listed.is_empty(), "nothing listed after refusals");

        let queues = ["split-a", "split-b", "split-c"];
        for q in queues {
            declare(&client, QueueConfig::new(q)).await?;
        }
        let batch: Vec<NewJob> = (0..12).map(|i| new(queues[i % queues.len()])).collect();
        let size = batch.len() as u64;
        let stored = || async {
            let mut total = 0;
            for q in queues {
                total += client.counts(q).await?.total();
            }
            Ok::<u64, wq_core::Error>(total)
        };
        // One poll at a time, looking at the store in between: a backend
        // that writes queue by queue is caught between two of its calls.
        let mut pending = Box::pin(b.enqueue(batch, clock.now()));
        let mut answered = None;
        for _ in 0..500 {
            let step = std::future::poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await;
            if let Poll::Ready(r) = step {
                answered = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            if stored().await? > 0 {
                break;
            }
        }
        drop(pending);
        // A call sent before the caller gave up may still land: judge the
        // store once it has stopped changing.
        let mut seen = stored().await?;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = stored().await?;
            if now == seen {
                break;
            }
            seen = now;
        }
        ensure!(
            seen == 0 || seen == size,
            "a batch over {} queues cut off part way left {seen} of its {size} jobs",
            queues.len()
        );
        match answered {
            Some(Ok(out)) => ensure_eq!(seen, size, "jobs stored by a batch that answered {out:?}"),
            Some(Err(e)) => ensure_eq!(seen, 0, "jobs stored by a batch that failed with {e}"),
            None => {}
        }
        Ok(())
    })
    .await
}

/// Every public entry point refuses bad input with a typed error naming the
/// field, and stores nothing.
pub async fn bad_input_is_refused<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("strict").max_payload_bytes(1_024)).await?;
        let far = clock.now() + Duration::from_secs(2 * 366 * 24 * 3600);
        let cases: Vec<(&str, Enqueue)> = vec![
            ("payload", Enqueue::raw("strict", Payload::from_trusted(""))),
            ("payload", Enqueue::new("strict", &())),
            ("payload", Enqueue::new("strict", &"x".repeat(2_000))),
            ("queue", Enqueue::new("undeclared", &1)),
            ("queue", Enqueue::new("bad name", &1)),
            ("group", Enqueue::new("strict", &1).group("")),
            ("group", Enqueue::new("strict", &1).group("g".repeat(300))),
            ("group", Enqueue::new("strict", &1).group("line\nbreak")),
            ("tenant", Enqueue::new("strict", &1).tenant("t".repeat(200))),
            (
                "idempotency_key",
                Enqueue::new("strict", &1).idempotency_key(" "),
            ),
            (
                "delay",
                Enqueue::new("strict", &1).delay(Duration::from_secs(400 * 24 * 3600)),
            ),
            ("run_at", Enqueue::new("strict", &1).run_at(far)),
            (
                "group",
                Enqueue::new("strict", &1).chained(secs(1), secs(0)),
            ),
            ("max_attempts", Enqueue::new("strict", &1).max_attempts(0)),
            ("content.body", Enqueue::message("strict", &empty_text()?)),
        ];
        for (field, job) in cases {
            match client.enqueue(job).await {
                Err(e) => ensure_eq!(e.field(), Some(field), "field named for {e}"),
                Ok(e) => return Err(Failure(format!("accepted bad {field}: {:?}", e.job))),
            }
        }
        let bad_queue = client
            .declare_queue(QueueConfig::new("q2").concurrency(0))
            .await;
        ensure_eq!(
            bad_queue.err().and_then(|e| e.field()),
            Some("concurrency"),
            "declare"
        );
        let bad_list = client.list(ListQuery::new().limit(0)).await;
        ensure_eq!(
            bad_list.err().and_then(|e| e.field()),
            Some("limit"),
            "list"
        );
        let bad_counts = client.counts("nope").await;
        ensure_eq!(
            bad_counts.err().and_then(|e| e.field()),
            Some("queue"),
            "counts"
        );
        let bad_pause = client.pause("nope").await;
        ensure_eq!(
            bad_pause.err().and_then(|e| e.field()),
            Some("queue"),
            "pause"
        );
        ensure!(
            client.queue("q2").await?.is_none(),
            "a refused queue is not declared"
        );
        ensure_eq!(client.counts("strict").await?.total(), 0, "jobs stored");
        let missing = client.cancel(JobId::new()).await;
        ensure!(
            matches!(missing, Err(Error::Store(StoreError::NotFound(_)))),
            "cancelling an unknown job: {missing:?}"
        );
        Ok(())
    })
    .await
}

/// A message whose text is blank, built the way a JSON API would receive it.
fn empty_text() -> Result<OutboundMessage, Failure> {
    serde_json::from_value(serde_json::json!({
        "instance": "inst-1",
        "to": "5511999998888",
        "content": { "type": "text", "body": " " }
    }))
    .map_err(|e| Failure(format!("test message does not parse: {e}")))
}

/// Enqueue returns the stored job as stored: state, sequence, attempts,
/// timestamps; a later read sees the same.
pub async fn enqueue_returns_the_stored_job<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("echo").max_attempts(4)).await?;
        let now = clock.now();
        let a = client
            .enqueue(
                Enqueue::new("echo", &serde_json::json!({"to": "5511"}))
                    .group("g")
                    .tenant("inst-1")
                    .priority(3),
            )
            .await?;
        let later = client
            .enqueue(Enqueue::new("echo", &2).group("g").delay(secs(60)))
            .await?;
        ensure_eq!(a.job.state, JobState::Available, "state of a due job");
        ensure_eq!(
            later.job.state,
            JobState::Scheduled,
            "state of a delayed job"
        );
        ensure!(later.job.seq > a.job.seq, "sequence grows within a group");
        ensure_eq!(a.job.attempt, 0, "attempts");
        ensure_eq!(a.job.max_attempts, 4, "max attempts from the queue");
        ensure_eq!(a.job.priority, 3, "priority");
        ensure_eq!(a.job.tenant.as_deref(), Some("inst-1"), "tenant");
        ensure_eq!(a.job.created_at, now, "created_at");
        ensure_eq!(later.job.run_at, now + secs(60), "run_at of a delayed job");
        let read = crate::harness::must_get(&b, a.job.id).await?;
        ensure_eq!(read, a.job, "a read returns what enqueue returned");
        ensure!(
            read.payload.decode::<serde_json::Value>().ok()
                == Some(serde_json::json!({"to": "5511"})),
            "payload round trip"
        );
        Ok(())
    })
    .await
}
