//! The HTTP service (`wq-server`) against a backend: its API, its tokens and
//! their tenants, health and metrics, and malformed requests. Backends run
//! these with [`crate::server_tests!`].
//!
//! Each test serves a router on a local port over a fresh backend and talks
//! to it over real HTTP.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use wq_core::{AckAction, Backend, Client, Clock as _, JobState, ListQuery, OnDead, QueueConfig};
use wq_server::{Auth, HealthPolicy, Server};

use crate::harness::{
    Failure, TestBackend, TestResult, ack, claim, declare, manual_client, secs, with_backend,
};
use crate::{ensure, ensure_eq};

/// The admin token of every test server.
const ADMIN: &str = "admin-token";
/// The token of tenant `acme`.
const ACME: &str = "acme-token";

/// A router served on a local port until dropped.
struct Served {
    base: String,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

/// An answer: its status and its body as JSON (`Null` when empty, a string
/// when not JSON).
struct Answer {
    status: u16,
    body: Value,
}

impl Served {
    async fn start<B: Backend>(client: Client<B>, policy: HealthPolicy) -> Result<Self, Failure> {
        let auth = Auth::tokens().admin(ADMIN).tenant("acme", ACME);
        let app = Server::new(client, auth).health(policy).router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Failure::new(format!("bind: {e}")))?;
        let base = format!(
            "http://{}",
            listener
                .local_addr()
                .map_err(|e| Failure::new(e.to_string()))?
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            base,
            http: plain_http()?,
            _stop: stop,
        })
    }

    /// Sends `method path` with `token` and a JSON `body`.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Answer, Failure> {
        self.raw(method, path, token, body.map(|b| b.to_string()), &[])
            .await
    }

    /// Sends `method path` with `token`, a body as given and extra headers.
    async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, Failure> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| Failure::new(format!("method {method}: {e}")))?;
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req
            .send()
            .await
            .map_err(|e| Failure::new(format!("{path}: {e}")))?;
        let status = res.status().as_u16();
        let text = res
            .text()
            .await
            .map_err(|e| Failure::new(format!("{path}: {e}")))?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer { status, body })
    }
}

/// An HTTP client for `http://` only: reqwest is built without a TLS
/// provider of its own, so it gets one with no certificate to trust.
fn plain_http() -> Result<reqwest::Client, Failure> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::new(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| Failure::new(e.to_string()))
}

/// Serves a fresh client of `b` with the default health policy.
async fn serve<B: Backend>(b: &B) -> Result<(Served, Client<B>), Failure> {
    let client = Client::new(b.clone());
    let served = Served::start(client.clone(), HealthPolicy::default()).await?;
    Ok((served, client))
}

/// Claims the due heads of `queue` and kills them: dead, each holding its
/// group where the queue holds groups on a dead head.
async fn kill_heads<B: Backend>(
    b: &B,
    queue: &str,
    now: wq_core::Timestamp,
) -> Result<Vec<wq_core::Job>, Failure> {
    let heads = claim(b, queue, 10, now, secs(30)).await?;
    for h in &heads {
        let kill = AckAction::Kill {
            error: "bounced".into(),
        };
        ack(b, h, kill, now).await?;
    }
    Ok(heads)
}

fn id_of(v: &Value) -> Result<String, Failure> {
    v.pointer("/job/id")
        .or_else(|| v.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Failure::new(format!("no id in {v}")))
}

