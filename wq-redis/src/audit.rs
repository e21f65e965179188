//! The audit (`wq_core::Audit`): `lua/audit.lua` judges one page at a time,
//! atomically; this side walks the pages and puts the findings together.
//!
//! Three walks: every waiting job (`Q:wait`), checked against its group's
//! line and the claim indexes; every lease (`Q:leases`), whose running jobs
//! must head their groups; and, only when the queue counts more running
//! jobs than the leases hold, every id of the queue (`Q:all`), to find the
//! running jobs without a lease. The last walk reads retained finished jobs
//! too, which is why it runs only when the counts say it will find
//! something.

use std::collections::HashSet;

use redis::Value;
use wq_core::{
    Anomaly, AnomalyKind, Audit, AuditReport, GroupKey, JobId, QueueName, StoreError, Timestamp,
};

use crate::error::reply;
use crate::reply::{array, count, int, job_id, text, tuple};
use crate::scripts::SCRIPTS;
use crate::store::RedisStore;
use crate::work::rest_tuple;

/// Members one script call looks at: bounds how long a call holds the
/// server on a large queue.
const PAGE: usize = 1_000;

/// Which walk a script call continues.
#[derive(Clone, Copy)]
enum Phase {
    Wait,
    Leases,
    All,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Wait => "wait",
            Phase::Leases => "leases",
            Phase::All => "all",
        }
    }

    /// The cursor that starts the walk, and the one that says it is over.
    fn start(self) -> &'static str {
        match self {
            Phase::Leases => "0",
            Phase::Wait | Phase::All => "",
        }
    }
}

/// What one page brought.
struct Page {
    found: Vec<Anomaly>,
    checked: u64,
    cursor: String,
    extra: Value,
}

/// The findings of a walk, with anomalies reported once even when a job is
/// met on two pages (a job whose sort key changed between them) or in two
/// walks (an unleased group head).
struct Findings {
    report: AuditReport,
    seen: HashSet<(AnomalyKind, JobId)>,
}

impl Findings {
    fn add(&mut self, found: Vec<Anomaly>) {
        for a in found {
            if self.seen.insert((a.kind, a.job)) {
                self.report.anomalies.push(a);
            }
        }
    }
}

impl RedisStore {
    async fn audit_page(
        &self,
        queue: &QueueName,
        now: Timestamp,
        repair: bool,
        phase: Phase,
        cursor: &str,
    ) -> Result<Page, StoreError> {
        let rest = self
            .write(&SCRIPTS.audit, queue, now, |call| {
                call.arg(phase.name())
                    .arg(cursor)
                    .arg(u8::from(repair))
                    .arg(PAGE);
            })
            .await?;
        let [found, checked, cursor, extra] = rest_tuple(rest)?;
        let found = array(found)?
            .into_iter()
            .map(|a| anomaly(queue, a))
            .collect::<Result<_, _>>()?;
        Ok(Page {
            found,
            checked: count(&checked)?,
            cursor: text(&cursor)?.to_owned(),
            extra,
        })
    }

    /// Walks one phase to its end; `each` sees every page's extra data.
    async fn audit_walk(
        &self,
        queue: &QueueName,
        now: Timestamp,
        repair: bool,
        phase: Phase,
        findings: &mut Findings,
        mut each: impl FnMut(Value) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let mut cursor = phase.start().to_owned();
        let mut checked = 0;
        loop {
            let page = self.audit_page(queue, now, repair, phase, &cursor).await?;
            findings.add(page.found);
            checked += page.checked;
            each(page.extra)?;
            if page.cursor == phase.start() {
                return Ok(checked);
            }
            cursor = page.cursor;
        }
    }
}

impl Audit for RedisStore {
    async fn audit(
        &self,
        queue: &QueueName,
        now: Timestamp,
        repair: bool,
    ) -> Result<AuditReport, StoreError> {
        let mut findings = Findings {
            report: AuditReport::default(),
            seen: HashSet::new(),
        };
        let waiting = self
            .audit_walk(queue, now, repair, Phase::Wait, &mut findings, |_| Ok(()))
            .await?;
        // ZSCAN may return a member twice; the set counts each job once.
        let mut leased: HashSet<String> = HashSet::new();
        let mut running = 0;
        self.audit_walk(queue, now, repair, Phase::Leases, &mut findings, |extra| {
            let [ids, n] = tuple::<2>(extra)?;
            for id in array(ids)? {
                leased.insert(text(&id)?.to_owned());
            }
            running = count(&n)?;
            Ok(())
        })
        .await?;
        let unleased = if running > leased.len() as u64 {
            self.audit_walk(queue, now, repair, Phase::All, &mut findings, |_| Ok(()))
                .await?
        } else {
            0
        };
        let mut report = findings.report;
        report.checked = waiting + leased.len() as u64 + unleased;
        Ok(report)
    }
}

/// One finding as the script reports it: `{ kind, id, group, repaired }`.
fn anomaly(queue: &QueueName, v: Value) -> Result<Anomaly, StoreError> {
    let [kind, id, group, repaired] = tuple::<4>(v)?;
    let kind = match text(&kind)? {
        "h" => AnomalyKind::Headless,
        "m" => AnomalyKind::MisplacedHead,
        "u" => AnomalyKind::Unleased,
        other => return Err(reply(format!("unknown anomaly kind `{other}`"))),
    };
    let group = text(&group)?;
    Ok(Anomaly {
        kind,
        queue: queue.clone(),
        group: (!group.is_empty()).then(|| GroupKey::from(group)),
        job: job_id(text(&id)?)?,
        repaired: int(&repaired)? != 0,
    })
}
