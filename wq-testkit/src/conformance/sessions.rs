//! Sessions and group gaps: limits kept in the store and checked inside the
//! claim, so they hold across workers (see `docs/sessions.md`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use wq_core::{
    AckAction, Admin, Clock as _, Enqueue, Error, Job, JobContext, JobError, JobId, PauseChange,
    QueueConfig, QueueName, QueueOptions, Rate, Scheduler as _, SessionKey, SessionLimits,
    Sessions as _, Store as _, Timestamp, Worker, WorkerHandle,
};

use crate::harness::{
    PATIENCE, TestBackend, TestResult, ack, claim, claim_with_next_due, complete_all, declare,
    manual_client, must_get, secs, stop, wait_until, with_backend,
};
use crate::{Failure, ensure, ensure_eq};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

/// A job of `session` in its own group `g`.
fn sent(queue: &str, session: &str, g: &str) -> Enqueue {
    Enqueue::new(queue, &g).group(g).session(session)
}

/// A session's running and waiting counts.
async fn counts_of<B: wq_core::Backend>(
    b: &B,
    queue: &str,
    session: &str,
) -> Result<(u64, u64), Failure> {
    let info = b
        .session_info(&QueueName::from(queue), &SessionKey::from(session))
        .await?
        .ok_or_else(|| Failure::new(format!("session {session} is unknown")))?;
    Ok((info.running, info.waiting))
}

/// At most `max_running` jobs of a session run at once, whoever claims:
/// the claim hands out the rest of the queue meanwhile, and a job that
/// stops running (acknowledged or rescued) frees its place.
pub async fn sessions_cap_running_jobs<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("send")).await?;
        client
            .set_session_limits("send", "n1", SessionLimits::new().max_running(2))
            .await?;
        let mut n1 = Vec::new();
        for g in ["a", "b", "c", "d"] {
            n1.push(client.enqueue(sent("send", "n1", g)).await?.job);
        }
        let other = client.enqueue(sent("send", "n2", "e")).await?.job;
        let loose = client.enqueue(Enqueue::new("send", &"loose")).await?.job;
        let t0 = clock.now();

        let first = claim(&b, "send", 10, t0, secs(1)).await?;
        let mut want = vec![n1[0].id, n1[1].id, other.id, loose.id];
        want.sort();
        let mut got = ids(&first);
        got.sort();
        ensure_eq!(got, want, "the first claim: two of n1, and everything else");
        ensure_eq!(
            counts_of(&b, "send", "n1").await?,
            (2, 2),
            "n1 running, waiting"
        );
        ensure!(
            claim(&b, "send", 10, t0, secs(1)).await?.is_empty(),
            "a second worker's claim went past n1's max running"
        );

        let done = first.iter().find(|j| j.id == n1[0].id).cloned();
        let done = done.ok_or_else(|| Failure::new("n1's first job was not claimed"))?;
        complete_all(&b, &[done], t0).await?;
        ensure_eq!(
            ids(&claim(&b, "send", 10, t0, secs(1)).await?),
            vec![n1[2].id],
            "an acknowledgement frees one place"
        );
        ensure!(
            claim(&b, "send", 10, t0, secs(1)).await?.is_empty(),
            "n1 full again"
        );

        // Every lease lapses (two of n1 among them): a rescue frees places.
        let later = t0 + secs(2);
        ensure_eq!(b.rescue(later, 100).await?.retried, 4, "rescued");
        ensure_eq!(
            counts_of(&b, "send", "n1").await?,
            (0, 3),
            "n1 after the rescue"
        );
        let again = claim(&b, "send", 10, later, secs(30)).await?;
        let of_n1 = again
            .iter()
            .filter(|j| j.session.as_ref().map(SessionKey::as_str) == Some("n1"))
            .count();
        ensure_eq!(
            (again.len(), of_n1),
            (4, 2),
            "after the rescue: all four, two of them n1's"
        );
        Ok(())
    })
    .await
}

