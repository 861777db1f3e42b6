//! The little SQL the pooler reads in transaction and statement mode: whether a simple
//! query sets session state it must carry (SET, RESET, PREPARE, DEALLOCATE, DISCARD) or
//! session state it cannot carry (LISTEN, temporary tables, session advisory locks,
//! WITH HOLD cursors). A tokenizer that skips strings, quoted identifiers, dollar quotes
//! and comments, so a keyword inside a literal does not count; not a parser.

/// What a query does to session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `SET [SESSION] name TO|= value`: the statement, to replay on other servers.
    Set { name: String },
    /// `RESET name`.
    Reset { name: String },
    /// `RESET ALL`.
    ResetAll,
    /// `PREPARE name ...`.
    Prepare { name: String },
    /// `EXECUTE name ...`.
    Execute { name: String },
    /// `DEALLOCATE [PREPARE] name`.
    Deallocate { name: String },
    /// `DEALLOCATE [PREPARE] ALL`.
    DeallocateAll,
    /// `DISCARD ALL` (or PLANS/TEMP/SEQUENCES).
    Discard,
    /// Session state that transaction pooling cannot carry: the reason.
    Refused(&'static str),
    /// Anything else.
    Other,
}

#[derive(Debug, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    Semi,
    Open,
    Dot,
    Other,
}

fn tokens(q: &str) -> Vec<Tok<'_>> {
    let b = q.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            // Block comments nest in PostgreSQL.
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'\'' || c == b'"' {
            i += 1;
            while i < b.len() {
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            out.push(Tok::Other);
        } else if c == b'$' {
            // $tag$ ... $tag$, or a parameter $1.
            let start = i;
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j < b.len() && b[j] == b'$' && !b[start + 1..j].iter().all(u8::is_ascii_digit)
                || (j == start + 1 && b.get(j) == Some(&b'$'))
            {
                let tag = &q[start..=j];
                match q[j + 1..].find(tag) {
                    Some(end) => i = j + 1 + end + tag.len(),
                    None => i = b.len(),
                }
            } else {
                i = j.max(start + 1);
            }
            out.push(Tok::Other);
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
                i += 1;
            }
            // Only ASCII boundaries are cut, so the slice is valid UTF-8.
            out.push(Tok::Word(&q[start..i]));
        } else if c == b';' {
            out.push(Tok::Semi);
            i += 1;
        } else if c == b'(' {
            out.push(Tok::Open);
            i += 1;
        } else if c == b'.' {
            out.push(Tok::Dot);
            i += 1;
        } else {
            out.push(Tok::Other);
            i += 1;
        }
    }
    out
}

fn is(t: Option<&Tok<'_>>, word: &str) -> bool {
    matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(word))
}

fn word(t: Option<&Tok<'_>>) -> Option<String> {
    match t {
        Some(Tok::Word(w)) => Some(w.to_ascii_lowercase()),
        _ => None,
    }
}

const ADVISORY: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Classifies a simple query. Several statements: the refusal check covers them all; the
/// carried kinds only a single statement (a SET inside a batch is not replayed).
pub fn classify(q: &str) -> Kind {
    if plainly_other(q) {
        return Kind::Other;
    }
    classify_tokens(q)
}

/// Words that make the first word of a query worth a closer look.
const CARRIED_FIRST: &[&str] = &[
    "set",
    "reset",
    "prepare",
    "execute",
    "deallocate",
    "discard",
    "listen",
    "create",
];

/// Text that any refusal needs somewhere (case-insensitive): LISTEN, TEMP/TEMPORARY,
/// the advisory lock functions, WITH HOLD.
const REFUSAL_HINTS: &[&[u8]] = &[b"listen", b"temp", b"advisory", b"hold"];

