//! A tiny "order notifications" application, tested the way an
//! application tests itself with `wq_testkit::app`: what an order event
//! enqueues, then its handler run through a typing step and a retry on a
//! manual clock.

use std::sync::Arc;
use std::time::Duration;

use wq::{EventKind, JobState, MemoryStore, QueueConfig, RetryPolicy, TypedJob};
use wq_testkit::Failure;
use wq_testkit::app::{
    TestApp, enqueued, expect_enqueued, expect_enqueued_n, expect_jobs_in, expect_none_enqueued,
};

/// The application under test.
mod shop {
    use std::sync::Arc;
    use std::time::Duration;

    use parking_lot::Mutex;
    use serde::{Deserialize, Serialize};
    use wq::{Backend, Client, Enqueue, JobContext, JobError, Store, TypedJob, Worker};

    /// How long the contact sees "typing..." before a text.
    pub const TYPING: Duration = Duration::from_secs(3);

    /// A text to one contact from one of the shop's numbers.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SendText {
        pub instance: String,
        pub to: String,
        pub text: String,
    }

    impl TypedJob for SendText {
        const QUEUE: &'static str = "message";

        fn options(&self, job: Enqueue) -> Enqueue {
            job.group(format!("{}:{}", self.instance, self.to))
                .session(self.instance.as_str())
        }
    }

    pub struct Order {
        pub id: u64,
        pub phone: String,
        pub paid: bool,
    }

    /// What the shop does when an order changes: a paid order gets one
    /// confirmation, however often the event is delivered.
    pub async fn on_order_event<S: Store>(
        client: &Client<S>,
        order: &Order,
    ) -> Result<(), wq::Error> {
        if !order.paid {
            return Ok(());
        }
        let send = SendText {
            instance: "shop".into(),
            to: order.phone.clone(),
            text: format!("Order {} is paid, thank you!", order.id),
        };
        let job = Enqueue::of(&send).idempotency_key(format!("order-{}-paid", order.id));
        client.enqueue(job).await.map(drop)
    }

    /// The bridge to WhatsApp: drops the first send, as a bridge that is
    /// reconnecting would.
    #[derive(Default)]
    pub struct Bridge {
        pub sent: Mutex<Vec<SendText>>,
        pub attempts: Mutex<u32>,
    }

    impl Bridge {
        fn send(&self, text: SendText) -> Result<(), String> {
            let mut attempts = self.attempts.lock();
            *attempts += 1;
            if *attempts == 1 {
                return Err("bridge reconnecting".into());
            }
            self.sent.lock().push(text);
            Ok(())
        }
    }

    /// Shows typing for [`TYPING`] without holding a worker slot, then
    /// sends; a failed send retries with the queue's backoff.
    pub async fn send_text(
        bridge: Arc<Bridge>,
        send: SendText,
        ctx: JobContext,
    ) -> Result<(), JobError> {
        if ctx.step().is_none() {
            return Err(JobError::continue_at("send", TYPING));
        }
        bridge.send(send).map_err(JobError::retry)
    }

    /// The shop's handlers, as its `main` registers them.
    pub fn handlers<B: Backend>(
        bridge: Arc<Bridge>,
    ) -> impl Fn(Worker<B>) -> Worker<B> + Send + Sync + 'static {
        move |worker| {
            let bridge = bridge.clone();
            worker.handle_typed(move |send: SendText, ctx| send_text(bridge.clone(), send, ctx))
        }
    }
}

use shop::{Bridge, Order, SendText};

/// Backoff without jitter, so the retry's time is exact: 2 s, then 4 s.
fn exact_backoff() -> RetryPolicy {
    RetryPolicy {
        jitter: false,
        ..RetryPolicy::default()
    }
}

async fn shop_app() -> Result<(TestApp<MemoryStore>, Arc<Bridge>), Failure> {
    let bridge = Arc::new(Bridge::default());
    let app = TestApp::memory(shop::handlers(bridge.clone()));
    app.client()
        .declare_queue(QueueConfig::new("message").retry(exact_backoff()))
        .await?;
    Ok((app, bridge))
}

fn paid(id: u64, phone: &str) -> Order {
    Order {
        id,
        phone: phone.into(),
        paid: true,
    }
}

#[tokio::test]
async fn a_paid_order_enqueues_one_text_in_the_contacts_group() -> Result<(), Failure> {
    let (app, _) = shop_app().await?;
    let order = paid(42, "5511999998888");
    shop::on_order_event(app.client(), &order).await?;
    // A webhook delivered twice stores nothing more.
    shop::on_order_event(app.client(), &order).await?;

    let sent = expect_enqueued_n::<SendText>(app.client(), 1).await?;
    let (text, job) = (&sent[0].value, &sent[0].job);
    assert_eq!(text.to, "5511999998888");
    assert_eq!(
        job.group.as_ref().map(|g| g.as_str()),
        Some("shop:5511999998888")
    );
    assert_eq!(job.session.as_ref().map(|s| s.as_str()), Some("shop"));
    assert_eq!(job.idempotency_key.as_deref(), Some("order-42-paid"));
    assert_eq!(job.max_attempts, 3);
    assert_eq!(sent[0].delay(), Duration::ZERO);
    assert_eq!(job.state, JobState::Available);
    Ok(())
}