/// A rate spaces a session's starts by `per / starts` at least, whoever
/// claims; a limited session neither blocks the others nor keeps workers
/// busy (the next due time is its next start), and jitter only lengthens
/// the spacing, within its bound.
pub async fn session_rates_space_starts<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("send")).await?;
        let rate = Rate::new(2, secs(1));
        client
            .set_session_limits("send", "n1", SessionLimits::new().rate(rate))
            .await?;
        let mut jobs = Vec::new();
        for g in ["a", "b", "c"] {
            jobs.push(client.enqueue(sent("send", "n1", g)).await?.job);
        }
        let t0 = clock.now();
        let q = QueueName::from("send");

        let first = claim_with_next_due(&b, "send", 10, t0, secs(30)).await?;
        ensure_eq!(
            ids(&first),
            vec![jobs[0].id],
            "one start per claim under a rate"
        );
        ensure_eq!(
            b.next_due(&q, t0).await?,
            Some(t0 + ms(500)),
            "next due: the session's next start, not now"
        );
        let info = client.session("send", "n1").await?;
        ensure_eq!(
            info.and_then(|i| i.next_start),
            Some(t0 + ms(500)),
            "next_start reported"
        );
        ensure!(
            claim(&b, "send", 10, t0 + ms(499), secs(30))
                .await?
                .is_empty(),
            "a start 499 ms after the last, under a 500 ms spacing"
        );
        let loose = client.enqueue(Enqueue::new("send", &"loose")).await?.job;
        ensure_eq!(
            ids(&claim(&b, "send", 10, t0 + ms(499), secs(30)).await?),
            vec![loose.id],
            "a limited session does not hold back the rest of the queue"
        );
        ensure_eq!(
            ids(&claim_with_next_due(&b, "send", 10, t0 + ms(500), secs(30)).await?),
            vec![jobs[1].id],
            "the next start at the spacing"
        );
        ensure_eq!(
            ids(&claim(&b, "send", 10, t0 + ms(1_200), secs(30)).await?),
            vec![jobs[2].id],
            "a late claim starts one job, not a burst"
        );

        let jittered = rate.jitter(ms(200));
        client
            .set_session_limits("send", "n2", SessionLimits::new().rate(jittered))
            .await?;
        for g in ["d", "e"] {
            client.enqueue(sent("send", "n2", g)).await?;
        }
        let t1 = t0 + secs(10);
        let started = claim(&b, "send", 10, t1, secs(30)).await?;
        ensure_eq!(started.len(), 1, "one start of n2");
        let next = client
            .session("send", "n2")
            .await?
            .and_then(|i| i.next_start)
            .ok_or_else(|| Failure::new("n2 reports no next start"))?;
        ensure!(
            next >= t1 + ms(500) && next <= t1 + ms(700),
            "a jittered next start {next:?} outside [500, 700] ms after {t1:?}"
        );
        ensure!(
            claim(&b, "send", 10, next - ms(1), secs(30))
                .await?
                .is_empty(),
            "a start before the jittered next start"
        );
        ensure_eq!(
            claim(&b, "send", 10, next, secs(30)).await?.len(),
            1,
            "a start at the jittered next start"
        );
        Ok(())
    })
    .await
}