/// Jobs are stored, found, listed a page at a time by every filter, located
/// and cancelled over HTTP; an `Idempotency-Key` stores a job once.
pub async fn api_stores_lists_and_cancels<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (s, client) = serve(&b).await?;
        declare(&client, QueueConfig::new("api")).await?;
        let first = s
            .raw(
                "POST",
                "/api/jobs",
                Some(ADMIN),
                Some(json!({"queue": "api", "payload": {"text": "hi"}, "group": "c1"}).to_string()),
                &[("Idempotency-Key", "order-1")],
            )
            .await?;
        ensure_eq!(first.status, 201, "a new job: {}", first.body);
        let again = s
            .raw(
                "POST",
                "/api/jobs",
                Some(ADMIN),
                Some(json!({"queue": "api", "payload": {"text": "hi"}, "group": "c1"}).to_string()),
                &[("Idempotency-Key", "order-1")],
            )
            .await?;
        ensure_eq!(
            again.status,
            200,
            "the key named a stored job: {}",
            again.body
        );
        ensure_eq!(id_of(&again.body)?, id_of(&first.body)?, "the same job");
        ensure_eq!(again.body["created"], json!(false), "not created again");

        let batch = s
            .call(
                "POST",
                "/api/jobs/batch",
                Some(ADMIN),
                Some(json!({"jobs": (0..5).map(|i| json!({
                    "queue": "api", "payload": i, "group": "c1", "tenant": "acme"
                })).collect::<Vec<_>>()})),
            )
            .await?;
        ensure_eq!(batch.status, 201, "a batch: {}", batch.body);
        let job = s
            .call(
                "GET",
                &format!("/api/jobs/{}", id_of(&first.body)?),
                Some(ADMIN),
                None,
            )
            .await?;
        ensure_eq!(job.status, 200, "one job");
        ensure_eq!(
            job.body["payload"],
            json!({"text": "hi"}),
            "its payload as stored"
        );
        ensure_eq!(
            job.body["idempotency_key"],
            json!("order-1"),
            "its key from the header"
        );

        // Pages of two over the six jobs of c1, in id order.
        let mut seen = Vec::new();
        let mut path = "/api/jobs?queue=api&group=c1&limit=2".to_owned();
        loop {
            let page = s.call("GET", &path, Some(ADMIN), None).await?;
            ensure_eq!(page.status, 200, "a page: {}", page.body);
            for j in page.body["jobs"].as_array().into_iter().flatten() {
                seen.push(id_of(j)?);
            }
            match page.body["next"].as_str() {
                Some(next) => path = format!("/api/jobs?queue=api&group=c1&limit=2&after={next}"),
                None => break,
            }
            ensure!(seen.len() <= 6, "paging does not end");
        }
        let mut sorted = seen.clone();
        sorted.sort();
        ensure_eq!(seen.len(), 6, "every job of the group");
        ensure_eq!(seen, sorted, "in id order");
        let acme = s
            .call(
                "GET",
                "/api/jobs?tenant=acme&state=available",
                Some(ADMIN),
                None,
            )
            .await?;
        ensure_eq!(
            acme.body["jobs"].as_array().map(Vec::len),
            Some(5),
            "by tenant and state"
        );
        let keyed = s
            .call(
                "GET",
                "/api/jobs?queue=api&idempotency_key=order-1",
                Some(ADMIN),
                None,
            )
            .await?;
        ensure_eq!(
            keyed.body["jobs"][0]["id"],
            json!(id_of(&first.body)?),
            "by key"
        );

        let last = id_of(&batch.body[4])?;
        let pos = s
            .call(
                "GET",
                &format!("/api/jobs/{last}/position"),
                Some(ADMIN),
                None,
            )
            .await?;
        ensure_eq!(
            pos.body["in_group"],
            json!(5),
            "five ahead of it in its group"
        );
        let cancel = s
            .call(
                "POST",
                &format!("/api/jobs/{last}/cancel"),
                Some(ADMIN),
                None,
            )
            .await?;
        ensure_eq!(
            cancel.body["state"],
            json!("cancelled"),
            "cancelled: {}",
            cancel.body
        );
        let twice = s
            .call(
                "POST",
                &format!("/api/jobs/{last}/cancel"),
                Some(ADMIN),
                None,
            )
            .await?;
        ensure_eq!(twice.status, 409, "a finished job cannot be cancelled");
        let missing = s
            .call(
                "GET",
                "/api/jobs/0190c6d2-0000-7000-8000-000000000000",
                Some(ADMIN),
                None,
            )
            .await?;
        ensure_eq!(missing.status, 404, "no such job");
        Ok(())
    })
    .await
}

