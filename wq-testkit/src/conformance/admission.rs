//! Admissions: a session's budget of new groups, kept in the store and
//! taken in one atomic step (see `docs/sessions.md`).

use wq_core::{
    Admission, Admissions as _, Allowance, Clock as _, Error, GroupKey, QueueConfig, QueueName,
    SessionKey, StoreError,
};

use crate::harness::{TestBackend, TestResult, declare, manual_client, secs, with_backend};
use crate::{Failure, ensure, ensure_eq};

/// A session takes on at most `new` groups it never served in any window
/// of `per`; groups it was admitted to before go on when the budget is
/// spent, a place frees when the oldest admission leaves the window, a
/// hold refuses new groups until it ends, and sessions count apart.
pub async fn new_groups_are_budgeted<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("send")).await?;
        let q = QueueName::from("send");
        let t0 = clock.now();
        let admit = |session: &'static str, group: &'static str, at| {
            let (b, q) = (b.clone(), q.clone());
            async move {
                b.admit(&q, &SessionKey::from(session), &GroupKey::from(group), at)
                    .await
                    .map_err(Failure::from)
            }
        };
        use Admission::{Admitted, Known, Refused};
        ensure_eq!(
            admit("n1", "old", t0).await?,
            Admitted,
            "no allowance: admitted"
        );
        client
            .set_allowance("send", "n1", Some(Allowance::new(2, secs(3600))))
            .await?;
        let steps = [
            ("old", 1, Known, "admitted before the allowance: known"),
            ("a", 1, Admitted, "the second place of the window"),
            (
                "b",
                2,
                Refused {
                    until: t0 + secs(3600),
                },
                "the budget is spent until the oldest leaves",
            ),
            (
                "a",
                3,
                Known,
                "a known group goes on when the budget is spent",
            ),
            ("old", 3, Known, "so does the first"),
            (
                "b",
                3600,
                Admitted,
                "a place freed as the oldest left the window",
            ),
        ];
        for (group, at, want, what) in steps {
            ensure_eq!(admit("n1", group, t0 + secs(at)).await?, want, "{what}");
        }
        ensure_eq!(
            admit("n2", "a", t0 + secs(4)).await?,
            Admitted,
            "sessions count apart"
        );

        client
            .hold_admissions("send", "n1", t0 + secs(7200))
            .await?;
        ensure_eq!(
            admit("n1", "c", t0 + secs(5000)).await?,
            Refused {
                until: t0 + secs(7200)
            },
            "held: refused until the hold ends"
        );
        ensure_eq!(
            admit("n1", "a", t0 + secs(5000)).await?,
            Known,
            "held: known groups go on"
        );
        ensure_eq!(
            admit("n1", "c", t0 + secs(7200)).await?,
            Admitted,
            "the hold ended"
        );

        client.set_allowance("send", "n1", None).await?;
        for g in ["d", "e", "f"] {
            ensure_eq!(
                admit("n1", g, t0 + secs(7201)).await?,
                Admitted,
                "allowance lifted"
            );
        }

        match client
            .set_allowance("send", "n1", Some(Allowance::new(0, secs(60))))
            .await
        {
            Err(Error::Invalid(e)) => ensure_eq!(e.field, "allowance.new", "the field named"),
            other => return Err(Failure::new(format!("a zero allowance gave {other:?}"))),
        }
        ensure_eq!(
            admit("n1", "g", t0 + secs(7201)).await?,
            Admitted,
            "the refused allowance stored nothing"
        );
        match b
            .admit(&"nowhere".into(), &"n1".into(), &"a".into(), t0)
            .await
        {
            Err(StoreError::UnknownQueue(_)) => {}
            other => return Err(Failure::new(format!("an unknown queue gave {other:?}"))),
        }
        Ok(())
    })
    .await
}

/// Two callers at once for a session's last place admit one group: the
/// other is refused; two at once for the same new group admit it once, and
/// the other learns it is known (as does a call sent again after its reply
/// was lost).
pub async fn admissions_race_for_the_last_place<T: TestBackend>(t: &T) -> TestResult {
    with_backend(t, |b| async move {
        let (client, clock) = manual_client(&b);
        declare(&client, QueueConfig::new("send")).await?;
        let q = QueueName::from("send");
        let now = clock.now();
        for round in 0u32..8 {
            let session = SessionKey::from(format!("n{round}").as_str());
            b.set_allowance(&q, &session, Some(&Allowance::new(1, secs(3600))))
                .await?;
            let same = round.is_multiple_of(2);
            let race = |g: &str| {
                let (b, q, s, g) = (b.clone(), q.clone(), session.clone(), GroupKey::from(g));
                tokio::spawn(async move { b.admit(&q, &s, &g, now).await })
            };
            let (x, y) = (race("a"), race(if same { "a" } else { "b" }));
            let mut got = vec![
                x.await.map_err(|e| Failure::new(e.to_string()))??,
                y.await.map_err(|e| Failure::new(e.to_string()))??,
            ];
            got.sort_by_key(|a| format!("{a:?}"));
            let want = if same {
                vec![Admission::Admitted, Admission::Known]
            } else {
                vec![
                    Admission::Admitted,
                    Admission::Refused {
                        until: now + secs(3600),
                    },
                ]
            };
            ensure_eq!(got, want, "round {round}: one admitted");
            let again = b.admit(&q, &session, &GroupKey::from("a"), now).await?;
            ensure!(
                again == Admission::Known || (!same && again != Admission::Admitted),
                "round {round}: admitted once: {again:?}"
            );
        }
        Ok(())
    })
    .await
}