/// A job between steps has started already: once due it comes before
/// every job of its priority that has not (with a session or without), and
/// its next run takes no start from its session's rate, so a message that
/// is typing sends on time while the rate spaces the messages that have not
/// started (docs/sessions.md).
pub async fn steps_keep_their_place_and_take_no_start<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("send")).await?;
        let t0 = clock.now();
        let typing = |at: Timestamp| AckAction::Continue {
            run_at: at,
            step: "typing".into(),
        };

        // Under a rate of one start per 10 s.
        client
            .set_session_limits(
                "send",
                "n1",
                SessionLimits::new().rate(Rate::new(1, secs(10))),
            )
            .await?;
        let mut jobs = Vec::new();
        for g in ["a", "b"] {
            jobs.push(client.enqueue(sent("send", "n1", g)).await?.job);
        }
        let first = claim(&b, "send", 10, t0, secs(30)).await?;
        ensure_eq!(ids(&first), vec![jobs[0].id], "the first start");
        ack(&b, &first[0], typing(t0 + secs(2)), t0 + secs(1)).await?;
        let q = QueueName::from("send");
        ensure_eq!(
            b.next_due(&q, t0 + secs(1)).await?,
            Some(t0 + secs(2)),
            "next due: the step, before the session's next start"
        );
        ensure!(
            claim(&b, "send", 10, t0 + secs(1), secs(30))
                .await?
                .is_empty(),
            "nothing runs before the step is due"
        );
        let again = claim(&b, "send", 10, t0 + secs(2), secs(30)).await?;
        ensure_eq!(
            ids(&again),
            vec![jobs[0].id],
            "the step runs when due, inside the rate's spacing, and alone"
        );
        ensure_eq!(again[0].step.as_deref(), Some("typing"), "the step kept");
        ensure_eq!(again[0].attempt, 1, "the same attempt");
        ensure_eq!(
            client
                .session("send", "n1")
                .await?
                .and_then(|i| i.next_start),
            Some(t0 + secs(10)),
            "a step takes no start: next_start is the first start's"
        );
        ack(&b, &again[0], AckAction::complete(), t0 + secs(3)).await?;
        ensure!(
            claim(&b, "send", 10, t0 + secs(9), secs(30))
                .await?
                .is_empty(),
            "the next message waits for the rate"
        );
        ensure_eq!(
            ids(&claim(&b, "send", 10, t0 + secs(10), secs(30)).await?),
            vec![jobs[1].id],
            "the next message at the rate's spacing"
        );

        // Its place: ahead of jobs that were due before it, with a session
        // and without.
        let t1 = t0 + secs(20);
        for (session, prefix) in [(Some("n2"), "s"), (None, "p")] {
            let mut line = Vec::new();
            for n in 0..2 {
                let g = format!("{prefix}{n}");
                let mut e = Enqueue::new("send", &g).group(g.as_str()).run_at(t1);
                if let Some(session) = session {
                    e = e.session(session);
                }
                line.push(client.enqueue(e).await?.job);
            }
            let head = claim(&b, "send", 1, t1, secs(30)).await?;
            ensure_eq!(ids(&head), vec![line[0].id], "{prefix}: the first in order");
            ack(&b, &head[0], typing(t1 + secs(1)), t1).await?;
            let pos = b
                .position(line[1].id)
                .await?
                .ok_or_else(|| Failure::new("no position"))?;
            ensure_eq!(pos.in_queue, 1, "{prefix}: the job between steps is ahead");
            let next = claim(&b, "send", 1, t1 + secs(1), secs(30)).await?;
            ensure_eq!(
                ids(&next),
                vec![line[0].id],
                "{prefix}: the step comes before a job due since before it"
            );
            complete_all(&b, &next, t1 + secs(1)).await?;
            let rest = claim(&b, "send", 10, t1 + secs(1), secs(30)).await?;
            ensure_eq!(ids(&rest), vec![line[1].id], "{prefix}: then the rest");
            complete_all(&b, &rest, t1 + secs(1)).await?;
        }
        Ok(())
    })
    .await
}

/// A paused session starts nothing and spends no attempt; the rest of the
/// queue goes on; resumed, its groups start in their order.
pub async fn paused_sessions_hold_their_jobs<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("send")).await?;
        client.pause_session("send", "n1").await?;
        let first = client.enqueue(sent("send", "n1", "ana")).await?.job;
        let second = client.enqueue(sent("send", "n1", "ana")).await?.job;
        let other = client.enqueue(sent("send", "n1", "bia")).await?.job;
        let free = client.enqueue(sent("send", "n2", "caio")).await?.job;
        let t0 = clock.now();
        let q = QueueName::from("send");

        let got = claim_with_next_due(&b, "send", 10, t0, secs(30)).await?;
        ensure_eq!(ids(&got), vec![free.id], "only the unpaused session runs");
        ensure_eq!(
            b.next_due(&q, t0).await?,
            None,
            "nothing due while the only waiting jobs are paused"
        );
        let info = client.session("send", "n1").await?;
        ensure_eq!(
            info.map(|i| (i.paused, i.waiting, i.running)),
            Some((true, 3, 0)),
            "the paused session: paused, waiting, running"
        );
        ensure_eq!(
            must_get(&b, first.id).await?.attempt,
            0,
            "a paused job spent an attempt"
        );

        client.resume_session("send", "n1").await?;
        let later = t0 + secs(1);
        let mut resumed = ids(&claim(&b, "send", 10, later, secs(30)).await?);
        resumed.sort();
        let mut want = vec![first.id, other.id];
        want.sort();
        ensure_eq!(resumed, want, "resumed: each group's head");
        let head = must_get(&b, first.id).await?;
        ack(&b, &head, AckAction::complete(), later).await?;
        ensure_eq!(
            ids(&claim(&b, "send", 10, later, secs(30)).await?),
            vec![second.id],
            "the group goes on in order"
        );
        Ok(())
    })
    .await
}

