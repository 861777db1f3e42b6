//! [`PostmasterPid`]: `postmaster.pid` parsed. PostgreSQL writes it at startup, one item a line:
//! the postmaster's pid, the data directory, the start time (Unix seconds), the port, the
//! first Unix socket directory, the first listen address, the shared memory key, and a status
//! word that it updates as it goes (`starting`, `stopping`, `ready`, `standby`).

use std::path::PathBuf;

use crate::error::PidFileProblem;

/// The postmaster's status line (the 8th) of `postmaster.pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PmStatus {
    /// `starting`: not accepting connections yet.
    Starting,
    /// `stopping`: shutting down.
    Stopping,
    /// `ready`: accepting connections (a primary, or a hot standby that reached a consistent
    /// state).
    Ready,
    /// `standby`: a standby with `hot_standby = off`, recovering and accepting no connections.
    Standby,
    /// A word this version of pgw-node does not know.
    Unknown(String),
}

impl PmStatus {
    fn parse(word: &str) -> PmStatus {
        match word {
            "starting" => PmStatus::Starting,
            "stopping" => PmStatus::Stopping,
            "ready" => PmStatus::Ready,
            "standby" => PmStatus::Standby,
            other => PmStatus::Unknown(other.to_owned()),
        }
    }
}

/// What `postmaster.pid` says about the server that wrote it.
///
/// The file outlives a crashed server, and its pid may since belong to another process: use
/// [`Node::running_pid`](crate::Node::running_pid), which checks that the process is this data
/// directory's postmaster, before signalling `pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostmasterPid {
    /// The postmaster's process id (never 0 or 1: the parser refuses those).
    pub pid: u32,
    /// The data directory it runs on.
    pub data_dir: PathBuf,
    /// When it started, in seconds since the Unix epoch.
    pub start_time: i64,
    /// Its TCP port.
    pub port: u16,
    /// The first of `unix_socket_directories`, if any.
    pub socket_dir: Option<PathBuf>,
    /// The first of `listen_addresses` (`*` for all), if any.
    pub listen_address: Option<String>,
    /// Its status, once it wrote one.
    pub status: Option<PmStatus>,
}

impl PostmasterPid {
    /// Parses the contents of `postmaster.pid`.
    pub fn parse(text: &str) -> Result<PostmasterPid, PidFileProblem> {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        if lines.len() < 4 {
            return Err(PidFileProblem::TooShort(lines.len()));
        }
        fn num<T: std::str::FromStr>(
            lines: &[&str],
            line: usize,
            field: &'static str,
        ) -> Result<T, PidFileProblem> {
            lines[line - 1]
                .parse()
                .map_err(|_| PidFileProblem::NotANumber {
                    line,
                    field,
                    value: lines[line - 1].to_owned(),
                })
        }
        let optional = |i: usize| {
            lines
                .get(i)
                .filter(|l| !l.is_empty())
                .map(|l| l.to_string())
        };
        let pid: u32 = num(&lines, 1, "pid")?;
        // kill(0) would signal our own process group, kill(1) init: never a postmaster.
        if pid <= 1 {
            return Err(PidFileProblem::ImpossiblePid(pid));
        }
        Ok(PostmasterPid {
            pid,
            data_dir: PathBuf::from(lines[1]),
            start_time: num(&lines, 3, "start time")?,
            port: num(&lines, 4, "port")?,
            socket_dir: optional(4).map(PathBuf::from),
            listen_address: optional(5),
            status: optional(7).map(|s| PmStatus::parse(&s)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_server() {
        let text = "14178\n/tmp/pgn/d\n1796227392\n45999\n/tmp/pgn\n127.0.0.1\n 10019057    163873\nready   \n";
        let pid = PostmasterPid::parse(text).unwrap();
        assert_eq!(
            pid,
            PostmasterPid {
                pid: 14178,
                data_dir: PathBuf::from("/tmp/pgn/d"),
                start_time: 1796227392,
                port: 45999,
                socket_dir: Some(PathBuf::from("/tmp/pgn")),
                listen_address: Some("127.0.0.1".into()),
                status: Some(PmStatus::Ready),
            }
        );
    }

    #[test]
    fn early_in_startup_and_without_sockets() {
        // Before the status line is written; no socket dir, listening everywhere.
        let pid = PostmasterPid::parse("7\n/d\n1\n5433\n\n*\n").unwrap();
        assert_eq!(pid.socket_dir, None);
        assert_eq!(pid.listen_address.as_deref(), Some("*"));
        assert_eq!(pid.status, None);
        let standby = PostmasterPid::parse("7\n/d\n1\n5433\n/s\n\n 1 2\nstandby \n").unwrap();
        assert_eq!(standby.listen_address, None);
        assert_eq!(standby.status, Some(PmStatus::Standby));
        let odd = PostmasterPid::parse("7\n/d\n1\n5433\n/s\n\n 1 2\nweird\n").unwrap();
        assert_eq!(odd.status, Some(PmStatus::Unknown("weird".into())));
    }

    #[test]
    fn broken_files() {
        assert_eq!(
            PostmasterPid::parse("123\n/d\n"),
            Err(PidFileProblem::TooShort(2))
        );
        assert_eq!(
            PostmasterPid::parse("abc\n/d\n1\n5432\n"),
            Err(PidFileProblem::NotANumber {
                line: 1,
                field: "pid",
                value: "abc".into()
            })
        );
        assert!(
            PostmasterPid::parse("7\n/d\n1\n99999\n").is_err(),
            "port out of range"
        );
    }

    #[test]
    fn pid_0_and_1_are_refused() {
        // kill(0, …) signals the caller's own process group, and pid 1 is init.
        for pid in [0u32, 1] {
            assert_eq!(
                PostmasterPid::parse(&format!("{pid}\n/d\n1\n5433\n")),
                Err(PidFileProblem::ImpossiblePid(pid))
            );
        }
        assert_eq!(PostmasterPid::parse("2\n/d\n1\n5433\n").unwrap().pid, 2);
        assert_eq!(
            PostmasterPid::parse("-1\n/d\n1\n5433\n"),
            Err(PidFileProblem::NotANumber {
                line: 1,
                field: "pid",
                value: "-1".into()
            })
        );
    }
}
