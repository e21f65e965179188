//! The dashboard in a real browser: a headless Chromium, driven through
//! chromedriver, signs in, watches a queue's counts, opens its dead job,
//! retries it and sees it complete, and pages through a long list. A
//! second test checks the page's files as served (types, caching, policy).
//!
//! Chromium and chromedriver must be installed (on Debian: `apt-get install
//! -y chromium chromium-driver`); the test fails, never skips, without them.
//! With `WQ_SCREENSHOT=1` it also saves the dashboard to
//! `docs/dashboard.png`, after letting the throughput chart fill for a while.

use std::future::Future;
use std::io::{BufRead as _, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde::{Deserialize, Serialize};
use wq::{
    Client, Enqueue, JobContext, JobError, JobState, ListQuery, MemoryStore, OnDead, QueueConfig,
    Worker,
};
use wq_server::{Auth, Server};

/// Where Debian puts Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";
/// How to get Chromium and chromedriver when they are missing.
const INSTALL: &str = "apt-get install -y chromium chromium-driver";
/// The longest the test waits for anything.
const WAIT: Duration = Duration::from_secs(20);
/// The admin token the server accepts.
const TOKEN: &str = "t";
/// The queue under test: one attempt, so a failure is dead at once.
const QUEUE: &str = "message";
/// A second queue fed in the background, so the chart has something to draw.
const BACKGROUND: &str = "receipt";
/// The group of the job that fails: held by its dead head.
const FAILING_GROUP: &str = "inst-1:5511999990006";

/// Background jobs enqueued at once: more than two of the page's pages.
const PAGED: u32 = 120;
/// Jobs on a page of the dashboard's lists.
const PAGE: usize = 50;

/// What a `message` job carries.
#[derive(Serialize, Deserialize)]
struct Message {
    text: String,
    /// Fails until the test lets it succeed.
    fail: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_signs_in_shows_counts_and_retries_a_dead_job() {
    let driver = Chromedriver::start();

    // The service, over a memory store.
    let store = MemoryStore::new();
    let client = Client::new(store.clone());
    client
        .declare_queue(
            QueueConfig::new(QUEUE)
                .max_attempts(1)
                .on_dead(OnDead::Hold),
        )
        .await
        .expect("declare the queue");
    client
        .declare_queue(QueueConfig::new(BACKGROUND))
        .await
        .expect("declare the background queue");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let base = format!("http://{}", listener.local_addr().expect("its address"));
    let app = Server::new(client.clone(), Auth::tokens().admin(TOKEN)).router();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // A worker whose `message` handler fails the jobs that say so, until
    // `healed` flips.
    let healed = Arc::new(AtomicBool::new(false));
    let worker = {
        let healed = healed.clone();
        Worker::new(store.clone())
            .poll_interval(Duration::from_millis(100))
            .handle(QUEUE, move |job: JobContext| {
                let healed = healed.clone();
                async move {
                    let message: Message = job.payload()?;
                    if message.fail && !healed.load(Ordering::SeqCst) {
                        // Markup in an error: the page must show it as text.
                        return Err(JobError::retry("the bridge said <b>no</b>"));
                    }
                    Ok(())
                }
            })
            .handle(BACKGROUND, |_job: JobContext| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<(), JobError>(())
            })
            .start()
            .await
            .expect("start the worker")
    };

    // Five messages that succeed and one that dies.
    for n in 0..6u32 {
        let fail = n == 5;
        let group = if fail {
            FAILING_GROUP.to_owned()
        } else {
            format!("inst-1:55119999900{n:02}")
        };
        let message = Message {
            text: format!("Olá, message {n}"),
            fail,
        };
        client
            .enqueue(
                Enqueue::new(QUEUE, &message)
                    .group(group.as_str())
                    .session("inst-1"),
            )
            .await
            .expect("enqueue");
    }
    // More background jobs than a page holds, then a steady trickle.
    client
        .enqueue_many(
            (0..PAGED).map(|n| Enqueue::new(BACKGROUND, &serde_json::json!({"receipt": n}))),
        )
        .await
        .expect("enqueue receipts");
    let background = tokio::spawn(feed(client.clone()));

    let dead = until("the failing job to die", || async {
        let dead = client
            .list(
                ListQuery::new()
                    .queue(QUEUE)
                    .state(JobState::Dead)
                    .limit(10),
            )
            .await
            .expect("list dead jobs");
        (dead.len() == 1).then(|| dead[0].id)
    })
    .await;

    let browser = driver.browser().await;
    let outcome = drive(&browser, &base, &client, &healed, dead).await;
    // The session ends whatever happened, so Chromium exits with it.
    let closed = browser.close().await;
    background.abort();
    server.abort();
    worker.shutdown(Duration::from_secs(5)).await;
    outcome.unwrap_or_else(|e| panic!("{e}"));
    closed.expect("close the browser session");
}

/// The page and its assets without a browser: their types, revalidated at
/// each use, `/` leading to them, and nothing loaded from elsewhere. The
/// page needs no token; the API it calls does.
#[tokio::test]
async fn dashboard_assets_have_their_types() {
    // reqwest comes without a crypto provider: give it ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let base = format!("http://{}", listener.local_addr().expect("its address"));
    let app = Server::new(Client::new(MemoryStore::new()), Auth::tokens().admin(TOKEN)).router();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    for path in ["/", "/ui"] {
        let response = http.get(format!("{base}{path}")).send().await.expect(path);
        assert!(response.status().is_redirection(), "{path}: {response:?}");
        assert_eq!(response.headers()["location"], "/ui/", "{path}");
    }
    for (path, content_type) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
    ] {
        let response = http.get(format!("{base}{path}")).send().await.expect(path);
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let body = response.text().await.expect(path);
        assert!(!body.is_empty(), "{path}");
        for external in ["http://", "https://", "src=\"//", "href=\"//"] {
            assert!(!body.contains(external), "{path} refers to {external}");
        }
        if path == "/ui/" {
            let policy = headers["content-security-policy"].to_str().expect("ASCII");
            assert!(policy.contains("default-src 'none'"), "{policy}");
            assert!(policy.contains("script-src 'self'"), "{policy}");
        }
    }
    let api = http
        .get(format!("{base}/api/queues"))
        .send()
        .await
        .expect("the API");
    assert_eq!(api.status(), 401);
    server.abort();
}

