//! Connecting before the server is up: `connect` keeps trying until its
//! `connect_timeout`, logging each failed try, fails with a clear error
//! after it, and fails at once on what no retry can mend.

mod common;

use std::time::{Duration, Instant};

use wq_core::{Client, Enqueue, QueueConfig};
use wq_redis::RedisStore;
use wq_testkit::late_server;

/// The test server's address, as `host:port`.
fn upstream() -> String {
    let client = redis::Client::open(common::url()).expect("the test URL parses");
    client.get_connection_info().addr().to_string()
}

/// The test server's URL with its address replaced by `127.0.0.1:port`.
fn url_via(port: u16) -> String {
    let (url, server) = (common::url(), upstream());
    assert!(url.contains(&server), "{url} does not name {server}");
    url.replace(&server, &format!("127.0.0.1:{port}"))
}

/// Starts, on `port`, a proxy to the test server: the server "comes up"
/// there.
fn start_proxy(port: u16) {
    late_server::start_proxy(port, upstream()).expect("the port is still free");
}

/// A local port with nothing listening on it.
fn closed_port() -> u16 {
    late_server::closed_port().expect("a free port")
}

/// Captures what this thread logs until the guard is dropped (the tests
/// run on a current-thread runtime, so every task logs here).
fn capture() -> (common::Captured, tracing::subscriber::DefaultGuard) {
    let captured = common::Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(flavor = "current_thread")]
async fn what_no_retry_mends_fails_at_once() {
    let started = Instant::now();
    for url in ["redis://127.0.0.1:notaport", "http://127.0.0.1:6379"] {
        let out = RedisStore::builder(url)
            .connect_timeout(Duration::from_secs(30))
            .connect()
            .await;
        assert!(out.is_err(), "{url} connected");
    }
    let bad_prefix = RedisStore::builder(common::url())
        .prefix("no spaces {here}")
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await;
    assert!(bad_prefix.is_err(), "a bad prefix connected");
    common::ensure_server().await.expect("Redis");
    let wrong_password = common::url().replacen("redis://", "redis://wq:wrong-password@", 1);
    let err = RedisStore::builder(wrong_password)
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect_err("a wrong password connected");
    let msg = err.to_string();
    assert!(
        !msg.contains("gave up"),
        "a refused password was retried: {msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "permanent errors took {:?}: they were retried",
        started.elapsed()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_absent_server_is_tried_until_the_timeout() {
    let (logs, _guard) = capture();
    let limit = Duration::from_millis(1_500);
    let started = Instant::now();
    let err = RedisStore::builder(url_via(closed_port()))
        .connect_timeout(limit)
        .connect()
        .await
        .expect_err("connected to a port with nothing listening");
    let took = started.elapsed();
    let msg = err.to_string();
    assert!(took >= limit, "gave up after {took:?}, before {limit:?}");
    assert!(
        took < limit + Duration::from_secs(5),
        "gave up only after {took:?}"
    );
    assert!(
        msg.contains("not reachable") && msg.contains("gave up after") && msg.contains("tries"),
        "unclear error: {msg}"
    );
    let logged = logs.text();
    let warnings = logged.matches("Redis not reachable yet").count();
    // 100, 200, 400, 800 ms of backoff fit in 1.5 s: at least four tries,
    // each failure but the last logged with when the next comes.
    assert!(warnings >= 3, "{warnings} warnings logged:\n{logged}");
    assert!(logged.contains("retry_in"), "the log says when: {logged}");

    let once = Instant::now();
    let err = RedisStore::builder(url_via(closed_port()))
        .connect_timeout(Duration::ZERO)
        .connect()
        .await
        .expect_err("connected to a port with nothing listening");
    assert!(err.to_string().contains("after 1 tries"), "{err}");
    assert!(
        once.elapsed() < Duration::from_secs(5),
        "one try took {:?}",
        once.elapsed()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn connect_waits_for_a_server_that_comes_up() {
    common::ensure_server().await.expect("Redis");
    let (logs, _guard) = capture();
    let port = closed_port();
    let comes_up_after = Duration::from_millis(800);
    let started = Instant::now();
    let proxy = tokio::spawn(async move {
        tokio::time::sleep(comes_up_after).await;
        start_proxy(port);
    });
    let store = RedisStore::builder(url_via(port))
        .prefix(common::fresh_prefix("connect"))
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connected once the server came up");
    proxy.await.expect("the proxy started");
    assert!(
        started.elapsed() >= comes_up_after,
        "connected before the server was up"
    );
    assert!(
        logs.text().contains("Redis not reachable yet"),
        "no warning while the server was down:\n{}",
        logs.text()
    );
    let client = Client::new(store.clone());
    client
        .declare_queue(QueueConfig::new("late"))
        .await
        .expect("declare");
    client
        .enqueue(Enqueue::new("late", &1))
        .await
        .expect("enqueue");
    assert_eq!(client.counts("late").await.expect("counts").available, 1);
    store.clear().await.expect("clear");
    store.close();
}
