//! Errors that need no server: a wrong bin dir, a bad data-dir file path.

use pgw_cluster::{Cluster, ClusterError};

#[test]
fn bad_bin_dir_says_binaries_not_found() {
    let err = Cluster::builder()
        .bin_dir("/nonexistent/pgwarden/bin")
        .start()
        .unwrap_err();
    assert!(
        matches!(err, ClusterError::BinariesNotFound { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "PostgreSQL binaries not found at /nonexistent/pgwarden/bin (install postgresql-15: apt-get install -y postgresql-15 postgresql-contrib-15)"
    );
}

#[test]
fn file_outside_data_dir_is_rejected() {
    let err = Cluster::builder()
        .file("../escape.conf", "x")
        .start()
        .unwrap_err();
    assert!(
        matches!(err, ClusterError::InvalidFilePath { .. }),
        "{err:?}"
    );
}
