//! Rendering actions as SQL, exactly as it runs (and as `--dry-run` prints it). Pure.
//!
//! DDL takes no bind parameters, so partition bounds, names and options are written into
//! the statements: identifiers always quoted (`sql::ident`), values through `sql::literal`, grant
//! privileges checked against PostgreSQL's list. Time bounds are written as
//! `timezone('<set zone>', '<wall time>'::timestamp)` for timestamptz keys, so the bound is
//! the set's zone's wall time whatever the session's TimeZone is.

use pgw_common::sql::{self, qualified};

use crate::interval::Value;
use crate::model::{KeyKind, RetentionMode, SetConfig, Template};
use crate::plan::Action;

/// What the SQL of an action needs beyond the action itself.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub cfg: &'a SetConfig,
    pub kind: KeyKind,
    /// The parent's owner (new partitions get it unless the template names another).
    pub owner: &'a str,
    /// The parent's grants as `(privilege, grantee)`; grantee `PUBLIC` for everyone.
    pub grants: &'a [(String, String)],
    /// The parent's columns that take values (not generated), for moving rows.
    pub columns: &'a [String],
}

/// The statements of one action, and whether they run in one transaction
/// (DETACH CONCURRENTLY and FINALIZE cannot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sql {
    pub statements: Vec<String>,
    pub transactional: bool,
}

/// Why a template cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("grant '{0}' is not 'PRIVILEGES TO ROLE' (privileges: SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER, ALL)")]
    Grant(String),
    #[error("storage parameter '{0}' is not NAME=VALUE")]
    Reloption(String),
}

const PRIVILEGES: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
    "ALL",
    "ALL PRIVILEGES",
];

/// Checks a template's grants and storage parameters.
pub fn check_template(t: &Template) -> Result<(), TemplateError> {
    for g in &t.grants {
        parse_grant(g)?;
    }
    for r in &t.reloptions {
        parse_reloption(r)?;
    }
    Ok(())
}

/// `SELECT, INSERT TO reporting` -> (`SELECT, INSERT`, `reporting` quoted or PUBLIC).
fn parse_grant(g: &str) -> Result<(String, String), TemplateError> {
    let err = || TemplateError::Grant(g.to_string());
    let upper = g.to_ascii_uppercase();
    let at = upper.find(" TO ").ok_or_else(err)?;
    let privileges: Vec<String> = upper[..at]
        .split(',')
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    if privileges.is_empty() || !privileges.iter().all(|p| PRIVILEGES.contains(&p.as_str())) {
        return Err(err());
    }
    let role = g[at + 4..].trim();
    if role.is_empty() {
        return Err(err());
    }
    Ok((privileges.join(", "), grantee(role)))
}

/// A grantee as SQL: PUBLIC, or the quoted role name.
pub(crate) fn grantee(role: &str) -> String {
    if role.eq_ignore_ascii_case("public") {
        "PUBLIC".to_string()
    } else {
        sql::ident(role)
    }
}

/// `autovacuum_vacuum_scale_factor=0.01` -> `autovacuum_vacuum_scale_factor = '0.01'`.
fn parse_reloption(r: &str) -> Result<String, TemplateError> {
    let err = || TemplateError::Reloption(r.to_string());
    let (name, value) = r.split_once('=').ok_or_else(err)?;
    let name = name.trim();
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if !plain {
        return Err(err());
    }
    Ok(format!("{name} = {}", sql::literal(value.trim())))
}

