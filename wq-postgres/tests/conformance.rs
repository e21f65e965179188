//! wq-postgres against the whole conformance suite and the property tests,
//! each test in its own schema of the real server.

mod support;

wq_testkit::conformance_tests!(support::Postgres);
wq_testkit::concurrency_tests!(support::Postgres);
wq_testkit::property_tests!(support::Postgres, 48);