/// A batch with one refused job stores nothing and names the job and the
/// field; an unknown queue is 404, a body that is not JSON 400, a field
/// nobody knows 422.
pub async fn api_refuses_bad_input_whole<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (s, client) = serve(&b).await?;
        declare(&client, QueueConfig::new("api")).await?;
        let long = "g".repeat(300);
        let bad = s
            .call(
                "POST",
                "/api/jobs/batch",
                Some(ADMIN),
                Some(json!({"jobs": [
                    {"queue": "api", "payload": 1},
                    {"queue": "api", "payload": 2},
                    {"queue": "api", "payload": 3, "group": long},
                ]})),
            )
            .await?;
        ensure_eq!(bad.status, 422, "a refused job: {}", bad.body);
        ensure_eq!(
            bad.body["error"]["field"],
            json!("group"),
            "names the field"
        );
        ensure_eq!(bad.body["error"]["index"], json!(2), "names the job");
        let unknown = s
            .call(
                "POST",
                "/api/jobs",
                Some(ADMIN),
                Some(json!({"queue": "nope", "payload": 1})),
            )
            .await?;
        ensure_eq!(unknown.status, 404, "an unknown queue: {}", unknown.body);
        ensure_eq!(
            unknown.body["error"]["field"],
            json!("queue"),
            "names the queue"
        );
        let garbage = s
            .raw(
                "POST",
                "/api/jobs",
                Some(ADMIN),
                Some("{not json".into()),
                &[],
            )
            .await?;
        ensure_eq!(garbage.status, 400, "not JSON: {}", garbage.body);
        ensure!(
            garbage.body["error"]["code"].is_string(),
            "a JSON error: {}",
            garbage.body
        );
        let extra = s
            .call(
                "POST",
                "/api/jobs",
                Some(ADMIN),
                Some(json!({"queue": "api", "payload": 1, "colour": 1})),
            )
            .await?;
        ensure_eq!(extra.status, 422, "an unknown field: {}", extra.body);
        let keys = s
            .raw(
                "POST",
                "/api/jobs",
                Some(ADMIN),
                Some(json!({"queue": "api", "payload": 1, "idempotency_key": "a"}).to_string()),
                &[("Idempotency-Key", "b")],
            )
            .await?;
        ensure_eq!(
            keys.body["error"]["field"],
            json!("idempotency_key"),
            "two keys disagree"
        );
        let all = client.list(ListQuery::new().queue("api")).await?;
        ensure!(all.is_empty(), "nothing stored: {} jobs", all.len());
        Ok(())
    })
    .await
}

