//! Connecting before the server is up: `connect` keeps trying until its
//! `connect_timeout`, fails with a clear error after it, and fails at once on
//! what no retry can mend. And `drop_schema` leaves nothing behind.

mod support;

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use wq_core::{Client, Enqueue, QueueConfig};
use wq_postgres::PgStore;
use wq_testkit::late_server;

/// The test server's URL with its host and port replaced by `127.0.0.1:port`.
fn url_via(port: u16) -> String {
    let url = support::url();
    let server = upstream();
    assert!(url.contains(&server), "{url} does not name {server}");
    url.replace(&server, &format!("127.0.0.1:{port}"))
}

/// The test server's address, as `host:port`.
fn upstream() -> String {
    let options = PgConnectOptions::from_str(&support::url()).expect("the test URL parses");
    format!("{}:{}", options.get_host(), options.get_port())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_no_retry_mends_fails_at_once() {
    let started = Instant::now();
    let bad_url = PgStore::builder("postgres://postgres@127.0.0.1:notaport/postgres", "wq")
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await;
    assert!(bad_url.is_err(), "a malformed URL connected");
    let bad_schema = PgStore::builder(&support::url(), "Not-A-Schema")
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await;
    let err = bad_schema.expect_err("a bad schema name connected");
    assert!(err.to_string().contains("schema"), "{err}");
    support::server().await.expect("Postgres");
    let missing_db = url_via(5432)
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/wq_no_such_database"));
    let missing_db = missing_db.expect("the URL names a database");
    let err = PgStore::builder(&missing_db, "wq")
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect_err("a missing database connected");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "permanent errors took {:?}: they were retried",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_server_is_tried_until_the_timeout() {
    let limit = Duration::from_millis(1_500);
    let started = Instant::now();
    let err = PgStore::builder(&url_via(closed_port()), "wq")
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
    let tries: u32 = msg
        .split("gave up after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the error counts its tries");
    // 100, 200, 400, 800 ms of backoff fit in 1.5 s: at least four tries.
    assert!(tries >= 4, "only {tries} tries in {took:?}: {msg}");

    let once = Instant::now();
    let err = PgStore::builder(&url_via(closed_port()), "wq")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_for_a_server_that_comes_up() {
    support::server().await.expect("Postgres");
    let port = closed_port();
    let comes_up_after = Duration::from_millis(800);
    let started = Instant::now();
    let proxy = tokio::spawn(async move {
        tokio::time::sleep(comes_up_after).await;
        start_proxy(port);
    });
    let schema = support::schema();
    let store = PgStore::builder(&url_via(port), &schema)
        .max_connections(2)
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connected once the server came up");
    proxy.await.expect("the proxy started");
    assert!(
        started.elapsed() >= comes_up_after,
        "connected before the server was up"
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
    store.drop_schema().await.expect("drop the schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_schema_removes_everything() {
    support::server().await.expect("Postgres");
    let schema = support::schema();
    let store = PgStore::builder(&support::url(), &schema)
        .max_connections(2)
        .connect()
        .await
        .expect("connect");
    let client = Client::new(store.clone());
    client
        .declare_queue(QueueConfig::new("gone"))
        .await
        .expect("declare");
    client
        .enqueue(Enqueue::new("gone", &1))
        .await
        .expect("enqueue");
    store.drop_schema().await.expect("drop the schema");

    let mut conn = PgConnection::connect(&support::url())
        .await
        .expect("connect");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(&schema)
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert_eq!(left, 0, "schema {schema} still exists");
    let again = PgStore::builder(&support::url(), &schema)
        .max_connections(2)
        .connect()
        .await
        .expect("connect to the dropped schema");
    let client = Client::new(again.clone());
    assert!(
        client.queue("gone").await.expect("lookup").is_none(),
        "a queue survived the drop"
    );
    again.drop_schema().await.expect("drop the schema again");
}