#[tokio::test]
async fn an_unpaid_order_enqueues_nothing() -> Result<(), Failure> {
    let (app, _) = shop_app().await?;
    let order = Order {
        paid: false,
        ..paid(7, "5511999998888")
    };
    shop::on_order_event(app.client(), &order).await?;
    expect_none_enqueued::<SendText>(app.client()).await
}

#[tokio::test]
async fn a_failed_expectation_lists_what_was_enqueued_instead() -> Result<(), Failure> {
    let (app, _) = shop_app().await?;
    app.client()
        .declare_queue(QueueConfig::new("automation"))
        .await?;
    app.client()
        .enqueue(wq::Enqueue::new("automation", "tag customer").group("ana"))
        .await?;

    let failure = match expect_enqueued::<SendText>(app.client()).await {
        Ok(found) => panic!("expected a failure, found {found:?}"),
        Err(f) => f.to_string(),
    };
    assert!(
        failure.contains("expected at least one job in queue `message`, found 0"),
        "{failure}"
    );
    assert!(failure.contains("`automation` available"), "{failure}");
    assert!(failure.contains("group ana"), "{failure}");
    assert!(failure.contains("\"tag customer\""), "{failure}");
    Ok(())
}

#[tokio::test]
async fn a_payload_of_another_type_in_the_queue_is_named() -> Result<(), Failure> {
    let (app, _) = shop_app().await?;
    let id = app
        .client()
        .enqueue(wq::Enqueue::new(SendText::QUEUE, "not a SendText"))
        .await?
        .job
        .id;
    let failure = enqueued::<SendText>(app.client())
        .await
        .err()
        .map(|f| f.to_string())
        .unwrap_or_default();
    assert!(failure.contains(&id.to_string()), "{failure}");
    assert!(failure.contains("does not decode as"), "{failure}");
    Ok(())
}

#[tokio::test]
async fn the_handler_types_then_sends_through_one_retry() -> Result<(), Failure> {
    let (app, bridge) = shop_app().await?;
    shop::on_order_event(app.client(), &paid(42, "5511999998888")).await?;
    let id = expect_enqueued::<SendText>(app.client()).await?[0].job.id;
    let start = app.now();

    // Typing: the step ends the attempt without spending it.
    let typing = app.run_until_idle().await?;
    assert_eq!((typing.stats.stepped, typing.stats.completed), (1, 0));
    assert_eq!(app.next_due().await?, Some(start + shop::TYPING));

    // A second later the contact still sees typing: nothing runs.
    let early = app.advance(Duration::from_secs(1)).await?;
    assert_eq!((early.stats.claimed, early.events.len()), (0, 0));
    assert_eq!(early.ended_at, start + Duration::from_secs(1));

    // The send fails once: a retry 2 s later.
    let failed = app.advance_to_next_due().await?.expect("the send waits");
    assert_eq!(app.now(), start + shop::TYPING);
    assert_eq!(failed.stats.retried, 1);
    assert!(matches!(
        failed.events_of(id).as_slice(),
        [
            EventKind::Started { attempt: 1, .. },
            EventKind::Retried { attempt: 1, .. }
        ]
    ));

    let sent = app.advance_to_next_due().await?.expect("the retry waits");
    assert_eq!(app.now(), start + shop::TYPING + Duration::from_secs(2));
    assert_eq!(sent.stats.completed, 1);
    assert!(matches!(
        sent.events_of(id).as_slice(),
        [
            EventKind::Started { attempt: 2, .. },
            EventKind::Completed { attempt: 2, .. }
        ]
    ));
    assert_eq!(bridge.sent.lock().len(), 1);
    assert_eq!(app.next_due().await?, None);
    assert!(app.advance_to_next_due().await?.is_none());
    Ok(())
}

#[tokio::test]
async fn run_until_done_walks_through_every_wait() -> Result<(), Failure> {
    let (app, bridge) = shop_app().await?;
    for (id, phone) in [(1, "5511900000001"), (2, "5511900000002")] {
        shop::on_order_event(app.client(), &paid(id, phone)).await?;
    }
    let start = app.now();
    let done = app.run_until_done().await?;
    assert_eq!(done.stats.completed, 2);
    assert_eq!(done.stats.stepped, 2);
    assert_eq!(done.stats.retried, 1, "only the bridge's first send fails");
    assert_eq!((done.started_at, done.ended_at), (start, app.now()));
    assert_eq!(app.now(), start + shop::TYPING + Duration::from_secs(2));
    assert_eq!(bridge.sent.lock().len(), 2);
    let all = enqueued::<SendText>(app.client()).await?;
    assert!(all.iter().all(|e| e.job.state == JobState::Completed));
    Ok(())
}

