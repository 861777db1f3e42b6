//! `wal push` and `wal fetch` as archive_command and restore_command: pushing the same
//! segment again is fine (exit 0), a different file of the same name is refused (exit 1,
//! one line, the stored object unchanged); fetching a name that is not there exits 1.

use super::{assert_error, assert_ok, setup};

#[test]
fn push_is_idempotent_and_refuses_a_different_file_of_the_same_name() {
    let (repo, c) = setup();
    c.psql(
        "postgres",
        "create table w as select g from generate_series(1, 10000) g",
    )
    .expect("write");
    let seg = repo.switch_wal(&c);
    let object = repo.wal_object(&seg);
    let stored = std::fs::read(&object).expect("the archived segment");

    // The segment as the archiver pushed it, back from the repository.
    let copy = repo.path(&seg);
    let copy_s = copy.display().to_string();
    let o = repo.cmd(&["wal", "fetch", &seg, &copy_s]);
    assert_ok(&o, "wal fetch");
    let original = std::fs::read(&copy).expect("the fetched segment");
    assert_eq!(original.len(), 16 << 20);
    // The fetched segment is the cluster's own (its long page header names the cluster).
    let sysid = c
        .psql(
            "postgres",
            "select system_identifier from pg_control_system()",
        )
        .expect("system identifier");
    let mut id = [0u8; 8];
    id.copy_from_slice(&original[24..32]);
    assert_eq!(u64::from_ne_bytes(id).to_string(), sysid);

    // The same file again: exit 0, nothing rewritten.
    for _ in 0..2 {
        let o = repo.cmd(&["wal", "push", &copy_s]);
        assert_ok(&o, "wal push of the same segment");
    }
    assert_eq!(std::fs::read(&object).expect("object"), stored);

    // A different file of the same name (one byte well past the page header, same size).
    let mut other = original.clone();
    other[3 * 8192 + 100] ^= 0x5a;
    std::fs::write(&copy, &other).expect("write the changed segment");
    let o = repo.cmd(&["wal", "push", &copy_s]);
    assert_error(&o, 1, &seg);
    assert!(
        crate::stderr(&o).contains("different"),
        "{}",
        crate::stderr(&o)
    );
    assert_eq!(
        std::fs::read(&object).expect("object"),
        stored,
        "the stored segment changed"
    );

    // A file of another size under a segment's name: bad input, nothing stored.
    let next = format!(
        "{}{:08X}",
        &seg[..16],
        u32::from_str_radix(&seg[16..], 16).unwrap() + 100
    );
    let short = repo.path(&next);
    std::fs::write(&short, &original[..8192]).expect("write a short file");
    let o = repo.cmd(&["wal", "push", &short.display().to_string()]);
    assert_error(&o, 2, "bytes");
    assert!(!repo.wal_object(&next).exists());
    // Not a WAL file name.
    let odd = repo.path("not-a-segment");
    std::fs::write(&odd, b"x").expect("write a file");
    let o = repo.cmd(&["wal", "push", &odd.display().to_string()]);
    assert_error(&o, 2, "not-a-segment");

    // Fetch of a name that is not there: exit 1, nothing written, nothing on stderr (which
    // is the server's log: PostgreSQL asks for missing files as a matter of course).
    let dest = repo.path("missing");
    let o = repo.cmd(&["wal", "fetch", &next, &dest.display().to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", crate::stderr(&o));
    assert_eq!(
        crate::stderr(&o),
        "",
        "a missing file is not an error to print"
    );
    assert!(!dest.exists());
    // A fetch of a damaged object fails with 126 (above 125: PostgreSQL stops recovery
    // rather than taking it for the end of the archive) and writes nothing either.
    super::flip_byte(&object, stored.len() / 2);
    let o = repo.cmd(&["wal", "fetch", &seg, &dest.display().to_string()]);
    assert_error(&o, 126, &seg);
    assert!(!dest.exists());
    super::flip_byte(&object, stored.len() / 2);
    repo.assert_clean();
}
