//! The DynamoDB store passes the shared conformance suite against DynamoDB Local.

conformance::conformance_suite!(e2e::fresh_store, model_cases = 48);