/// A pause keeps its reason, and a change applies against the pause in
/// force in one step: a pause "unless paused" keeps another pause's reason,
/// a resume "if" lifts only a pause for exactly that reason, so a process
/// that paused a session for a lost link never lifts an operator's pause.
/// A blank reason is refused, naming `reason`, and changes nothing. Two
/// callers at once change a pause once.
pub async fn pause_reasons_guard_resumes<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, _clock) = manual_client(&b);
        declare(&client, QueueConfig::new("send")).await?;
        let (q, s) = (QueueName::from("send"), SessionKey::from("n1"));
        let reason = |b: &T::Backend| {
            let (q, s) = (q.clone(), s.clone());
            let b = b.clone();
            async move {
                let info = b
                    .session_info(&q, &s)
                    .await?
                    .ok_or_else(|| Failure::new("n1 is unknown"))?;
                ensure_eq!(
                    info.paused,
                    info.pause_reason.is_some(),
                    "paused exactly when there is a reason"
                );
                Ok::<_, Failure>(info.pause_reason)
            }
        };
        let link = || "whatsapp: link down".to_owned();
        client.pause_session("send", "n1").await?;
        ensure_eq!(
            reason(&b).await?,
            Some(wq_core::OPERATOR_PAUSE.to_owned()),
            "an operator's pause"
        );
        let steps = [
            (
                PauseChange::PauseUnlessPaused(link()),
                false,
                Some(wq_core::OPERATOR_PAUSE.to_owned()),
                "a pause unless paused keeps the operator's",
            ),
            (
                PauseChange::ResumeIf(link()),
                false,
                Some(wq_core::OPERATOR_PAUSE.to_owned()),
                "a resume for another reason leaves it",
            ),
            (PauseChange::Resume, true, None, "a plain resume lifts it"),
            (
                PauseChange::Resume,
                false,
                None,
                "resuming a running session changes nothing",
            ),
            (
                PauseChange::PauseUnlessPaused(link()),
                true,
                Some(link()),
                "a pause unless paused, when not paused",
            ),
            (
                PauseChange::Pause(link()),
                false,
                Some(link()),
                "the same pause again changes nothing",
            ),
            (
                PauseChange::Pause("ban".into()),
                true,
                Some("ban".to_owned()),
                "a pause replaces the reason",
            ),
            (
                PauseChange::ResumeIf(link()),
                false,
                Some("ban".to_owned()),
                "the lost link's resume leaves the ban",
            ),
            (
                PauseChange::ResumeIf("ban".into()),
                true,
                None,
                "a resume for its own reason lifts it",
            ),
        ];
        for (change, changed, after, what) in steps {
            ensure_eq!(
                b.set_session_paused(&q, &s, &change).await?,
                changed,
                "{what}: changed"
            );
            ensure_eq!(reason(&b).await?, after, "{what}: the reason");
        }
        let paused_now = b.paused_sessions(&q, None, 10).await?;
        ensure!(paused_now.is_empty(), "none paused: {paused_now:?}");
        let listed = b.list_sessions(&q, None, 10).await?;
        client
            .change_session_pause("send", "n1", PauseChange::Pause("shown".into()))
            .await?;
        let listed_paused = b.list_sessions(&q, None, 10).await?;
        // Sessions m0..m4 beside it, m1 and m3 paused: the paused ones, in
        // key order, a page at a time.
        for n in 0..5 {
            let key = format!("m{n}");
            client
                .set_session_limits("send", &key, SessionLimits::new())
                .await?;
            if n % 2 == 1 {
                client.pause_session("send", &key).await?;
            }
        }
        let first = b.paused_sessions(&q, None, 2).await?;
        let rest = b
            .paused_sessions(&q, first.last().map(|i| &i.session), 2)
            .await?;
        let keys = |v: &[wq_core::SessionInfo]| {
            v.iter()
                .map(|i| i.session.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        ensure_eq!(
            keys(&first),
            vec!["m1", "m3"],
            "the first page of paused sessions"
        );
        ensure_eq!(keys(&rest), vec!["n1"], "the next page");

        // Two callers at once: one pause wins and keeps its reason; of two
        // resumes for it, one lifts it; sent again (a lost reply), the
        // resume changes nothing.
        for round in 0..6 {
            let s = SessionKey::from(format!("r{round}").as_str());
            let race = |change: PauseChange| {
                let (b, q, s) = (b.clone(), q.clone(), s.clone());
                tokio::spawn(async move { b.set_session_paused(&q, &s, &change).await })
            };
            let joined = |h: tokio::task::JoinHandle<Result<bool, wq_core::StoreError>>| async {
                h.await
                    .map_err(|e| Failure::new(e.to_string()))?
                    .map_err(Failure::from)
            };
            let x = race(PauseChange::PauseUnlessPaused("x".into()));
            let y = race(PauseChange::PauseUnlessPaused("y".into()));
            let (x, y) = (joined(x).await?, joined(y).await?);
            ensure!(x != y, "round {round}: one pause of two applied ({x}, {y})");
            let winner = if x { "x" } else { "y" };
            let info = b.session_info(&q, &s).await?;
            ensure_eq!(
                info.and_then(|i| i.pause_reason),
                Some(winner.to_owned()),
                "round {round}: the winner's reason"
            );
            let first = race(PauseChange::ResumeIf(winner.into()));
            let second = race(PauseChange::ResumeIf(winner.into()));
            let (first, second) = (joined(first).await?, joined(second).await?);
            ensure!(first != second, "round {round}: one resume of two applied");
            let again = b
                .set_session_paused(&q, &s, &PauseChange::ResumeIf(winner.into()))
                .await?;
            ensure!(!again, "round {round}: a resume sent again changes nothing");
        }
        ensure!(
            listed.iter().all(|i| i.pause_reason.is_none()),
            "listed without a reason: {listed:?}"
        );
        ensure_eq!(
            listed_paused
                .iter()
                .find(|i| i.session == s)
                .and_then(|i| i.pause_reason.clone()),
            Some("shown".to_owned()),
            "a listed session shows its reason"
        );
        for bad in ["", "   ", "line\nbreak"] {
            match client
                .change_session_pause("send", "n1", PauseChange::Pause(bad.into()))
                .await
            {
                Err(Error::Invalid(e)) => ensure_eq!(e.field, "reason", "the field named"),
                other => return Err(Failure::new(format!("reason {bad:?} gave {other:?}"))),
            }
        }
        let long = "x".repeat(wq_core::MAX_PAUSE_REASON + 1);
        ensure!(
            client
                .change_session_pause("send", "n1", PauseChange::ResumeIf(long))
                .await
                .is_err(),
            "an overlong reason is refused"
        );
        ensure_eq!(
            reason(&b).await?,
            Some("shown".to_owned()),
            "refused changes changed nothing"
        );
        Ok(())
    })
    .await
}

