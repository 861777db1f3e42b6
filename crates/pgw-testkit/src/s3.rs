//! [`S3Server`]: an S3-compatible server for the S3 tests of `pgwarden backup`: moto's server
//! mode (PyPI `moto[server]` 5.x, which `./run test` installs into a virtualenv), on a free
//! loopback port, run as the current user in its own temp dir, objects in its memory.
//!
//! Readiness is `GET /` (ListBuckets) answering 200. moto accepts any credentials and checks
//! no signatures, so the fixture hands out fixed test ones ([`S3Server::env`] for a child
//! process); its own requests ([`S3Server::create_bucket`], [`S3Server::put_object`],
//! [`S3Server::get_object`], [`S3Server::list`]) are plain HTTP with an unsigned
//! `Authorization` header naming the test access key, so that moto treats them as the owner's
//! and not as anonymous ones (which moto refuses to read objects).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use pgw_cluster::watchdog::{Watchdog, Watched};
use pgw_cluster::{panic_log, ports};
use pgw_node::OsUser;

use crate::daemon::{temp_dir, Daemon, Spec};
use crate::TestkitError;

/// The variable naming another `moto_server` to run.
pub const MOTO_SERVER_ENV: &str = "PGWARDEN_MOTO_SERVER";

/// The moto `./run test` installs (into [`default_moto_server`]'s virtualenv).
pub const MOTO_REQUIREMENT: &str = "moto[server]==5.2.6";

/// The access key id the fixture hands out (moto accepts any).
pub const TEST_ACCESS_KEY_ID: &str = "pgwtestaccesskey";

/// The secret access key the fixture hands out (moto checks no signatures).
pub const TEST_SECRET_ACCESS_KEY: &str = "pgwtestsecretkey";

/// The region the fixture hands out.
pub const TEST_REGION: &str = "us-east-1";

/// How long moto may take to answer `GET /` (it imports a lot of Python at start).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How often it is started again on another port if its port was taken.
const PORT_ATTEMPTS: u32 = 3;

/// How long moto gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What moto says when its port was taken between our pick and its bind.
const PORT_TAKEN: [&str; 2] = ["Address already in use", "is in use by another program"];

/// `${XDG_CACHE_HOME:-$HOME/.cache}/pgwarden/moto-venv/bin/moto_server`, where `./run test`
/// installs moto.
pub fn default_moto_server() -> PathBuf {
    let home = || {
        std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|u| u.dir)
            })
            .unwrap_or_else(|| PathBuf::from("/"))
    };
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache"));
    cache.join("pgwarden/moto-venv/bin/moto_server")
}

/// `$PGWARDEN_MOTO_SERVER`, else [`default_moto_server`].
fn moto_server() -> PathBuf {
    std::env::var_os(MOTO_SERVER_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_moto_server)
}

/// A running moto server; stopped and removed on drop (its log printed if the test panicked),
/// and by a watchdog if the owning process dies.
#[derive(Debug)]
pub struct S3Server {
    daemon: Daemon,
    port: u16,
    watchdog: Option<Watchdog>,
    tmp: Option<tempfile::TempDir>,
    root: PathBuf,
}

impl S3Server {
    /// Starts moto (`$PGWARDEN_MOTO_SERVER`, else the virtualenv `./run test` makes) on a
    /// free loopback port and waits until it answers `GET /`.
    pub fn start() -> Result<S3Server, TestkitError> {
        S3Server::start_binary(&moto_server())
    }

