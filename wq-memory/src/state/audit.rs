//! The memory store's audit: every unfinished job of a queue is compared
//! with the indexes a claim and the rescuer read.

use std::collections::{BTreeMap, HashSet};

use wq_core::{
    Anomaly, AnomalyKind, AuditReport, GroupKey, JobId, JobState, Lease, QueueName, StoreError,
    Timestamp,
};

use super::State;

/// An unfinished job as the audit sees it.
struct Seen {
    seq: u64,
    id: JobId,
    state: JobState,
}

impl State {
    pub fn audit(
        &mut self,
        name: &QueueName,
        now: Timestamp,
        repair: bool,
    ) -> Result<AuditReport, StoreError> {
        let q = self.queue(name)?;
        let claimable: HashSet<JobId> = q
            .ready
            .values()
            .chain(q.scheduled.values())
            .chain(q.sessions.values().flat_map(|s| s.ready.values()))
            .copied()
            .collect();
        let mut groups: BTreeMap<GroupKey, Vec<Seen>> = BTreeMap::new();
        let mut report = AuditReport::default();
        let mut found = Vec::new();
        for job in self
            .jobs
            .values()
            .filter(|j| &j.queue == name && !j.state.is_terminal())
        {
            report.checked += 1;
            let seen = Seen {
                seq: job.seq,
                id: job.id,
                state: job.state,
            };
            if job.state == JobState::Running {
                let tracked = job
                    .lease
                    .as_ref()
                    .is_some_and(|l| self.leases.contains(&(l.expires_at, job.id)));
                if !tracked {
                    found.push((AnomalyKind::Unleased, job.group.clone(), job.id));
                }
            }
            match &job.group {
                Some(g) => groups.entry(g.clone()).or_default().push(seen),
                None if job.state != JobState::Running && !claimable.contains(&job.id) => {
                    found.push((AnomalyKind::Headless, None, job.id));
                }
                None => {}
            }
        }
        for (g, mut line) in groups {
            line.sort_by_key(|s| s.seq);
            let held = self
                .queues
                .get(name)
                .and_then(|q| q.groups.get(&g))
                .is_some_and(|gr| gr.held);
            let expected = if held {
                None
            } else {
                line.first().map(|s| s.id)
            };
            let is_head = |s: &Seen| s.state == JobState::Running || claimable.contains(&s.id);
            for s in line.iter().filter(|s| is_head(s) && Some(s.id) != expected) {
                found.push((AnomalyKind::MisplacedHead, Some(g.clone()), s.id));
            }
            let busy = line.iter().any(|s| s.state == JobState::Running);
            if let Some(first) = line.first().filter(|s| !held && !busy && !is_head(s)) {
                found.push((AnomalyKind::Headless, Some(g.clone()), first.id));
            }
            let pending: Vec<JobId> = line.iter().map(|s| s.id).collect();
            if repair && !self.line_matches(name, &g, &pending) {
                self.rebuild_line(name, &g, pending);
            }
        }
        for (kind, group, job) in found {
            let repaired = repair && self.repair(kind, job, now);
            report.anomalies.push(Anomaly {
                kind,
                queue: name.clone(),
                group,
                job,
                repaired,
            });
        }
        Ok(report)
    }

    /// Whether the group's line holds exactly `pending` (after a dead head
    /// that holds it).
    fn line_matches(&self, name: &QueueName, g: &GroupKey, pending: &[JobId]) -> bool {
        let Some(group) = self.queues.get(name).and_then(|q| q.groups.get(g)) else {
            return false;
        };
        let skip = usize::from(group.held);
        group.pending.iter().skip(skip).eq(pending.iter())
    }

    fn rebuild_line(&mut self, name: &QueueName, g: &GroupKey, pending: Vec<JobId>) {
        let Some(q) = self.queues.get_mut(name) else {
            return;
        };
        let group = q.groups.entry(g.clone()).or_default();
        let held_by = group.pending.front().copied().filter(|_| group.held);
        group.pending = held_by.into_iter().chain(pending).collect();
    }

