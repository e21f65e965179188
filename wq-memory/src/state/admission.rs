//! Admissions in memory: per session, the groups it was admitted to and
//! when, under the store's one lock (so an admission is atomic).

use std::collections::{BTreeSet, HashMap};

use wq_core::{Admission, Allowance, GroupKey, QueueName, SessionKey, StoreError, Timestamp};

use super::State;

/// One session's allowance, hold and admitted groups.
#[derive(Debug, Default)]
pub(super) struct Admitted {
    allowance: Option<Allowance>,
    held_until: Option<Timestamp>,
    /// Every group admitted, with when.
    groups: HashMap<GroupKey, Timestamp>,
    /// The same by time, for counting a window.
    by_time: BTreeSet<(Timestamp, GroupKey)>,
}

impl Admitted {
    fn admit(&mut self, group: &GroupKey, now: Timestamp) -> Admission {
        if self.groups.contains_key(group) {
            return Admission::Known;
        }
        if let Some(until) = self.held_until.filter(|u| *u > now) {
            return Admission::Refused { until };
        }
        if let Some(a) = self.allowance {
            let from = now - a.per;
            // Newest first, so the walk stops at the window's start.
            let (count, oldest) = self
                .by_time
                .iter()
                .rev()
                .map(|(at, _)| *at)
                .take_while(|at| *at > from)
                .fold((0usize, now), |(n, _), at| (n + 1, at));
            if count >= a.new as usize {
                return Admission::Refused {
                    until: oldest + a.per,
                };
            }
        }
        self.groups.insert(group.clone(), now);
        self.by_time.insert((now, group.clone()));
        Admission::Admitted
    }
}

impl State {
    pub fn set_allowance(
        &mut self,
        queue: &QueueName,
        session: &SessionKey,
        allowance: Option<&Allowance>,
    ) -> Result<(), StoreError> {
        let q = self.queue_mut(queue)?;
        q.admissions.entry(session.clone()).or_default().allowance = allowance.copied();
        Ok(())
    }

    pub fn hold_admissions(
        &mut self,
        queue: &QueueName,
        session: &SessionKey,
        until: Timestamp,
    ) -> Result<(), StoreError> {
        let q = self.queue_mut(queue)?;
        q.admissions.entry(session.clone()).or_default().held_until = Some(until);
        Ok(())
    }

    pub fn admit(
        &mut self,
        queue: &QueueName,
        session: &SessionKey,
        group: &GroupKey,
        now: Timestamp,
    ) -> Result<Admission, StoreError> {
        let q = self.queue_mut(queue)?;
        Ok(q.admissions
            .entry(session.clone())
            .or_default()
            .admit(group, now))
    }
}