    /// [`S3Server::start`] with the `moto_server` at `binary`.
    pub fn start_binary(binary: &Path) -> Result<S3Server, TestkitError> {
        if !binary.is_file() {
            return Err(TestkitError::Spawn {
                program: binary.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "moto_server is not installed there: run ./run test, which installs \
                         {MOTO_REQUIREMENT} into {}, or set ${MOTO_SERVER_ENV} to a moto_server",
                        default_moto_server()
                            .parent()
                            .and_then(Path::parent)
                            .unwrap_or(Path::new("the cache"))
                            .display()
                    ),
                ),
            });
        }
        let user = OsUser::current()?;
        let tmp = temp_dir("pgw-moto-", &user)?;
        let root = tmp.path().to_owned();
        let pidfile = root.join("moto.pid");
        let watchdog = Watchdog::spawn(
            &root,
            // moto runs in `root` (its Spec's cwd, below).
            &[Watched::new(&pidfile, &root, Signal::SIGTERM, STOP_GRACE)],
        )?;
        let spec = Spec {
            what: "moto_server".to_owned(),
            program: binary.to_owned(),
            args: Vec::new(),
            // moto reads MOTO_* and AWS_* settings from its environment (MOTO_PORT changes
            // the URLs it answers with), its web server WERKZEUG_* (WERKZEUG_SERVER_FD: a
            // socket to serve on); PYTHON* would change the interpreter.
            clear_env_prefixes: vec!["MOTO_", "AWS_", "PYTHON", "WERKZEUG_"],
            user: None,
            cwd: root.clone(),
            log: root.join("moto.log"),
            pidfile,
        };
        let mut server = S3Server {
            daemon: Daemon::new(spec),
            port: 0,
            watchdog: Some(watchdog),
            tmp: Some(tmp),
            root,
        };
        let mut last_log = String::new();
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = ports::reserve()?;
            server.daemon.spec.args = ["-H", "127.0.0.1", "-p", &server.port.to_string()]
                .into_iter()
                .map(OsString::from)
                .collect();
            let log_start = server.daemon.log_len();
            server.daemon.spawn()?;
            match server.wait_ready(log_start) {
                Ok(()) => {
                    tracing::debug!(endpoint = %server.endpoint(), "moto ready");
                    return Ok(server);
                }
                Err(TestkitError::Exited { log, .. })
                    if PORT_TAKEN.iter().any(|p| log.contains(p)) =>
                {
                    tracing::debug!(attempt, port = server.port, "moto port taken; retrying");
                    ports::release(server.port);
                    server.port = 0;
                    last_log = log;
                }
                Err(e) => return Err(e),
            }
        }
        Err(TestkitError::NoFreePort {
            what: "moto_server".to_owned(),
            attempts: PORT_ATTEMPTS,
            log: last_log,
        })
    }

    /// `http://127.0.0.1:<port>`: the S3 endpoint (path-style requests, plain HTTP).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The test access key id ([`TEST_ACCESS_KEY_ID`]).
    pub fn access_key_id(&self) -> &str {
        TEST_ACCESS_KEY_ID
    }

    /// The test secret access key ([`TEST_SECRET_ACCESS_KEY`]).
    pub fn secret_access_key(&self) -> &str {
        TEST_SECRET_ACCESS_KEY
    }

    /// The region ([`TEST_REGION`]).
    pub fn region(&self) -> &str {
        TEST_REGION
    }

    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_REGION` for a child process.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key_id()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key()),
            ("AWS_REGION", self.region()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The temp dir holding its log and pid file.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Its log so far (one line per request it answered), without the terminal colours
    /// moto's web server adds even when it writes to a file.
    pub fn log(&self) -> String {
        strip_ansi(&self.daemon.log())
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.daemon.is_running()
    }

    /// SIGKILLs it (an outage; its objects are gone with it).
    pub fn kill(&self) {
        self.daemon.kill();
    }

    /// Makes bucket `name` (moto has none at start); making one that exists is no error.
    pub fn create_bucket(&self, name: &str) -> Result<(), TestkitError> {
        let url = format!("{}/{}", self.endpoint(), encode_path(name));
        tracing::debug!(%url, "create bucket");
        let resp = self.authorized(agent().put(&url)).send_empty();
        expect_ok(&url, resp).map(drop)
    }

    /// Writes object `key` of `bucket`.
    pub fn put_object(&self, bucket: &str, key: &str, data: &[u8]) -> Result<(), TestkitError> {
        let url = self.object_url(bucket, key);
        tracing::debug!(%url, bytes = data.len(), "put object");
        let resp = self
            .authorized(agent().put(&url))
            // moto's web framework reads a form-typed body as form fields: say what it is.
            .header("Content-Type", "application/octet-stream")
            .send(data);
        expect_ok(&url, resp).map(drop)
    }

    /// Reads object `key` of `bucket`; `None` if there is none.
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, TestkitError> {
        let url = self.object_url(bucket, key);
        let resp = self.authorized(agent().get(&url)).call();
        if let Ok(r) = &resp {
            if r.status() == 404 {
                return Ok(None);
            }
        }
        let mut resp = expect_ok(&url, resp)?;
        resp.body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .map(Some)
            .map_err(|e| http_err(&url, e))
    }

    /// The keys of every object of `bucket` whose key starts with `prefix`, sorted.
    pub fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, TestkitError> {
        let url = format!("{}/{}", self.endpoint(), encode_path(bucket));
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = agent()
                .get(&url)
                .query("list-type", "2")
                .query("prefix", prefix);
            if let Some(t) = &token {
                req = req.query("continuation-token", t);
            }
            let text = expect_ok(&url, self.authorized(req).call())?
                .body_mut()
                .read_to_string()
                .map_err(|e| http_err(&url, e))?;
            if !text.contains("<ListBucketResult") {
                return Err(bad_response(&url, &text));
            }
            keys.extend(
                elements(&text, "Contents")
                    .iter()
                    .filter_map(|c| elements(c, "Key").first().map(|k| unescape(k))),
            );
            let truncated = elements(&text, "IsTruncated").first().copied() == Some("true");
            token = elements(&text, "NextContinuationToken")
                .first()
                .map(|t| unescape(t));
            if !truncated || token.is_none() {
                break;
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn object_url(&self, bucket: &str, key: &str) -> String {
        format!(
            "{}/{}/{}",
            self.endpoint(),
            encode_path(bucket),
            encode_path(key)
        )
    }

    /// Adds the unsigned `Authorization` header naming the test key (see the module docs).
    fn authorized<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        req.header(
            "Authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/20240101/{}/s3/aws4_request, \
                 SignedHeaders=host, Signature=0",
                self.access_key_id(),
                self.region()
            ),
        )
    }

    fn wait_ready(&self, log_start: u64) -> Result<(), TestkitError> {
        let url = format!("{}/", self.endpoint());
        let agent = agent();
        self.daemon.wait_ready(READY_TIMEOUT, log_start, || {
            agent.get(&url).call().is_ok_and(|r| r.status() == 200)
        })
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        panic_log::print_tail_if_panicking(
            &format!("the moto_server log (port {})", self.port),
            &self.log(),
        );
        self.daemon.stop(Signal::SIGTERM, STOP_GRACE);
        drop(self.watchdog.take());
        if self.port != 0 {
            ports::release(self.port);
        }
        if let Some(tmp) = self.tmp.take() {
            let _ = tmp.close();
        }
    }
}

/// An HTTP client with short timeouts that hands back 4xx/5xx answers (their XML says why).
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// The response if it is a 2xx; else the error with moto's answer.
fn expect_ok(
    url: &str,
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<ureq::http::Response<ureq::Body>, TestkitError> {
    let mut resp = resp.map_err(|e| http_err(url, e))?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Err(bad_response(
        url,
        &format!("HTTP {}: {}", resp.status().as_u16(), body.trim()),
    ))
}

fn http_err(url: &str, e: ureq::Error) -> TestkitError {
    TestkitError::Http {
        url: url.to_owned(),
        source: Box::new(e),
    }
}

fn bad_response(url: &str, text: &str) -> TestkitError {
    TestkitError::BadResponse {
        url: url.to_owned(),
        body: text.chars().take(300).collect(),
    }
}

/// `log` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.clone().next() == Some('[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Percent-encodes everything but S3's unreserved characters and `/`.
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The contents of every `<tag>…</tag>` in `xml`, in order (S3's answers have no attributes
/// on the elements read here, and no nesting of the same tag).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// XML's five predefined entities and numeric character references.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let Some(semi) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=semi]),
        }
        rest = &tail[semi + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_encoded_but_slashes() {
        assert_eq!(encode_path("wal/0000/a b+c.pgw"), "wal/0000/a%20b%2Bc.pgw");
        assert_eq!(encode_path("é"), "%C3%A9");
    }

    #[test]
    fn colours_are_stripped_from_the_log() {
        assert_eq!(
            strip_ansi("\u{1b}[31m\u{1b}[1mGET /b/k HTTP/1.1\u{1b}[0m\" 403 -\nplain\n"),
            "GET /b/k HTTP/1.1\" 403 -\nplain\n"
        );
    }

    #[test]
    fn list_answers_are_read() {
        let xml = "<?xml version=\"1.0\"?><ListBucketResult><IsTruncated>true</IsTruncated>\
                   <Contents><Key>a&amp;b</Key><Size>1</Size></Contents>\
                   <Contents><Key>c&#x2F;d&#47;e</Key></Contents>\
                   <NextContinuationToken>t1</NextContinuationToken></ListBucketResult>";
        let keys: Vec<String> = elements(xml, "Contents")
            .iter()
            .filter_map(|c| elements(c, "Key").first().map(|k| unescape(k)))
            .collect();
        assert_eq!(keys, ["a&b", "c/d/e"]);
        assert_eq!(elements(xml, "IsTruncated"), ["true"]);
        assert_eq!(elements(xml, "NextContinuationToken"), ["t1"]);
        assert_eq!(unescape("x &bogus; &amp"), "x &bogus; &amp");
    }
}