impl Target<'_> {
    fn parent(&self) -> String {
        qualified(&self.cfg.schema, &self.cfg.table)
    }

    fn child(&self, name: &str) -> String {
        qualified(&self.cfg.schema, name)
    }

    /// A bound value as SQL of the key's type.
    fn literal(&self, v: Value) -> String {
        match (self.kind, v) {
            (KeyKind::Timestamptz, Value::Time(_)) => format!(
                "timezone({}, {}::timestamp)",
                sql::literal(&self.cfg.time_zone),
                sql::literal(&v.to_string())
            ),
            (KeyKind::Timestamp, _) => format!("{}::timestamp", sql::literal(&v.to_string())),
            (KeyKind::Date, _) => format!("{}::date", sql::literal(&v.to_string())),
            _ => sql::literal(&v.to_string()),
        }
    }

    fn range(&self, lower: Value, upper: Value) -> String {
        format!(
            "FOR VALUES FROM ({}) TO ({})",
            self.literal(lower),
            self.literal(upper)
        )
    }

    /// `WITH (...)` and `TABLESPACE ...` for a new table.
    fn storage(&self) -> Result<String, TemplateError> {
        let t = &self.cfg.template;
        let mut out = String::new();
        if !t.reloptions.is_empty() {
            let opts = t
                .reloptions
                .iter()
                .map(|r| parse_reloption(r))
                .collect::<Result<Vec<_>, _>>()?;
            out.push_str(&format!(" WITH ({})", opts.join(", ")));
        }
        if let Some(ts) = &t.tablespace {
            out.push_str(&format!(" TABLESPACE {}", sql::ident(ts)));
        }
        Ok(out)
    }

    /// Owner and grants of a new partition: the parent's, then the template's.
    fn privileges(&self, name: &str) -> Result<Vec<String>, TemplateError> {
        let child = self.child(name);
        let owner = self.cfg.template.owner.as_deref().unwrap_or(self.owner);
        let mut out = vec![format!(
            "ALTER TABLE {child} OWNER TO {}",
            sql::ident(owner)
        )];
        for (privilege, to) in self.grants {
            if PRIVILEGES.contains(&privilege.as_str()) {
                out.push(format!("GRANT {privilege} ON {child} TO {}", grantee(to)));
            }
        }
        for g in &self.cfg.template.grants {
            let (privileges, to) = parse_grant(g)?;
            out.push(format!("GRANT {privileges} ON {child} TO {to}"));
        }
        Ok(out)
    }

    /// The SQL of `action`.
    pub fn sql(&self, action: &Action) -> Result<Sql, TemplateError> {
        let parent = self.parent();
        let tx = |statements| Sql {
            statements,
            transactional: true,
        };
        Ok(match action {
            Action::Create { name, lower, upper } => {
                let mut s = vec![format!(
                    "CREATE TABLE {} PARTITION OF {parent} {}{}",
                    self.child(name),
                    self.range(*lower, *upper),
                    self.storage()?
                )];
                s.extend(self.privileges(name)?);
                tx(s)
            }
            Action::Rescue {
                name, lower, upper, ..
            } => {
                let child = self.child(name);
                let default = self.child(&self.cfg.default_name());
                let cols = self
                    .columns
                    .iter()
                    .map(|c| sql::ident(c))
                    .collect::<Vec<_>>()
                    .join(", ");
                let key = sql::ident(&self.cfg.column);
                let mut s = vec![
                    format!(
                        "CREATE TABLE {child} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
                         INCLUDING STORAGE INCLUDING GENERATED){}",
                        self.storage()?
                    ),
                    format!(
                        "WITH moved AS (DELETE FROM {default} WHERE {key} >= {} AND {key} < {} \
                         RETURNING {cols}) INSERT INTO {child} ({cols}) SELECT {cols} FROM moved",
                        self.literal(*lower),
                        self.literal(*upper)
                    ),
                    format!(
                        "ALTER TABLE {parent} ATTACH PARTITION {child} {}",
                        self.range(*lower, *upper)
                    ),
                ];
                s.extend(self.privileges(name)?);
                tx(s)
            }
            Action::CreateDefault { name } => {
                let mut s = vec![format!(
                    "CREATE TABLE {} PARTITION OF {parent} DEFAULT{}",
                    self.child(name),
                    self.storage()?
                )];
                s.extend(self.privileges(name)?);
                tx(s)
            }
            Action::CreateList { name, values } => {
                let list = values
                    .iter()
                    .map(|v| sql::literal(v))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut s = vec![format!(
                    "CREATE TABLE {} PARTITION OF {parent} FOR VALUES IN ({list}){}",
                    self.child(name),
                    self.storage()?
                )];
                s.extend(self.privileges(name)?);
                tx(s)
            }
            Action::CreateHash {
                name,
                modulus,
                remainder,
            } => {
                let mut s = vec![format!(
                    "CREATE TABLE {} PARTITION OF {parent} FOR VALUES WITH (MODULUS {modulus}, REMAINDER {remainder}){}",
                    self.child(name),
                    self.storage()?
                )];
                s.extend(self.privileges(name)?);
                tx(s)
            }
            Action::Retire {
                schema,
                name,
                mode: RetentionMode::Drop,
                ..
            } => tx(vec![format!("DROP TABLE {}", qualified(schema, name))]),
            Action::Retire {
                schema,
                name,
                concurrently,
                ..
            } => {
                let stmt = format!(
                    "ALTER TABLE {parent} DETACH PARTITION {}{}",
                    qualified(schema, name),
                    if *concurrently { " CONCURRENTLY" } else { "" }
                );
                Sql {
                    statements: vec![stmt],
                    transactional: !concurrently,
                }
            }
            Action::FinishDetach { schema, name } => Sql {
                statements: vec![format!(
                    "ALTER TABLE {parent} DETACH PARTITION {} FINALIZE",
                    qualified(schema, name)
                )],
                transactional: false,
            },
        })
    }
}

/// A partitioned parent `new` made `LIKE` the plain table `like` with `like_options`
/// (`INCLUDING ALL`, or with some parts excluded), partitioned by the set's strategy and
/// column, with the plain table's owner and grants (LIKE copies neither).
pub fn partitioned_like(
    cfg: &SetConfig,
    new: &str,
    like: &str,
    like_options: &str,
    owner: &str,
    grants: &[(String, String)],
) -> Vec<String> {
    let by = match cfg.strategy {
        crate::model::Strategy::Range => "RANGE",
        crate::model::Strategy::List => "LIST",
        crate::model::Strategy::Hash => "HASH",
    };
    let mut sql = vec![
        format!(
            "CREATE TABLE {new} (LIKE {like} {like_options}) PARTITION BY {by} ({})",
            sql::ident(&cfg.column)
        ),
        format!("ALTER TABLE {new} OWNER TO {}", sql::ident(owner)),
    ];
    for (privilege, to) in grants {
        sql.push(format!("GRANT {privilege} ON {new} TO {}", grantee(to)));
    }
    sql
}

/// Serial columns' sequences handed over to the same columns of `table` (identity columns
/// have their own sequences).
pub fn hand_over_sequences(table: &str, owned: &[(String, String)]) -> Vec<String> {
    owned
        .iter()
        .map(|(seq, column)| {
            format!(
                "ALTER SEQUENCE {seq} OWNED BY {table}.{}",
                sql::ident(column)
            )
        })
        .collect()
}
