//! `Admissions` by `lua/admission.lua`: a session's allowance and hold in a
//! hash, the groups it was admitted to in a zset by time, decided in one
//! script.

use wq_core::{
    Admission, Admissions, Allowance, GroupKey, QueueName, SessionKey, StoreError, Timestamp,
};

use crate::error::reply;
use crate::ops::micros;
use crate::reply::{array, int};
use crate::scripts::SCRIPTS;
use crate::store::RedisStore;

impl Admissions for RedisStore {
    async fn set_allowance(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        allowance: Option<&Allowance>,
    ) -> Result<(), StoreError> {
        if let Some(a) = allowance {
            a.validate()?;
        }
        let (new, per) = allowance.map_or((String::new(), String::new()), |a| {
            (a.new.to_string(), micros(a.per).to_string())
        });
        self.run(&SCRIPTS.admission, queue, |call| {
            call.arg("allow").arg(session.as_str()).arg(new).arg(per);
        })
        .await
        .map(drop)
    }

    async fn hold_admissions(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        until: Timestamp,
    ) -> Result<(), StoreError> {
        self.run(&SCRIPTS.admission, queue, |call| {
            call.arg("hold")
                .arg(session.as_str())
                .arg(until.as_micros());
        })
        .await
        .map(drop)
    }

    async fn admit(
        &self,
        queue: &QueueName,
        session: &SessionKey,
        group: &GroupKey,
        now: Timestamp,
    ) -> Result<Admission, StoreError> {
        let answer = self
            .run(&SCRIPTS.admission, queue, |call| {
                call.arg("admit")
                    .arg(session.as_str())
                    .arg(group.as_str())
                    .arg(now.as_micros());
            })
            .await?;
        let answer = array(answer)?;
        match (answer.first().map(int).transpose()?, answer.get(1)) {
            (Some(0), _) => Ok(Admission::Known),
            (Some(1), _) => Ok(Admission::Admitted),
            (Some(2), Some(until)) => Ok(Admission::Refused {
                until: Timestamp::from_micros(int(until)?),
            }),
            _ => Err(reply(format!("admit answered {answer:?}"))),
        }
    }
}
