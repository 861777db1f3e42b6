//! `pgwarden backup` against a real S3-compatible server (moto) started by pgw-testkit.