/// Dead jobs are retried and purged by id or whole; a group held by its
/// dead head is listed as blocked, unblocked (retried in place) or skipped
/// (purged: the group moves on).
pub async fn api_repairs_dead_jobs_and_blocked_groups<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (s, client) = serve(&b).await?;
        let (manual, clock) = manual_client(&b);
        declare(
            &manual,
            QueueConfig::new("hold")
                .on_dead(OnDead::Hold)
                .max_attempts(1),
        )
        .await?;
        for g in ["g1", "g2", "g3"] {
            for i in 0..2 {
                manual
                    .enqueue(wq_core::Enqueue::new("hold", &i).group(g))
                    .await?;
            }
        }
        let heads = kill_heads(&b, "hold", clock.now()).await?;
        ensure_eq!(heads.len(), 3, "one head per group");
        let blocked = s
            .call("GET", "/api/queues/hold/groups/blocked", Some(ADMIN), None)
            .await?;
        let groups: Vec<&str> = blocked
            .body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g["group"].as_str())
            .collect();
        ensure_eq!(groups.len(), 3, "three groups held: {}", blocked.body);
        ensure!(
            blocked
                .body
                .as_array()
                .into_iter()
                .flatten()
                .all(|g| g["behind"] == json!(1)),
            "one job behind each: {}",
            blocked.body
        );
        let unblock = s
            .call(
                "POST",
                "/api/queues/hold/groups/g1/unblock",
                Some(ADMIN),
                None,
            )
            .await?;
        ensure_eq!(unblock.status, 200, "unblocked: {}", unblock.body);
        ensure!(
            unblock.body["state"] == json!("available"),
            "runs again: {}",
            unblock.body
        );
        let skip = s
            .call("POST", "/api/queues/hold/groups/g2/skip", Some(ADMIN), None)
            .await?;
        ensure_eq!(skip.status, 204, "skipped: {}", skip.body);
        let g2 = client
            .list(ListQuery::new().queue("hold").group("g2"))
            .await?;
        ensure!(
            g2.len() == 1 && g2[0].state == JobState::Available,
            "the dead head is gone and the next job is due: {g2:?}"
        );
        let not_blocked = s
            .call("POST", "/api/queues/hold/groups/g2/skip", Some(ADMIN), None)
            .await?;
        ensure_eq!(not_blocked.status, 404, "g2 is not blocked any more");
        let g3_head = heads
            .iter()
            .find(|h| h.group.as_ref().map(|g| g.as_str()) == Some("g3"))
            .ok_or_else(|| Failure::new("no head of g3"))?;
        let retry = s
            .call(
                "POST",
                "/api/queues/hold/dead/retry",
                Some(ADMIN),
                Some(json!({"ids": [g3_head.id.to_string()]})),
            )
            .await?;
        ensure_eq!(
            retry.body["affected"],
            json!(1),
            "retried by id: {}",
            retry.body
        );
        // Kill the heads again; retry one group's by filter, then purge
        // every dead job of the queue.
        kill_heads(&b, "hold", clock.now()).await?;
        let before = client.counts("hold").await?.dead;
        let by_group = s
            .call(
                "POST",
                "/api/queues/hold/dead/retry",
                Some(ADMIN),
                Some(json!({"group": "g3"})),
            )
            .await?;
        ensure_eq!(
            by_group.body["affected"],
            json!(1),
            "g3's dead head: {}",
            by_group.body
        );
        ensure_eq!(client.counts("hold").await?.dead, before - 1, "only g3's");
        kill_heads(&b, "hold", clock.now()).await?;
        let dead = client.counts("hold").await?.dead;
        // No body at all is every dead job of the queue.
        let purge = s
            .call("POST", "/api/queues/hold/dead/purge", Some(ADMIN), None)
            .await?;
        ensure_eq!(
            purge.body["affected"],
            json!(dead),
            "purged whole: {}",
            purge.body
        );
        ensure_eq!(client.counts("hold").await?.dead, 0, "no dead job left");
        Ok(())
    })
    .await
}

/// Queues and sessions are paused and resumed over HTTP, and the counts
/// show it.
pub async fn api_pauses_queues_and_sessions<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (s, client) = serve(&b).await?;
        declare(&client, QueueConfig::new("p")).await?;
        client
            .enqueue(wq_core::Enqueue::new("p", &1).session("+5511"))
            .await?;
        let paused = s
            .call("POST", "/api/queues/p/pause", Some(ADMIN), None)
            .await?;
        ensure_eq!(paused.status, 204, "paused: {}", paused.body);
        let queue = s.call("GET", "/api/queues/p", Some(ADMIN), None).await?;
        ensure_eq!(
            queue.body["paused"],
            json!(true),
            "shown paused: {}",
            queue.body
        );
        ensure_eq!(
            queue.body["counts"]["available"],
            json!(1),
            "its counts: {}",
            queue.body
        );
        s.call("POST", "/api/queues/p/resume", Some(ADMIN), None)
            .await?;
        ensure!(
            !client.queue("p").await?.is_some_and(|q| q.paused),
            "resumed"
        );
        let sp = s
            .call(
                "POST",
                "/api/queues/p/sessions/+5511/pause",
                Some(ADMIN),
                None,
            )
            .await?;
        ensure_eq!(sp.status, 204, "session paused: {}", sp.body);
        let sessions = s
            .call("GET", "/api/queues/p/sessions", Some(ADMIN), None)
            .await?;
        ensure_eq!(
            sessions.body[0]["paused"],
            json!(true),
            "listed paused: {}",
            sessions.body
        );
        ensure_eq!(
            sessions.body[0]["pause_reason"],
            json!("operator"),
            "by an operator"
        );
        s.call(
            "POST",
            "/api/queues/p/sessions/+5511/resume",
            Some(ADMIN),
            None,
        )
        .await?;
        let info = client.session("p", "+5511").await?;
        ensure!(info.is_some_and(|i| !i.paused), "session resumed");
        let all = s.call("GET", "/api/queues", Some(ADMIN), None).await?;
        ensure_eq!(all.body[0]["name"], json!("p"), "every queue: {}", all.body);
        Ok(())
    })
    .await
}

