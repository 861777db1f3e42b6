//! The auth file (`auth_file`, PgBouncer's `userlist.txt`): one user per line,
//!
//! ```text
//! "alice" "md5a3556571e93b0d20722ba62be61e8c2d"
//! "bob" "SCRAM-SHA-256$4096:…$…:…"
//! "say ""hi""" "plain password"
//! ```
//!
//! read as PgBouncer's `load_auth_file` reads it: leading blanks and blank lines are
//! skipped, a line whose first character is `;` is a comment (only `;`: PgBouncer has no
//! `#` comments here), a field is double-quoted with `""` for a `"`, anything between
//! the two fields and after the second one is ignored (the old `pg_auth` file had more
//! fields). A later line for the same user wins. Secrets go through [`Secret::parse`].
//!
//! Where PgBouncer logs "broken auth file" and silently keeps only the users read so
//! far, this is an error naming `file:line` ([`ConfigError::Parse`], whose `path` is
//! `file:line`); both fields must be on one line. Error text never contains a secret,
//! and names the user only when the line's two fields were read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::secret::Secret;

/// Reads the auth file at `path`.
pub fn load(path: &Path) -> Result<BTreeMap<String, Secret>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => parse(&text, path),
        Err(e) => {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            Err(error(path, line, "not valid UTF-8"))
        }
    }
}

/// Parses auth file text; `origin` names it in errors.
pub fn parse(text: &str, origin: &Path) -> Result<BTreeMap<String, Secret>, ConfigError> {
    let mut users = BTreeMap::new();
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        let s = line.trim_start();
        if s.is_empty() || s.starts_with(';') {
            continue;
        }
        let Some(rest) = s.strip_prefix('"') else {
            return Err(error(
                origin,
                n,
                "expected a double-quoted user name (comments start with `;`)",
            ));
        };
        let Some((user, rest)) = quoted(rest) else {
            return Err(error(origin, n, "the user name has no closing quote"));
        };
        // PgBouncer skips whatever comes before the second field's opening quote.
        let Some(start) = rest.find('"') else {
            return Err(error(
                origin,
                n,
                "no double-quoted secret after the user name",
            ));
        };
        let Some((secret, _ignored)) = quoted(&rest[start + 1..]) else {
            return Err(error(origin, n, "the secret has no closing quote"));
        };
        if user.is_empty() {
            return Err(error(origin, n, "empty user name"));
        }
        let secret = Secret::parse(&secret)
            .map_err(|reason| error(origin, n, &format!("user {user:?}: {reason}")))?;
        users.insert(user, secret);
    }
    Ok(users)
}

/// The text of a field whose opening quote was just read, with `""` as `"`, and what
/// follows its closing quote; `None` without a closing quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '"' {
            if s[i + 1..].starts_with('"') {
                out.push('"');
                chars.next();
            } else {
                return Some((out, &s[i + 1..]));
            }
        } else {
            out.push(c);
        }
    }
    None
}

