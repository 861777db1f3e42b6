//! What doctor reports: findings, skipped checks, and their severities.

use serde::Serialize;

/// How bad a finding is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// Grades a measurement against its limits: Critical at or past `critical`, Warning at
    /// or past `warning`, None below both. Every check with a warning and a critical
    /// threshold grades through here.
    pub fn grade(value: f64, warning: f64, critical: f64) -> Option<Severity> {
        if value >= critical {
            Some(Severity::Critical)
        } else if value >= warning {
            Some(Severity::Warning)
        } else {
            None
        }
    }

    /// The Nagios word: OK is the absence of findings above info.
    pub fn nagios(self) -> &'static str {
        match self {
            Severity::Info => "OK",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Severity;

    #[test]
    fn grade_against_limits() {
        assert_eq!(Severity::grade(0.1, 0.2, 0.5), None);
        assert_eq!(Severity::grade(0.2, 0.2, 0.5), Some(Severity::Warning));
        assert_eq!(Severity::grade(0.5, 0.2, 0.5), Some(Severity::Critical));
        assert_eq!(
            Severity::grade(f64::INFINITY, 0.2, 0.5),
            Some(Severity::Critical)
        );
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

/// One problem found. This is the JSON of each element of `findings`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The check's id, e.g. `invalid_index`.
    pub check: String,
    pub severity: Severity,
    /// The database the object is in; None for cluster-wide findings.
    pub database: Option<String>,
    /// The object concerned, qualified and quoted as SQL names it (`public."Orders"`), or
    /// a session (`pid 1234`), or a setting name.
    pub object: Option<String>,
    /// One line: what is wrong, with the figures.
    pub detail: String,
    /// What fixes it, one step per element, in order: each is either one SQL statement
    /// (identifiers quoted, ending in `;`, runnable on its own: no step holds two
    /// statements, so each can be sent as one query), or an action for a person, starting
    /// with `action:`. A JSON list.
    pub remediation: Vec<String>,
    /// The measured value and its limits, for Nagios perfdata (`label=value;warn;crit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perfdata: Option<String>,
}

impl Finding {
    /// The remediation's SQL statements, without the actions.
    pub fn statements(&self) -> impl Iterator<Item = &str> {
        self.remediation
            .iter()
            .map(String::as_str)
            .filter(|s| !s.starts_with("action:"))
    }
}

/// A check that did not run, or an object a check could not judge, and why (missing
/// privilege, missing extension, ...). A check that ran but could not see some objects lists
/// each of them here, so a clean report never means "healthy by omission".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub check: String,
    pub database: Option<String>,
    /// The object not checked (quoted as SQL names it); None when the whole check did not run.
    pub object: Option<String>,
    pub reason: String,
}

/// Everything one doctor run found. This is the JSON of `pgwarden doctor --format json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub skipped: Vec<Skipped>,
    /// The checks that ran, in order.
    pub checks_run: Vec<String>,
}

impl Report {
    /// The worst severity among the findings; None when there are none.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}