/// Sessions are listed by key in pages with their limits and counts; bad
/// limits are refused naming the field, and an unknown queue is an error.
pub async fn sessions_are_listed_with_counts<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, _clock) = manual_client(&b);
        declare(&client, QueueConfig::new("send")).await?;
        for (s, g) in [("c", "x"), ("a", "y"), ("b", "z"), ("a", "w")] {
            client.enqueue(sent("send", s, g)).await?;
        }
        let limits = SessionLimits::new().max_running(3);
        client.set_session_limits("send", "d", limits).await?;
        ensure_eq!(
            client.session("send", "zz").await?,
            None,
            "an unknown session"
        );

        let page = client.sessions("send", None, 2).await?;
        let keys: Vec<_> = page.iter().map(|i| i.session.to_string()).collect();
        ensure_eq!(keys, vec!["a", "b"], "the first page");
        ensure_eq!(
            (page[0].waiting, page[0].running, page[0].limits),
            (2, 0, SessionLimits::new()),
            "session a"
        );
        let rest = client.sessions("send", Some("b"), 10).await?;
        let keys: Vec<_> = rest.iter().map(|i| i.session.to_string()).collect();
        ensure_eq!(keys, vec!["c", "d"], "the next page");
        ensure_eq!(
            (rest[1].limits, rest[1].waiting, rest[1].paused),
            (limits, 0, false),
            "a session made by its limits alone"
        );

        match client
            .set_session_limits("send", "d", SessionLimits::new().max_running(0))
            .await
        {
            Err(Error::Invalid(e)) => ensure_eq!(e.field, "max_running", "the field named"),
            other => return Err(Failure::new(format!("max_running 0 gave {other:?}"))),
        }
        let kept = client.session("send", "d").await?.map(|i| i.limits);
        ensure_eq!(kept, Some(limits), "refused limits changed nothing");
        match client.pause_session("nowhere", "d").await {
            Err(Error::Invalid(e)) => ensure_eq!(e.field, "queue", "the field named"),
            other => return Err(Failure::new(format!("an unknown queue gave {other:?}"))),
        }
        match b
            .set_session_paused(&"nowhere".into(), &"d".into(), &PauseChange::operator())
            .await
        {
            Err(wq_core::StoreError::UnknownQueue(_)) => {}
            other => {
                return Err(Failure::new(format!(
                    "the store took an unknown queue: {other:?}"
                )));
            }
        }
        Ok(())
    })
    .await
}

