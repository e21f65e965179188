//! The memory backend's hot path: claim a batch and complete it, with a
//! small and a large backlog waiting (the cost must not grow with it).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wq_core::{
    Ack, AckAction, ClaimRequest, GroupKey, JobId, NewJob, Payload, QueueConfig, QueueName,
    Retention, RunAt, Store, Timestamp,
};
use wq_memory::MemoryStore;

const BATCH: usize = 10;

fn job(i: u64, groups: u64, now: Timestamp) -> NewJob {
    NewJob {
        id: JobId::new(),
        queue: QueueName::from("bench"),
        group: Some(GroupKey::new(format!("inst-1:{}", i % groups))),
        session: None,
        tenant: None,
        priority: 0,
        run_at: RunAt::At(now),
        max_attempts: 3,
        idempotency_key: None,
        payload: Payload::from_trusted(
            r#"{"to":"5511999998888","text":"Seu pedido saiu para entrega."}"#,
        ),
    }
}

fn claim_complete(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("claim+complete");
    group.throughput(Throughput::Elements(BATCH as u64));
    for backlog in [1_000u64, 200_000] {
        let store = MemoryStore::new();
        let now = Timestamp::now();
        rt.block_on(async {
            // Completed jobs leave at once, so the store keeps a steady size.
            let retention = Retention {
                completed: Duration::ZERO,
                ..Retention::default()
            };
            let config = QueueConfig::new("bench").retention(retention);
            store.declare_queue(&config).await.expect("declare");
            for chunk in (0..backlog).collect::<Vec<_>>().chunks(10_000) {
                let jobs = chunk.iter().map(|i| job(*i, 1_000, now)).collect();
                store.enqueue(jobs, now).await.expect("enqueue");
            }
        });
        let mut next = backlog;
        group.bench_with_input(BenchmarkId::from_parameter(backlog), &backlog, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    // Keep the backlog level: every completed job is replaced.
                    let refill = (0..BATCH as u64)
                        .map(|k| job(next + k, 1_000, now))
                        .collect();
                    next += BATCH as u64;
                    store.enqueue(refill, now).await.expect("enqueue");
                    let req =
                        ClaimRequest::new("bench", BATCH, now, now + Duration::from_secs(30), "w");
                    let jobs = store.claim(&req).await.expect("claim");
                    let acks: Vec<Ack> = jobs
                        .iter()
                        .filter_map(|j| Ack::for_job(j, AckAction::complete()))
                        .collect();
                    black_box(store.ack(&acks, now).await.expect("ack"));
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, claim_complete);
criterion_main!(benches);