/// The hot path for the common query: true when [`classify_tokens`] can only say
/// [`Kind::Other`], decided in one pass without tokenizing. It is conservative: a query
/// that starts with anything but a letter, whose first word is one that is carried or
/// refused, or whose text holds a refusal's word anywhere (comments and strings too)
/// takes the full path.
fn plainly_other(q: &str) -> bool {
    let b = q.trim_start().as_bytes();
    if !b.first().is_some_and(u8::is_ascii_alphabetic) {
        return false;
    }
    let end = b
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c >= 0x80))
        .unwrap_or(b.len());
    let first = &b[..end];
    if CARRIED_FIRST
        .iter()
        .any(|w| first.eq_ignore_ascii_case(w.as_bytes()))
    {
        return false;
    }
    !(0..b.len()).any(|i| {
        let c = b[i].to_ascii_lowercase();
        matches!(c, b'l' | b't' | b'a' | b'h') && {
            let rest = &b[i..];
            REFUSAL_HINTS.iter().any(|h| {
                h[0] == c && rest.len() >= h.len() && rest[..h.len()].eq_ignore_ascii_case(h)
            })
        }
    })
}

/// [`classify`] by tokens, the full rules.
fn classify_tokens(q: &str) -> Kind {
    let toks = tokens(q);
    // Refusals anywhere in the text.
    for (i, t) in toks.iter().enumerate() {
        let Tok::Word(w) = t else { continue };
        let first_of_statement = i == 0 || toks[i - 1] == Tok::Semi;
        if first_of_statement && w.eq_ignore_ascii_case("listen") {
            return Kind::Refused("LISTEN");
        }
        if first_of_statement && w.eq_ignore_ascii_case("create") {
            let mut j = i + 1;
            if is(toks.get(j), "global") || is(toks.get(j), "local") {
                j += 1;
            }
            if is(toks.get(j), "temp") || is(toks.get(j), "temporary") {
                return Kind::Refused("a temporary table");
            }
        }
        if ADVISORY.iter().any(|a| w.eq_ignore_ascii_case(a)) && toks.get(i + 1) == Some(&Tok::Open)
        {
            return Kind::Refused("a session-level advisory lock");
        }
        if w.eq_ignore_ascii_case("with")
            && is(toks.get(i + 1), "hold")
            && toks.iter().take(i).any(|t| is(Some(t), "declare"))
        {
            return Kind::Refused("a WITH HOLD cursor");
        }
    }
    let statements = toks
        .iter()
        .enumerate()
        .filter(|(i, t)| **t == Tok::Semi && *i + 1 < toks.len())
        .count();
    if statements > 0 {
        return Kind::Other;
    }
    let t = |i: usize| toks.get(i);
    if is(t(0), "set") {
        let mut i = 1;
        if is(t(1), "local") || is(t(1), "transaction") {
            return Kind::Other;
        }
        if is(t(1), "session") {
            if is(t(2), "characteristics") || is(t(2), "authorization") {
                return Kind::Other;
            }
            i = 2;
        }
        if is(t(i), "role") || is(t(i), "constraints") {
            return Kind::Other;
        }
        return match word(t(i)) {
            Some(mut name) => {
                // Qualified names (SET myext.knob = 1).
                let mut j = i + 1;
                while matches!(t(j), Some(Tok::Dot)) && matches!(t(j + 1), Some(Tok::Word(_))) {
                    if let Some(w) = word(t(j + 1)) {
                        name = format!("{name}.{w}");
                    }
                    j += 2;
                }
                Kind::Set { name }
            }
            None => Kind::Other,
        };
    }
    if is(t(0), "reset") {
        if is(t(1), "all") {
            return Kind::ResetAll;
        }
        return match word(t(1)) {
            Some(name) if name != "role" && name != "session" => Kind::Reset { name },
            _ => Kind::Other,
        };
    }
    if is(t(0), "prepare") && !is(t(1), "transaction") {
        return word(t(1)).map_or(Kind::Other, |name| Kind::Prepare { name });
    }
    if is(t(0), "execute") {
        return word(t(1)).map_or(Kind::Other, |name| Kind::Execute { name });
    }
    if is(t(0), "deallocate") {
        let i = if is(t(1), "prepare") { 2 } else { 1 };
        if is(t(i), "all") {
            return Kind::DeallocateAll;
        }
        return word(t(i)).map_or(Kind::Other, |name| Kind::Deallocate { name });
    }
    if is(t(0), "discard") {
        return Kind::Discard;
    }
    Kind::Other
}