/// WhatsApp messages go in through `/api/messages` as the send pipeline's
/// jobs: grouped by contact, keyed by instance, stored once per key; a
/// tenant's token sends from its own instance only.
pub async fn api_stores_whatsapp_messages<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (s, client) = serve(&b).await?;
        declare(&client, QueueConfig::new("wa")).await?;
        let msg = |instance: &str, to: &str| {
            json!({"queue": "wa", "message": {
                "instance": instance, "to": to, "content": {"type": "text", "body": "oi"}
            }})
            .to_string()
        };
        let first = s
            .raw(
                "POST",
                "/api/messages",
                Some(ADMIN),
                Some(msg("acme", "+55 11 99999-8888")),
                &[("Idempotency-Key", "m1")],
            )
            .await?;
        ensure_eq!(first.status, 201, "stored: {}", first.body);
        ensure_eq!(
            first.body["job"]["group"],
            json!("acme:5511999998888"),
            "by contact"
        );
        ensure_eq!(first.body["job"]["session"], json!("acme"), "by instance");
        let again = s
            .raw(
                "POST",
                "/api/messages",
                Some(ADMIN),
                Some(msg("acme", "+55 11 99999-8888")),
                &[("Idempotency-Key", "m1")],
            )
            .await?;
        ensure_eq!(again.status, 200, "stored once: {}", again.body);
        ensure_eq!(id_of(&again.body)?, id_of(&first.body)?, "the same job");
        let bad = s
            .raw(
                "POST",
                "/api/messages",
                Some(ADMIN),
                Some(msg("acme", "not a number")),
                &[],
            )
            .await?;
        ensure_eq!(bad.status, 422, "a bad recipient: {}", bad.body);
        ensure_eq!(
            bad.body["error"]["field"],
            json!("message"),
            "names the message"
        );
        let theirs = s
            .raw(
                "POST",
                "/api/messages",
                Some(ACME),
                Some(msg("other", "+5511999998888")),
                &[],
            )
            .await?;
        ensure_eq!(
            theirs.status,
            403,
            "another tenant's instance: {}",
            theirs.body
        );
        let own = s
            .raw(
                "POST",
                "/api/messages",
                Some(ACME),
                Some(msg("acme", "+5511999997777")),
                &[],
            )
            .await?;
        ensure_eq!(own.status, 201, "its own instance: {}", own.body);
        ensure_eq!(
            client.counts("wa").await?.available,
            2,
            "two messages stored"
        );
        Ok(())
    })
    .await
}

/// Every endpoint, and what each token gets from it.
const ENDPOINTS: &[(&str, &str, bool)] = &[
    ("POST", "/api/jobs", false),
    ("POST", "/api/messages", false),
    ("POST", "/api/jobs/batch", false),
    ("GET", "/api/jobs", false),
    ("GET", "/api/jobs/{id}", false),
    ("GET", "/api/jobs/{id}/position", false),
    ("POST", "/api/jobs/{id}/cancel", false),
    ("GET", "/api/queues", true),
    ("GET", "/api/queues/t", true),
    ("POST", "/api/queues/t/pause", true),
    ("POST", "/api/queues/t/resume", true),
    ("POST", "/api/queues/t/dead/retry", false),
    ("POST", "/api/queues/t/dead/purge", false),
    ("GET", "/api/queues/t/sessions", true),
    ("POST", "/api/queues/t/sessions/s1/pause", true),
    ("POST", "/api/queues/t/sessions/s1/resume", true),
    ("GET", "/api/queues/t/groups/blocked", false),
    ("POST", "/api/queues/t/groups/{group}/unblock", false),
    ("POST", "/api/queues/t/groups/{group}/skip", false),
];

