//! From sqlx's errors to the store's.

use wq_core::{QueueName, StoreError};

/// The SQLSTATE the functions raise for an undeclared queue.
const UNKNOWN_QUEUE: &str = "WQ001";
/// A unique index refused a row: a concurrent enqueue stored the same id or
/// idempotency key first.
pub const UNIQUE_VIOLATION: &str = "23505";
/// The server broke a lock cycle by rolling this transaction back: nothing
/// of it was applied, so it may be sent again.
pub const DEADLOCK_DETECTED: &str = "40P01";

/// A driver error as a store error; the functions' own codes become typed.
pub fn store(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.code().as_deref() == Some(UNKNOWN_QUEUE)
    {
        let name = db
            .message()
            .strip_prefix("unknown queue ")
            .unwrap_or_default();
        return StoreError::UnknownQueue(QueueName::from(name));
    }
    StoreError::backend(e)
}

/// The SQLSTATE of a database error, if it is one.
pub fn code(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The first row of a result read to its end.
///
/// Reading every row matters: sqlx answers a result dropped half-read with
/// an extra round trip to resynchronize the connection.
pub fn first<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// The one row a statement must return.
pub fn only<T>(rows: Vec<T>) -> Result<T, sqlx::Error> {
    first(rows).ok_or(sqlx::Error::RowNotFound)
}