#[tokio::test]
async fn a_hung_handler_fails_the_run_at_its_time_limit() -> Result<(), Failure> {
    let app = TestApp::memory(|w| {
        w.handle_typed(|_: SendText, _| std::future::pending::<Result<(), wq::JobError>>())
    })
    .time_limit(Duration::from_millis(300));
    app.client()
        .declare_queue(QueueConfig::new("message"))
        .await?;
    shop::on_order_event(app.client(), &paid(1, "5511900000001")).await?;
    let failure = app
        .run_until_idle()
        .await
        .err()
        .map(|f| f.to_string())
        .unwrap_or_default();
    assert!(failure.contains("`message` has 1 running"), "{failure}");
    Ok(())
}

#[tokio::test]
async fn run_until_done_fails_when_the_queue_never_drains() -> Result<(), Failure> {
    // A handler that always asks to continue never finishes its job.
    let app = TestApp::memory(|w| {
        w.handle_typed(|_: SendText, _| async {
            Err(wq::JobError::continue_at("again", Duration::from_secs(1)))
        })
    })
    .max_rounds(5);
    app.client()
        .declare_queue(QueueConfig::new("message"))
        .await?;
    shop::on_order_event(app.client(), &paid(1, "5511900000001")).await?;
    let failure = app
        .run_until_done()
        .await
        .err()
        .map(|f| f.to_string())
        .unwrap_or_default();
    assert!(
        failure.contains("jobs still wait after 5 rounds"),
        "{failure}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unserved_queue_keeps_a_run_busy_unless_only_served_ones_are_watched()
-> Result<(), Failure> {
    let bridge = Arc::new(Bridge::default());
    let everything =
        TestApp::memory(shop::handlers(bridge.clone())).time_limit(Duration::from_millis(200));
    for queue in ["message", "automation"] {
        everything
            .client()
            .declare_queue(QueueConfig::new(queue))
            .await?;
    }
    everything
        .client()
        .enqueue(wq::Enqueue::new("automation", "tag customer"))
        .await?;
    let failure = everything
        .run_until_idle()
        .await
        .err()
        .map(|f| f.to_string())
        .unwrap_or_default();
    assert!(failure.contains("`automation` has a job due"), "{failure}");

    // The same store, watched through the served queue only.
    let served = TestApp::with_clock(
        everything.backend().clone(),
        everything.clock().clone(),
        shop::handlers(bridge),
    )
    .queues(["message"]);
    served.run_until_idle().await?;
    let waiting = expect_jobs_in(served.client(), "automation", 1).await?;
    assert_eq!(waiting[0].state, JobState::Available);
    Ok(())
}

#[tokio::test]
async fn zero_rounds_is_refused_naming_the_field() -> Result<(), Failure> {
    let (app, _) = shop_app().await?;
    let app = app.max_rounds(0);
    let failure = app
        .run_until_done()
        .await
        .err()
        .map(|f| f.to_string())
        .unwrap_or_default();
    assert!(failure.starts_with("max_rounds is 0"), "{failure}");
    Ok(())
}

#[tokio::test]
async fn chained_texts_keep_their_spacing() -> Result<(), Failure> {
    let app = TestApp::memory(|w| w.handle_typed(|_: SendText, _| async { Ok(()) }));
    app.client()
        .declare_queue(QueueConfig::new("message"))
        .await?;
    let gap = Duration::from_secs(2);
    for text in ["Order 42 is paid", "Here is your receipt"] {
        let send = SendText {
            instance: "shop".into(),
            to: "5511999998888".into(),
            text: text.into(),
        };
        let job = wq::Enqueue::of(&send).chained(gap, Duration::ZERO);
        app.client().enqueue(job).await?;
    }
    let sent = expect_enqueued_n::<SendText>(app.client(), 2).await?;
    assert_eq!((sent[0].delay(), sent[1].delay()), (gap, gap * 2));

    let start = app.now();
    assert_eq!(app.run_until_idle().await?.stats.claimed, 0);
    for (n, item) in sent.iter().enumerate() {
        let run = app.advance_to_next_due().await?.expect("a text waits");
        assert_eq!(run.stats.completed, 1);
        let done = run
            .events
            .iter()
            .find(|e| matches!(e.kind, EventKind::Completed { .. }));
        assert_eq!(
            done.map(|e| (e.id, e.at)),
            Some((item.job.id, start + gap * (n as u32 + 1)))
        );
    }
    Ok(())
}