/// The body an endpoint takes, if any.
fn body_for(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("POST", "/api/jobs") => Some(json!({"queue": "t", "payload": 1})),
        ("POST", "/api/messages") => Some(json!({"queue": "t", "message": {
            "instance": "acme", "to": "+5511999998888", "content": {"type": "text", "body": "oi"}
        }})),
        ("POST", "/api/jobs/batch") => Some(json!({"jobs": [{"queue": "t", "payload": 1}]})),
        (_, p) if p.contains("/dead/") => Some(json!({})),
        _ => None,
    }
}

/// Every endpoint refuses a missing or unknown token (401); a tenant's
/// token gets 403 from every queue-wide one, sees none of another tenant's
/// jobs (404), changes none of them, and stores jobs under its own tenant.
pub async fn tokens_are_required_and_tenants_confined<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (s, client) = serve(&b).await?;
        let (manual, clock) = manual_client(&b);
        declare(
            &manual,
            QueueConfig::new("t").on_dead(OnDead::Hold).max_attempts(1),
        )
        .await?;
        for (tenant, group) in [("acme", "a1"), ("other", "o1")] {
            for i in 0..2 {
                manual
                    .enqueue(wq_core::Enqueue::new("t", &i).tenant(tenant).group(group))
                    .await?;
            }
        }
        kill_heads(&b, "t", clock.now()).await?;
        let jobs = client.list(ListQuery::new().queue("t")).await?;
        let other = jobs
            .iter()
            .find(|j| j.tenant.as_deref() == Some("other") && j.state == JobState::Dead)
            .ok_or_else(|| Failure::new("no dead job of the other tenant"))?;
        let other_waiting = jobs
            .iter()
            .find(|j| j.tenant.as_deref() == Some("other") && j.state.is_waiting())
            .ok_or_else(|| Failure::new("no waiting job of the other tenant"))?;
        let before = client.list(ListQuery::new().queue("t")).await?;

        for (method, template, admin_only) in ENDPOINTS {
            let path = template
                .replace("{id}", &other_waiting.id.to_string())
                .replace("{group}", "o1");
            for token in [None, Some("wrong-token")] {
                let a = s
                    .call(method, &path, token, body_for(method, template))
                    .await?;
                ensure_eq!(a.status, 401, "{method} {path} with {token:?}: {}", a.body);
                ensure_eq!(
                    a.body["error"]["code"],
                    json!("unauthorized"),
                    "{method} {path}"
                );
            }
            let a = s
                .call(method, &path, Some(ACME), body_for(method, template))
                .await?;
            if *admin_only {
                ensure_eq!(a.status, 403, "{method} {path} is an admin's: {}", a.body);
            } else if template.contains("{id}") || template.contains("{group}") {
                ensure_eq!(
                    a.status,
                    404,
                    "{method} {path} on another tenant's: {}",
                    a.body
                );
            } else {
                ensure!(
                    a.status < 300,
                    "{method} {path} for a tenant: {} {}",
                    a.status,
                    a.body
                );
            }
        }

        // Nothing of the other tenant changed; what acme stored is acme's.
        let after = client.list(ListQuery::new().queue("t")).await?;
        for job in before
            .iter()
            .filter(|j| j.tenant.as_deref() == Some("other"))
        {
            let now = after.iter().find(|j| j.id == job.id);
            ensure!(
                now.is_some_and(|n| n.state == job.state && n.attempt == job.attempt),
                "the other tenant's job {} changed: {:?} -> {:?}",
                job.id,
                job.state,
                now.map(|n| n.state)
            );
        }
        let stored: Vec<_> = after
            .iter()
            .filter(|j| !before.iter().any(|b| b.id == j.id))
            .collect();
        ensure_eq!(stored.len(), 3, "the tenant's enqueue, batch and message");
        ensure!(
            stored.iter().all(|j| j.tenant.as_deref() == Some("acme")),
            "stored under the tenant's own name"
        );
        ensure!(
            after
                .iter()
                .any(|j| j.id == other.id && j.state == JobState::Dead),
            "the other tenant's dead job is still dead"
        );
        let listed = s.call("GET", "/api/jobs?queue=t", Some(ACME), None).await?;
        ensure!(
            listed.body["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|j| j["tenant"] == json!("acme")),
            "a tenant lists its own jobs: {}",
            listed.body
        );
        let asked = s
            .call("GET", "/api/jobs?tenant=other", Some(ACME), None)
            .await?;
        ensure_eq!(asked.status, 403, "asking for another tenant");
        let theirs = s
            .call(
                "POST",
                "/api/jobs",
                Some(ACME),
                Some(json!({"queue": "t", "payload": 1, "tenant": "other"})),
            )
            .await?;
        ensure_eq!(theirs.status, 403, "storing for another tenant");
        let by_id = s
            .call(
                "POST",
                "/api/queues/t/dead/retry",
                Some(ACME),
                Some(json!({"ids": [other.id.to_string()]})),
            )
            .await?;
        ensure_eq!(
            by_id.body["affected"],
            json!(0),
            "another tenant's dead job by id"
        );
        let count = client.list(ListQuery::new().queue("t")).await?.len();
        ensure_eq!(count, after.len(), "refused calls stored nothing");
        Ok(())
    })
    .await
}