/// The claim skips sessions that may not start a job, paused, full or
/// limited, even when their heads come first, and keeps the queue's order
/// among the rest.
pub async fn claim_skips_blocked_sessions<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("send")).await?;
        client.pause_session("send", "paused").await?;
        let one = SessionLimits::new().max_running(1);
        client.set_session_limits("send", "full", one).await?;
        let slow = SessionLimits::new().rate(Rate::new(1, secs(60)));
        client.set_session_limits("send", "slow", slow).await?;
        let t0 = clock.now();
        let urgent = |s: &str, g: String| sent("send", s, &g).priority(-5);
        for i in 0..20 {
            client.enqueue(urgent("paused", format!("p{i}"))).await?;
            client.enqueue(urgent("full", format!("f{i}"))).await?;
            client.enqueue(urgent("slow", format!("s{i}"))).await?;
        }
        let started = claim(&b, "send", 2, t0, secs(30)).await?;
        ensure_eq!(started.len(), 2, "one of full and one of slow start");

        let mut open = Vec::new();
        for i in 0..3 {
            let job = Enqueue::new("send", &i).group(format!("o{i}")).priority(i);
            open.push(client.enqueue(job).await?.job.id);
        }
        let late = client
            .enqueue(sent("send", "free", "late").priority(9))
            .await?;
        open.push(late.job.id);
        ensure_eq!(
            ids(&claim(&b, "send", 10, t0, secs(30)).await?),
            open,
            "past 60 blocked heads, in priority order"
        );
        Ok(())
    })
    .await
}

