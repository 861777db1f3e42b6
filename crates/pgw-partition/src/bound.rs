//! Parsing a partition bound as `pg_get_expr(relpartbound, oid)` prints it. Pure.
//!
//! PostgreSQL has no SQL function that returns a partition's bounds as typed values, so the
//! text is parsed: `FOR VALUES FROM ('a') TO ('b')`, `FOR VALUES IN ('x', NULL)`,
//! `FOR VALUES WITH (modulus 8, remainder 3)` and `DEFAULT`. Literals keep PostgreSQL's
//! output form (the caller fixes the session's TimeZone and DateStyle, and converts them).

/// One bound datum of a range partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    MinValue,
    MaxValue,
    /// The literal's text, unquoted (`2024-01-01 00:00:00+00`, `10`).
    Literal(String),
}

/// A partition's bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Default,
    /// Single-column range: FROM `lower` TO `upper`.
    Range {
        lower: Datum,
        upper: Datum,
    },
    /// List values; None is NULL.
    List(Vec<Option<String>>),
    Hash {
        modulus: u32,
        remainder: u32,
    },
}

/// Why a bound could not be read (a multi-column key, or text this parser does not know).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read partition bound '{0}' (only single-column keys are managed)")]
pub struct BoundError(pub String);

impl Bound {
    pub fn parse(text: &str) -> Result<Bound, BoundError> {
        let err = || BoundError(text.to_string());
        let t = text.trim();
        if t == "DEFAULT" {
            return Ok(Bound::Default);
        }
        let rest = t.strip_prefix("FOR VALUES ").ok_or_else(err)?;
        if let Some(r) = rest.strip_prefix("FROM ") {
            let (lower, r) = paren_list(r).ok_or_else(err)?;
            let r = r.trim_start().strip_prefix("TO ").ok_or_else(err)?;
            let (upper, r) = paren_list(r).ok_or_else(err)?;
            if !r.trim().is_empty() || lower.len() != 1 || upper.len() != 1 {
                return Err(err());
            }
            let datum = |item: &Item| match item {
                Item::Word(w) if w == "MINVALUE" => Some(Datum::MinValue),
                Item::Word(w) if w == "MAXVALUE" => Some(Datum::MaxValue),
                Item::Word(w) => Some(Datum::Literal(w.clone())),
                Item::Quoted(q) => Some(Datum::Literal(q.clone())),
            };
            return Ok(Bound::Range {
                lower: datum(&lower[0]).ok_or_else(err)?,
                upper: datum(&upper[0]).ok_or_else(err)?,
            });
        }
        if let Some(r) = rest.strip_prefix("IN ") {
            let (items, r) = paren_list(r).ok_or_else(err)?;
            if !r.trim().is_empty() {
                return Err(err());
            }
            return Ok(Bound::List(
                items
                    .into_iter()
                    .map(|i| match i {
                        Item::Word(w) if w == "NULL" => None,
                        Item::Word(w) | Item::Quoted(w) => Some(w),
                    })
                    .collect(),
            ));
        }
        if let Some(r) = rest.strip_prefix("WITH ") {
            let (items, r) = paren_list(r).ok_or_else(err)?;
            if !r.trim().is_empty() || items.len() != 2 {
                return Err(err());
            }
            let number = |item: &Item, key: &str| match item {
                Item::Word(w) => w.strip_prefix(key)?.trim().parse::<u32>().ok(),
                Item::Quoted(_) => None,
            };
            return Ok(Bound::Hash {
                modulus: number(&items[0], "modulus ").ok_or_else(err)?,
                remainder: number(&items[1], "remainder ").ok_or_else(err)?,
            });
        }
        Err(err())
    }
}

#[derive(Debug)]
enum Item {
    Word(String),
    Quoted(String),
}

/// Reads `(item, item, ...)` at the start of `s`; returns the items and the rest.
/// Items are SQL literals (`'it''s'`, possibly with a `::type` cast) or bare words.
fn paren_list(s: &str) -> Option<(Vec<Item>, &str)> {
    let s = s.trim_start().strip_prefix('(')?;
    let mut items = Vec::new();
    let mut chars = s.char_indices().peekable();
    let mut word = String::new();
    let mut quoted: Option<String> = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => {
                let mut lit = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\'')) if chars.peek().map(|(_, c)| *c) == Some('\'') => {
                            chars.next();
                            lit.push('\'');
                        }
                        Some((_, '\'')) => break,
                        Some((_, c)) => lit.push(c),
                        None => return None,
                    }
                }
                quoted = Some(lit);
            }
            ',' | ')' => {
                let item = match quoted.take() {
                    Some(q) => Item::Quoted(q),
                    None => Item::Word(word.trim().to_string()),
                };
                word.clear();
                items.push(item);
                if c == ')' {
                    return Some((items, &s[i + 1..]));
                }
            }
            // A cast after a literal ('x'::text) is dropped.
            _ if quoted.is_some() => {}
            _ => word.push(c),
        }
    }
    None
}