/// `/health` turns degraded and then unhealthy as the backlog grows past
/// its marks; `/ready`, `/metrics` and the OpenAPI document answer.
pub async fn health_metrics_and_openapi<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let client = Client::new(b.clone());
        let policy = HealthPolicy {
            degraded_backlog: 2,
            unhealthy_backlog: 5,
            ..HealthPolicy::default()
        };
        let s = Served::start(client.clone(), policy).await?;
        declare(&client, QueueConfig::new("h")).await?;
        let healthy = s.call("GET", "/health", None, None).await?;
        ensure_eq!(
            healthy.body["status"],
            json!("healthy"),
            "empty: {}",
            healthy.body
        );
        client
            .enqueue_many((0..3).map(|i| wq_core::Enqueue::new("h", &i)))
            .await?;
        let degraded = s.call("GET", "/health", None, None).await?;
        ensure_eq!(degraded.status, 200, "degraded still serves");
        ensure_eq!(
            degraded.body["status"],
            json!("degraded"),
            "3 due: {}",
            degraded.body
        );
        client
            .enqueue_many((0..3).map(|i| wq_core::Enqueue::new("h", &i)))
            .await?;
        let unhealthy = s.call("GET", "/health", None, None).await?;
        ensure_eq!(unhealthy.status, 503, "unhealthy: {}", unhealthy.body);
        ensure_eq!(
            s.call("GET", "/ready", None, None).await?.status,
            200,
            "ready"
        );

        // A worker this process watches has stopped: unhealthy.
        let stopped = HealthPolicy {
            workers: vec![std::sync::Arc::new(|| true), std::sync::Arc::new(|| false)],
            ..HealthPolicy::default()
        };
        let s2 = Served::start(client.clone(), stopped).await?;
        let h = s2.call("GET", "/health", None, None).await?;
        ensure_eq!(h.status, 503, "a stopped worker: {}", h.body);
        ensure_eq!(h.body["workers"]["alive"], json!(1), "one of two alive");
        // Throughput: finished jobs per second between two readings.
        let first = s.call("GET", "/api/queues/h", Some(ADMIN), None).await?;
        ensure_eq!(
            first.body["throughput_per_sec"],
            Value::Null,
            "one reading: {}",
            first.body
        );
        let now = wq_core::Clock::now(client.clock().as_ref());
        let two = claim(&b, "h", 2, now, secs(30)).await?;
        for j in &two {
            ack(&b, j, AckAction::complete(), now).await?;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        let second = s.call("GET", "/api/queues/h", Some(ADMIN), None).await?;
        ensure_eq!(
            second.body["counts"]["finished"],
            json!(2),
            "finished: {}",
            second.body
        );
        ensure!(
            second.body["throughput_per_sec"]
                .as_f64()
                .is_some_and(|r| r > 0.0 && r <= 2.0),
            "two jobs in about a second: {}",
            second.body
        );
        let metrics = s.call("GET", "/metrics", None, None).await?;
        let text = metrics.body.as_str().unwrap_or_default();
        ensure!(
            text.contains("wq_queue_jobs{queue=\"h\",state=\"available\"} 4")
                && text.contains("wq_queue_finished{queue=\"h\"} 2"),
            "the depth gauge: {text}"
        );
        let doc = s.call("GET", "/api/openapi.json", None, None).await?;
        for (_, template, _) in ENDPOINTS {
            let path = template
                .replace("/t/", "/{queue}/")
                .replace("/api/queues/t", "/api/queues/{queue}")
                .replace("s1", "{session}");
            ensure!(
                doc.body["paths"].get(&path).is_some(),
                "the OpenAPI document has {path}"
            );
        }
        Ok(())
    })
    .await
}