    /// Repairs one anomaly; false if it cannot be repaired.
    fn repair(&mut self, kind: AnomalyKind, id: JobId, now: Timestamp) -> bool {
        let Some(job) = self.jobs.get_mut(&id) else {
            return false;
        };
        match kind {
            AnomalyKind::Headless => {
                self.requeue(id, now);
                true
            }
            AnomalyKind::MisplacedHead if job.state != JobState::Running => {
                let job = job.clone();
                if let Some(q) = self.queues.get_mut(&job.queue) {
                    q.unindex(&job);
                }
                true
            }
            AnomalyKind::MisplacedHead => false,
            AnomalyKind::Unleased => {
                let lease = job.lease.get_or_insert_with(|| Lease {
                    token: 0,
                    expires_at: now,
                    worker: "unknown".into(),
                    started_at: now,
                });
                lease.expires_at = lease.expires_at.min(now);
                self.leases.insert((lease.expires_at, id));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wq_core::{ClaimRequest, Enqueue, QueueConfig, Wakeups};

    use super::super::ready_key;
    use super::*;

    fn enqueue(s: &mut State, group: Option<&str>, now: Timestamp) -> JobId {
        let e = Enqueue::new("q", &"x");
        let e = match group {
            Some(g) => e.group(g),
            None => e,
        };
        let new = e.build(&QueueConfig::new("q"), now).expect("valid job");
        s.enqueue(vec![new], now).expect("stored")[0].job.id
    }

    fn kinds(report: &AuditReport) -> Vec<(AnomalyKind, JobId)> {
        let mut k: Vec<_> = report.anomalies.iter().map(|a| (a.kind, a.job)).collect();
        k.sort_by_key(|(kind, id)| (format!("{kind:?}"), *id));
        k
    }

    #[test]
    fn audit_finds_and_repairs_broken_invariants() {
        let wakeups = Wakeups::new();
        let q: QueueName = "q".into();
        let now = Timestamp::from_micros(1_000_000_000);
        let mut s = State::default();
        s.declare_queue(&QueueConfig::new("q"), wakeups.sender(&q));
        let running = enqueue(&mut s, Some("a"), now);
        let behind = enqueue(&mut s, Some("a"), now);
        let waiting = enqueue(&mut s, Some("b"), now);
        enqueue(&mut s, Some("b"), now);
        let loose = enqueue(&mut s, None, now);
        let req = ClaimRequest::new("q", 1, now, now + Duration::from_secs(30), "w");
        assert_eq!(s.claim(&req).expect("claim")[0].id, running);
        let clean = s.audit(&q, now, false).expect("audit");
        assert!(clean.is_clean(), "{:?}", clean.anomalies);
        assert_eq!(clean.checked, 5);

        // Break each invariant once.
        let job = |s: &State, id: JobId| s.jobs[&id].clone();
        let (w, l, b) = (job(&s, waiting), job(&s, loose), job(&s, behind));
        let qs = s.queues.get_mut(&q).expect("queue");
        qs.unindex(&w);
        qs.unindex(&l);
        qs.ready.insert(ready_key(&b), behind);
        s.leases.clear();

        let mut expected = vec![
            (AnomalyKind::Headless, waiting),
            (AnomalyKind::Headless, loose),
            (AnomalyKind::MisplacedHead, behind),
            (AnomalyKind::Unleased, running),
        ];
        expected.sort_by_key(|(kind, id)| (format!("{kind:?}"), *id));
        assert_eq!(kinds(&s.audit(&q, now, false).expect("audit")), expected);
        let repaired = s.audit(&q, now, true).expect("audit");
        assert!(repaired.anomalies.iter().all(|a| a.repaired));
        assert!(s.audit(&q, now, false).expect("audit").is_clean());

        let req = ClaimRequest::new("q", 10, now, now + Duration::from_secs(30), "w");
        let mut ids: Vec<_> = s.claim(&req).expect("claim").iter().map(|j| j.id).collect();
        ids.sort();
        let mut want = vec![waiting, loose];
        want.sort();
        assert_eq!(ids, want, "claimable after the repair");
        assert_eq!(s.rescue(now, 10).retried, 1, "the unleased job is rescued");
    }
}