/// The browser's part: sign in, watch, open the dead job, retry it.
async fn drive(
    browser: &Browser,
    base: &str,
    client: &Client<MemoryStore>,
    healed: &AtomicBool,
    dead: wq::JobId,
) -> Result<(), String> {
    // `/` leads to the dashboard, which asks for a token: the API said 401.
    browser
        .goto(&format!("{base}/"))
        .await
        .map_err(|e| format!("open the page: {e}"))?;
    let url = browser.current_url().await.map_err(|e| e.to_string())?;
    if url.path() != "/ui/" {
        return Err(format!("`/` should lead to /ui/, not {url}"));
    }
    until("the token form", || displayed(browser, "#token")).await;

    // A wrong token is refused, and said so.
    type_into(browser, "#token", "wrong").await?;
    click(browser, "#login-submit").await?;
    until("the refusal of a wrong token", || async {
        let text = text(browser, "#login-error").await?;
        text.contains("refused").then_some(())
    })
    .await;

    type_into(browser, "#token", TOKEN).await?;
    click(browser, "#login-submit").await?;

    // The queue's counts, live.
    let row = format!("#queues tr[data-queue=\"{QUEUE}\"]");
    until("the dead count 1 and completed count 5", || async {
        let dead = text(browser, &format!("{row} [data-count=\"dead\"]")).await?;
        let completed = text(browser, &format!("{row} [data-count=\"completed\"]")).await?;
        (dead == "1" && completed == "5").then_some(())
    })
    .await;
    if displayed(browser, "#login").await.is_some() {
        return Err("the token form should be gone once signed in".into());
    }

    // The dead count lists the dead job; its group shows as blocked.
    click(browser, &format!("{row} [data-count=\"dead\"]")).await?;
    let dead_row = format!("#jobs tr[data-job-id=\"{dead}\"]");
    until("the dead job in the list", || displayed(browser, &dead_row)).await;
    let blocked_row = format!("#blocked tr[data-group=\"{FAILING_GROUP}\"]");
    until("the blocked group", || displayed(browser, &blocked_row)).await;
    until("the session", || {
        displayed(browser, "#sessions tr[data-session=\"inst-1\"]")
    })
    .await;

    // Its detail: state, error as text (no markup), its one run.
    click(browser, &dead_row).await?;
    until("the job's detail, dead", || async {
        (text(browser, "#job-state").await? == "dead").then_some(())
    })
    .await;
    let error = text(browser, "#job-error").await.unwrap_or_default();
    if error != "the bridge said <b>no</b>" {
        return Err(format!("the error should show as text, not {error:?}"));
    }
    let bold = browser
        .find_all(Locator::Css("#job-view b"))
        .await
        .map_err(|e| e.to_string())?;
    if !bold.is_empty() {
        return Err("an error's markup reached the page as markup".into());
    }
    until("the run in the job's history", || async {
        let outcome = text(browser, "#job-history tr[data-attempt=\"1\"]").await?;
        outcome.contains("dead").then_some(())
    })
    .await;
    if displayed(browser, "#cancel").await.is_some() {
        return Err("a dead job should offer no cancel".into());
    }

    if std::env::var_os("WQ_SCREENSHOT").is_some_and(|v| v == "1") {
        screenshot(browser).await?;
    }

    // Retried once the handler is fixed: the page sees it complete.
    healed.store(true, Ordering::SeqCst);
    click(browser, "#retry").await?;
    until("the job shown completed", || async {
        (text(browser, "#job-state").await? == "completed").then_some(())
    })
    .await;
    let job = client
        .get(dead)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the job is gone from the store")?;
    if job.state != JobState::Completed {
        return Err(format!("the store has the job {:?}", job.state));
    }
    until("the counts to follow: no dead, 6 completed", || async {
        let dead = text(browser, &format!("{row} [data-count=\"dead\"]")).await?;
        let completed = text(browser, &format!("{row} [data-count=\"completed\"]")).await?;
        (dead == "0" && completed == "6").then_some(())
    })
    .await;

    // A long list comes a page at a time.
    let background_row = format!("#queues tr[data-queue=\"{BACKGROUND}\"]");
    click(
        browser,
        &format!("{background_row} [data-count=\"completed\"]"),
    )
    .await?;
    let rows = |n: usize| async move {
        let shown = browser
            .find_all(Locator::Css("#jobs tbody tr"))
            .await
            .ok()?;
        (shown.len() == n).then_some(())
    };
    until("a first page of completed receipts", || rows(PAGE)).await;
    until("the button to load more", || displayed(browser, "#more")).await;
    click(browser, "#more").await?;
    until("a second page after the first", || rows(2 * PAGE)).await;
    Ok(())
}