/// A group's next job starts `group_gap` after the previous one ended,
/// whether it waited behind it, came later, or drains after a pause.
pub async fn group_gaps_space_a_groups_jobs<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("chat").group_gap(secs(10))).await?;
        client.pause("chat").await?;
        let mut line = Vec::new();
        for n in 0..3 {
            line.push(
                client
                    .enqueue(Enqueue::new("chat", &n).group("ana"))
                    .await?
                    .job,
            );
        }
        client.resume("chat").await?;
        let t0 = clock.now() + secs(100);

        let first = claim(&b, "chat", 10, t0, secs(30)).await?;
        ensure_eq!(ids(&first), vec![line[0].id], "the first job");
        complete_all(&b, &first, t0 + secs(1)).await?;
        ensure_eq!(
            must_get(&b, line[1].id).await?.run_at,
            t0 + secs(11),
            "the next head's run_at: the gap after the end"
        );
        ensure!(
            claim(&b, "chat", 10, t0 + secs(10), secs(30))
                .await?
                .is_empty(),
            "the next job started within the gap"
        );
        let second = claim(&b, "chat", 10, t0 + secs(11), secs(30)).await?;
        ensure_eq!(
            ids(&second),
            vec![line[1].id],
            "the second job after the gap"
        );
        let retry = AckAction::Retry {
            run_at: t0 + secs(12),
            error: "busy".into(),
        };
        ack(&b, &second[0], retry, t0 + secs(11)).await?;
        let retried = claim(&b, "chat", 10, t0 + secs(12), secs(30)).await?;
        ensure_eq!(
            ids(&retried),
            vec![line[1].id],
            "a retry keeps its own time"
        );
        complete_all(&b, &retried, t0 + secs(12)).await?;
        let third = claim(&b, "chat", 10, t0 + secs(22), secs(30)).await?;
        ensure_eq!(ids(&third), vec![line[2].id], "the third job after the gap");
        complete_all(&b, &third, t0 + secs(22)).await?;

        // A job enqueued into the now empty group waits out the gap too.
        clock.set(t0 + secs(25));
        let next = client
            .enqueue(Enqueue::new("chat", &9).group("ana"))
            .await?
            .job;
        ensure_eq!(next.run_at, t0 + secs(32), "a new head within the gap");
        let fresh = client
            .enqueue(Enqueue::new("chat", &9).group("bia"))
            .await?
            .job;
        ensure_eq!(fresh.run_at, t0 + secs(25), "another group has no gap");

        // Without a gap, a group's next head keeps its run_at, and with it
        // its place ahead of heads that came due later.
        declare(&client, QueueConfig::new("plain")).await?;
        let t1 = clock.now();
        let first = client
            .enqueue(Enqueue::new("plain", &0).group("ana"))
            .await?
            .job;
        let behind = client
            .enqueue(Enqueue::new("plain", &1).group("ana"))
            .await?
            .job;
        clock.set(t1 + secs(5));
        let later = client
            .enqueue(Enqueue::new("plain", &2).group("bia"))
            .await?
            .job;
        let head = claim(&b, "plain", 1, t1 + secs(5), secs(30)).await?;
        ensure_eq!(ids(&head), vec![first.id], "the older head first");
        complete_all(&b, &head, t1 + secs(6)).await?;
        ensure_eq!(
            must_get(&b, behind.id).await?.run_at,
            t1,
            "the next head's run_at without a gap"
        );
        ensure_eq!(
            ids(&claim(&b, "plain", 2, t1 + secs(6), secs(30)).await?),
            vec![behind.id, later.id],
            "the next head keeps its place ahead of a later one"
        );
        Ok(())
    })
    .await
}

/// Starts and ends per session, as handlers see them.
#[derive(Default)]
struct SessionLedger {
    running: Mutex<HashMap<String, usize>>,
    peak: Mutex<HashMap<String, usize>>,
    /// When each job's claim started it, by the claim's clock.
    starts: Mutex<HashMap<String, Vec<Timestamp>>>,
}

impl SessionLedger {
    fn start(&self, s: &str, claimed_at: Timestamp) {
        let mut running = self.running.lock();
        let n = running.entry(s.to_owned()).or_default();
        *n += 1;
        let mut peak = self.peak.lock();
        let p = peak.entry(s.to_owned()).or_default();
        *p = (*p).max(*n);
        self.starts
            .lock()
            .entry(s.to_owned())
            .or_default()
            .push(claimed_at);
    }

    fn end(&self, s: &str) {
        if let Some(n) = self.running.lock().get_mut(s) {
            *n = n.saturating_sub(1);
        }
    }

    fn peak(&self, s: &str) -> usize {
        self.peak.lock().get(s).copied().unwrap_or(0)
    }

    fn starts(&self, s: &str) -> Vec<Timestamp> {
        self.starts.lock().get(s).cloned().unwrap_or_default()
    }
}

/// Starts `workers` workers on `queue` whose handlers record their session
/// in `ledger` and take `busy`.
async fn session_workers<B: wq_core::Backend>(
    b: &B,
    queue: &'static str,
    workers: usize,
    busy: Duration,
    ledger: &Arc<SessionLedger>,
) -> Result<Vec<WorkerHandle>, Failure> {
    let mut handles = Vec::new();
    for _ in 0..workers {
        let ledger = ledger.clone();
        let handler = move |ctx: JobContext| {
            let ledger = ledger.clone();
            async move {
                let session = ctx.job().session.clone().map(|s| s.to_string());
                let s = session.unwrap_or_default();
                // A running job's `updated_at` is its claim's `now`.
                ledger.start(&s, ctx.job().updated_at);
                tokio::time::sleep(busy).await;
                ledger.end(&s);
                Ok::<(), JobError>(())
            }
        };
        let worker = Worker::new(b.clone())
            .handle_with(queue, handler, QueueOptions::default().concurrency(5))
            .start()
            .await?;
        handles.push(worker);
    }
    Ok(handles)
}

