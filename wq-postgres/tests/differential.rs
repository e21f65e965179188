//! wq-postgres against the reference, the memory backend: the testkit's
//! differential tests, each case in its own schema of the real server.

mod support;

wq_testkit::differential_tests!(support::Postgres, 32);