/// Enqueues background jobs at a changing pace, until aborted.
async fn feed(client: Client<MemoryStore>) {
    for tick in 0u64.. {
        // Between 1 and 7 jobs every 200 ms, in waves.
        let n = 1 + (tick / 4) % 7;
        for _ in 0..n {
            let _ = client
                .enqueue(Enqueue::new(BACKGROUND, &serde_json::json!({"tick": tick})))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Saves the page to `docs/dashboard.png`, after the chart has filled.
async fn screenshot(browser: &Browser) -> Result<(), String> {
    tokio::time::sleep(Duration::from_secs(45)).await;
    // The whole page, not only what the window shows.
    let size = browser
        .execute(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]",
            vec![],
        )
        .await
        .map_err(|e| format!("measure the page: {e}"))?;
    let height = |i: usize| size[i].as_u64().unwrap_or(0) as u32;
    browser
        .set_window_size(1280, height(0) + height(1))
        .await
        .map_err(|e| format!("resize the window: {e}"))?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let png = browser
        .screenshot()
        .await
        .map_err(|e| format!("screenshot: {e}"))?;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/dashboard.png");
    std::fs::write(path, png).map_err(|e| format!("write {path}: {e}"))?;
    eprintln!("saved {path}");
    Ok(())
}

/// Polls `check` until it answers, for at most [`WAIT`].
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The visible text of the first element `css` finds, if any.
async fn text(browser: &Browser, css: &str) -> Option<String> {
    let element = browser.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok().map(|t| t.trim().to_owned())
}

/// `Some` when `css` finds an element that is displayed.
async fn displayed(browser: &Browser, css: &str) -> Option<()> {
    let element = browser.find(Locator::Css(css)).await.ok()?;
    element.is_displayed().await.ok()?.then_some(())
}

async fn click(browser: &Browser, css: &str) -> Result<(), String> {
    let element = browser
        .find(Locator::Css(css))
        .await
        .map_err(|e| format!("find {css}: {e}"))?;
    element
        .click()
        .await
        .map_err(|e| format!("click {css}: {e}"))
}

async fn type_into(browser: &Browser, css: &str, value: &str) -> Result<(), String> {
    let element = browser
        .find(Locator::Css(css))
        .await
        .map_err(|e| format!("find {css}: {e}"))?;
    element
        .clear()
        .await
        .map_err(|e| format!("clear {css}: {e}"))?;
    element
        .send_keys(value)
        .await
        .map_err(|e| format!("type into {css}: {e}"))
}

/// A chromedriver of this test's own, killed with everything it started
/// (its browser) when dropped, whether the test passed or not.
struct Chromedriver {
    process: Child,
    port: u16,
    /// The browser's profile: this run's only.
    profile: PathBuf,
    /// What chromedriver printed, shown when the test fails.
    output: Arc<Mutex<String>>,
}

impl Chromedriver {
    fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "no Chromium at {CHROMIUM}: install it with `{INSTALL}`"
        );
        let profile = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "dashboard-chromium-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let mut process = Command::new("chromedriver")
            // Any free port: it says which.
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own: the browser it starts joins it, and the
            // whole group is killed at the end.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run chromedriver ({e}): install it with `{INSTALL}`")
            });
        let output = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let stdout = process.stdout.take().expect("piped stdout");
        let stderr = process.stderr.take().expect("piped stderr");
        collect(stdout, output.clone(), Some(port_tx));
        collect(stderr, output.clone(), None);
        let mut driver = Self {
            process,
            port: 0,
            profile,
            output,
        };
        driver.port = port_rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("chromedriver did not start within {WAIT:?}"));
        driver
    }

    /// A session in a headless Chromium.
    async fn browser(&self) -> Browser {
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-proxy-server",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", self.profile.display()),
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("cannot start Chromium through chromedriver: {e}"))
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the browser it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.process.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
        if std::thread::panicking()
            && let Ok(output) = self.output.lock()
        {
            eprintln!("chromedriver said:\n{output}");
        }
    }
}

/// Keeps what `from` prints; the first line naming the port is sent on
/// `port`.
fn collect(
    from: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
    mut port: Option<mpsc::Sender<u16>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if let Some(tx) = &port
                && let Some(n) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse().ok())
            {
                let _ = tx.send(n);
                port = None;
            }
            if let Ok(mut out) = into.lock() {
                out.push_str(&line);
                out.push('\n');
            }
        }
    });
}