/// Whether an extended-protocol statement text is refused (same rules as [`classify`]).
pub fn refusal(q: &str) -> Option<&'static str> {
    match classify(q) {
        Kind::Refused(r) => Some(r),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let cases: &[(&str, Kind)] = &[
            (
                "SET search_path TO app, public",
                Kind::Set {
                    name: "search_path".into(),
                },
            ),
            (
                "set SESSION statement_timeout = '5s';",
                Kind::Set {
                    name: "statement_timeout".into(),
                },
            ),
            ("SET LOCAL work_mem = '1MB'", Kind::Other),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", Kind::Other),
            (
                "SET myext.knob = 1",
                Kind::Set {
                    name: "myext.knob".into(),
                },
            ),
            (
                "set search_path = foo",
                Kind::Set {
                    name: "search_path".into(),
                },
            ),
            (
                "SET search_path TO a.b",
                Kind::Set {
                    name: "search_path".into(),
                },
            ),
            (
                "RESET search_path",
                Kind::Reset {
                    name: "search_path".into(),
                },
            ),
            ("RESET ALL", Kind::ResetAll),
            (
                "PREPARE q1 (int) AS SELECT $1",
                Kind::Prepare { name: "q1".into() },
            ),
            ("EXECUTE q1(3)", Kind::Execute { name: "q1".into() }),
            (
                "DEALLOCATE PREPARE q1",
                Kind::Deallocate { name: "q1".into() },
            ),
            ("DEALLOCATE ALL", Kind::DeallocateAll),
            ("DISCARD ALL", Kind::Discard),
            ("LISTEN chan", Kind::Refused("LISTEN")),
            (
                "CREATE TEMP TABLE t (a int)",
                Kind::Refused("a temporary table"),
            ),
            (
                "create local temporary table t (a int)",
                Kind::Refused("a temporary table"),
            ),
            (
                "SELECT pg_advisory_lock(1)",
                Kind::Refused("a session-level advisory lock"),
            ),
            ("SELECT pg_advisory_xact_lock(1)", Kind::Other),
            (
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                Kind::Refused("a WITH HOLD cursor"),
            ),
            ("SELECT 'LISTEN x', \"pg_advisory_lock\"(1)", Kind::Other),
            ("SELECT $$ LISTEN $$; SELECT 1", Kind::Other),
            ("/* LISTEN */ SELECT 1 -- LISTEN", Kind::Other),
            ("SELECT 1; LISTEN x", Kind::Refused("LISTEN")),
            ("SET a = 1; SELECT 1", Kind::Other),
            ("select 1", Kind::Other),
        ];
        for (q, want) in cases {
            assert_eq!(&classify(q), want, "{q}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(q in "\\PC{0,80}") {
            let _ = classify(&q);
        }
        #[test]
        fn never_panics_on_sql_shapes(q in "[$'\"/*; a-zA-Z0-9_()-]{0,60}") {
            let _ = classify(&q);
        }
        /// The fast path never hides what the full rules would see.
        #[test]
        fn the_fast_path_agrees_with_the_full_rules(
            q in "(set |reset |listen |create temp |select |with hold |/\\* |-- |  )?[a-zA-Z_; ()'.=0-9]{0,40}( ;listen x| pg_advisory_lock\\(1\\)| hold)?"
        ) {
            if plainly_other(&q) {
                prop_assert_eq!(classify_tokens(&q), Kind::Other, "{}", q);
            }
        }
    }
}