async fn stop_all(workers: Vec<WorkerHandle>) -> TestResult {
    let mut first_error = Ok(());
    for w in workers {
        if let Err(e) = stop(w).await
            && first_error.is_ok()
        {
            first_error = Err(e);
        }
    }
    first_error
}

/// Two workers with five slots each never run more of a session's jobs at
/// once than its max running, and never one of a paused session; a resumed
/// session's jobs then run.
pub async fn session_limits_hold_across_workers<T: TestBackend>(t: &T) -> TestResult {
    const PER_SESSION: usize = 12;
    with_backend(t, |b| async move {
        let client = wq_core::Client::new(b.clone());
        declare(&client, QueueConfig::new("send")).await?;
        client
            .set_session_limits("send", "one", SessionLimits::new().max_running(1))
            .await?;
        client
            .set_session_limits("send", "two", SessionLimits::new().max_running(2))
            .await?;
        client.pause_session("send", "paused").await?;
        let jobs = ["one", "two", "free", "paused"].into_iter().flat_map(|s| {
            (0..PER_SESSION).map(move |i| sent("send", s, &format!("{s}-{i}")))
        });
        client.enqueue_many(jobs).await?;
        let ledger = Arc::new(SessionLedger::default());
        let workers = session_workers(&b, "send", 2, ms(15), &ledger).await?;
        let drained = wait_until("the unpaused sessions to finish", PATIENCE, || async {
            Ok(client.counts("send").await?.completed >= 3 * PER_SESSION as u64)
        })
        .await;
        let held = client.session("send", "paused").await;
        let resumed = match (drained, held) {
            (Ok(()), Ok(info)) => {
                ensure_eq!(
                    info.map(|i| (i.waiting, i.running)),
                    Some((PER_SESSION as u64, 0)),
                    "the paused session's jobs while the rest drained"
                );
                ensure_eq!(ledger.peak("paused"), 0, "handlers of a paused session ran");
                client.resume_session("send", "paused").await?;
                wait_until("the resumed session to finish", PATIENCE, || async {
                    Ok(client.counts("send").await?.completed == 4 * PER_SESSION as u64)
                })
                .await
            }
            (Err(e), _) => Err(e),
            (_, Err(e)) => Err(Failure::from(e)),
        };
        let stopped = stop_all(workers).await;
        resumed?;
        stopped?;
        ensure_eq!(ledger.peak("one"), 1, "most handlers at once of a max-1 session");
        ensure!(
            ledger.peak("two") <= 2,
            "a max-2 session ran {} handlers at once",
            ledger.peak("two")
        );
        ensure!(
            ledger.peak("free") > 2,
            "an unlimited session never ran more than two at once ({}): the workers did not run in parallel",
            ledger.peak("free")
        );
        Ok(())
    })
    .await
}

/// Workers wake for a rate-limited session's next start by themselves,
/// and its jobs are claimed one spacing apart across two workers (by the
/// claims' clock: handlers start a little later, by varying amounts).
pub async fn rate_limited_sessions_wake_their_workers<T: TestBackend>(t: &T) -> TestResult {
    const JOBS: usize = 5;
    let spacing = ms(150);
    with_backend(t, |b| async move {
        let client = wq_core::Client::new(b.clone());
        declare(&client, QueueConfig::new("send")).await?;
        let rate = Rate::new(1, spacing);
        client
            .set_session_limits("send", "n1", SessionLimits::new().rate(rate))
            .await?;
        let jobs = (0..JOBS).map(|i| sent("send", "n1", &format!("g{i}")));
        client.enqueue_many(jobs).await?;
        let ledger = Arc::new(SessionLedger::default());
        let workers = session_workers(&b, "send", 2, ms(1), &ledger).await?;
        let done = wait_until("the limited session to finish", PATIENCE, || async {
            Ok(client.counts("send").await?.completed == JOBS as u64)
        })
        .await;
        let stopped = stop_all(workers).await;
        done?;
        stopped?;
        let mut starts = ledger.starts("n1");
        starts.sort();
        ensure_eq!(starts.len(), JOBS, "starts");
        for pair in starts.windows(2) {
            let apart = pair[1].duration_since(pair[0]);
            ensure!(
                apart >= spacing,
                "two claims {apart:?} apart under a {spacing:?} spacing"
            );
        }
        Ok(())
    })
    .await
}