fn error(origin: &Path, line: usize, reason: &str) -> ConfigError {
    ConfigError::Parse {
        path: PathBuf::from(format!("{}:{line}", origin.display())),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(text: &str) -> Result<BTreeMap<String, Secret>, ConfigError> {
        parse(text, Path::new("userlist.txt"))
    }

    fn err(text: &str) -> String {
        p(text).unwrap_err().to_string()
    }

    #[test]
    fn plain_md5_and_scram() {
        let scram = postgres_protocol::password::scram_sha_256(b"pw");
        let text = format!(
            "\"alice\" \"hunter2\"\n\"bob\" \"md5a3556571e93b0d20722ba62be61e8c2d\"\n\"carol\" \"{scram}\"\n"
        );
        let users = p(&text).unwrap();
        assert_eq!(users.len(), 3);
        assert_eq!(users["alice"], Secret::Plain("hunter2".into()));
        assert_eq!(
            users["bob"],
            Secret::Md5("md5a3556571e93b0d20722ba62be61e8c2d".into())
        );
        match &users["carol"] {
            Secret::Scram(s) => assert_eq!(s.iterations, 4096),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn doubled_quotes_are_quotes() {
        let users = p("\"say \"\"hi\"\"\" \"pa\"\"ss\"\n\"\"\"\" \"x\"").unwrap();
        assert_eq!(users["say \"hi\""], Secret::Plain("pa\"ss".into()));
        assert_eq!(users["\""], Secret::Plain("x".into()));
    }

    #[test]
    fn comments_blanks_and_ignored_fields() {
        let text = "; a comment\n\n   \n  \t\"a\" \"1\"\r\n\"b\"\t\"2\" \"2030-01-01\" trailing\n\
                    \"c\",\"3\"\n  ; indented comment\n\"d\" \"\"\n";
        let users = p(text).unwrap();
        assert_eq!(users.len(), 4);
        assert_eq!(users["a"], Secret::Plain("1".into()));
        assert_eq!(users["b"], Secret::Plain("2".into()));
        assert_eq!(users["c"], Secret::Plain("3".into()));
        // PgBouncer keeps an empty password (the user then cannot log in with one).
        assert_eq!(users["d"], Secret::Plain(String::new()));
        assert!(p("").unwrap().is_empty());
    }

    #[test]
    fn later_lines_win() {
        let users = p("\"a\" \"1\"\n\"a\" \"2\"\n").unwrap();
        assert_eq!(users["a"], Secret::Plain("2".into()));
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let cases = [
            (
                "\"a\" \"1\"\n# not a comment here\n",
                2,
                "double-quoted user name",
            ),
            ("alice hunter2\n", 1, "double-quoted user name"),
            ("\"a\" \"1\"\n\"b\n", 2, "user name has no closing quote"),
            ("\"a\"\n\"1\"\n", 1, "no double-quoted secret"),
            ("\"a\" \"1\n", 1, "secret has no closing quote"),
            ("\"\" \"1\"\n", 1, "empty user name"),
        ];
        for (text, line, what) in cases {
            let e = err(text);
            assert!(
                e.starts_with(&format!("userlist.txt:{line}: ")) && e.contains(what),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn malformed_scram_names_the_user_not_the_secret() {
        let bad = "SCRAM-SHA-256$4096:c2FsdA==$bm90MzI=:bm90MzI=";
        let e = err(&format!("\"ok\" \"x\"\n\"mallory\" \"{bad}\"\n"));
        assert!(e.starts_with("userlist.txt:2: "), "{e}");
        assert!(e.contains("mallory") && e.contains("SCRAM"), "{e}");
        assert!(!e.contains("bm90") && !e.contains("c2FsdA"), "{e}");
    }

    #[test]
    fn secrets_never_in_errors() {
        for text in [
            "\"hunter2secret\"\n",
            "\"u\" \"hunter2secret\n",
            "hunter2secret\n",
            "\"u\" \"SCRAM-SHA-256$hunter2secret\"\n",
        ] {
            let e = err(text);
            assert!(!e.contains("hunter2secret"), "{text:?}: {e}");
        }
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userlist.txt");
        std::fs::write(&path, "\"a\" \"1\"\n").unwrap();
        assert_eq!(load(&path).unwrap()["a"], Secret::Plain("1".into()));
        let missing = dir.path().join("missing.txt");
        assert!(matches!(load(&missing), Err(ConfigError::Read { .. })));
        std::fs::write(&path, b"\"a\" \"1\"\n\"b\" \"\xff\"\n").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.ends_with("userlist.txt:2: not valid UTF-8"), "{e}");
    }

    fn quote(s: &str) -> String {
        format!("\"{}\"", s.replace('"', "\"\""))
    }

    proptest! {
        #[test]
        fn quoting_round_trips(user in "[^\n\r]{1,20}", pw in "[^\n\r$]{0,20}") {
            let line = format!("{} {}\n", quote(&user), quote(&pw));
            let users = p(&line).unwrap();
            prop_assert_eq!(users.get(&user), Some(&Secret::parse(&pw).unwrap()));
        }

        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = p(&text);
        }
    }
}