/// Random and malformed bodies, paths, query strings and headers, with the
/// admin token: every answer is a JSON error or a success, never a 5xx, and
/// a refused enqueue stores nothing.
pub async fn malformed_requests_get_json_errors<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (s, client) = serve(&b).await?;
        declare(&client, QueueConfig::new("f")).await?;
        let mut runner = TestRunner::deterministic();
        let segment = prop_oneof![
            Just("f".to_owned()),
            Just("%00".to_owned()),
            Just("..".to_owned()),
            Just("0190c6d2-0000-7000-8000-000000000000".to_owned()),
            "[a-z0-9%.\\-]{0,300}",
            "\\PC{0,40}".prop_map(|s| s.replace(['/', '?', '#'], "")),
        ];
        let body = prop_oneof![
            Just(None),
            "\\PC{0,200}".prop_map(Some),
            any::<Vec<u8>>().prop_map(|b| Some(String::from_utf8_lossy(&b).into_owned())),
            (segment.clone(), any::<i64>(), "\\PC{0,20}").prop_map(|(q, n, g)| Some(
                json!({"queue": q, "payload": n, "group": g, "priority": n, "delay_ms": n})
                    .to_string()
            )),
            Just(Some(
                json!({"queue": "f", "payload": 1, "max_attempts": -1}).to_string()
            )),
            Just(Some(
                json!({"jobs": [{"queue": "f", "payload": 1}, {"queue": "f"}]}).to_string()
            )),
        ];
        let query = "[a-z_=&%0-9\\-]{0,60}";
        let case = (0..ENDPOINTS.len(), segment, body, query, "\\PC{0,30}");
        let (mut sent, mut refused) = (0, 0);
        for _ in 0..cases() {
            let (e, seg, body, query, header) = case
                .new_tree(&mut runner)
                .map_err(|e| Failure::new(e.to_string()))?
                .current();
            let (method, template, _) = ENDPOINTS[e];
            let path = template
                .replace("{id}", &seg)
                .replace("{group}", &seg)
                .replace("/t/", &format!("/{seg}/"));
            let path = format!("{path}?{query}");
            let before = client.counts("f").await?.total();
            let a = s
                .raw(
                    method,
                    &path,
                    Some(ADMIN),
                    body.clone(),
                    &[("Idempotency-Key", &header)],
                )
                .await;
            // A path or header the HTTP client itself refuses never left it.
            let Ok(a) = a else { continue };
            sent += 1;
            ensure!(
                a.status < 500,
                "{method} {path} {body:?} answered {}: {}",
                a.status,
                a.body
            );
            if a.status >= 400 {
                refused += 1;
                ensure!(
                    a.body["error"]["code"].is_string(),
                    "{method} {path}: a JSON error, not {}",
                    a.body
                );
                ensure_eq!(
                    client.counts("f").await?.total(),
                    before,
                    "{method} {path} {body:?} was refused but stored"
                );
            }
        }
        // Most cases must reach the server, and most be refused: else the
        // generator tests nothing.
        ensure!(
            sent * 2 >= cases() && refused * 2 >= sent,
            "{sent} of {} cases sent, {refused} refused",
            cases()
        );
        Ok(())
    })
    .await
}

/// Random requests per backend (`WQ_PROPTEST_CASES` overrides).
fn cases() -> u32 {
    std::env::var("WQ_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}
