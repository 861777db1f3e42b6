//! The repository: a local directory or an S3-compatible bucket, through `object_store`, and
//! its `pgwarden-repo.json` (which cluster it belongs to, whether it is encrypted).
//!
//! Layout under the repository's root:
//!
//! ```text
//! pgwarden-repo.json                  the cluster's system identifier, format, encryption check
//! wal/<timeline+log>/<segment>.pgw    archived WAL, one envelope each
//! wal/history/<tli>.history.pgw       timeline history files
//! backup/<id>/manifest.pgw            written last: a backup without it is not usable
//! backup/<id>/<pack>.pgw              the backup's data, envelopes one after another
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::envelope::{self, Key};
use crate::error::{BackupError, Result};

/// The repository's description object.
pub const META: &str = "pgwarden-repo.json";
/// The repository format this pgwarden writes and reads.
pub const FORMAT: u32 = 1;
/// The environment variable holding the encryption secret (when no key file is given).
pub const KEY_ENV: &str = "PGWARDEN_ENCRYPTION_KEY";
const KEY_CHECK: &[u8] = b"pgwarden repository key check";

/// Where a repository is and how to reach it: what `--repo` and the S3 flags say.
#[derive(Debug, Clone, Default)]
pub struct RepoOptions {
    /// `/dir`, `file:///dir` or `s3://bucket/prefix`.
    pub url: String,
    /// S3 endpoint (MinIO, Ceph, a test server); none means AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region (default us-east-1).
    pub s3_region: Option<String>,
    /// S3 credentials; when not given, the AWS_* variables.
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    /// The file holding the encryption secret.
    pub key_file: Option<PathBuf>,
    /// The repository file these options were read from (`--repo-config`), which
    /// `restore_command` names again so that its credentials reach the server's commands.
    pub config_file: Option<PathBuf>,
}

/// A repository file (`--repo-config`, TOML): the repository and its credentials in one
/// place only the server's user can read, for archive_command and restore_command, which
/// run without the caller's environment. Every key is optional; flags override it.
///
/// ```toml
/// repo = "s3://backups/pg1"                  # or "/backups/pg1"
/// s3_endpoint = "https://minio.internal:9000"
/// s3_region = "eu-west-1"
/// s3_access_key_id = "AKIA..."
/// s3_secret_access_key = "..."
/// encryption_key_file = "/etc/pgwarden/pg1.key"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoFile {
    pub repo: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub encryption_key_file: Option<PathBuf>,
}

impl RepoFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<RepoFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BackupError::io("read the repository file", path, e))?;
        toml::from_str(&text).map_err(|e| {
            BackupError::Input(format!(
                "repository file {}: {}",
                path.display(),
                e.message()
            ))
        })
    }
}

impl RepoOptions {
    /// The encryption secret: the key file's contents (a trailing newline dropped), else
    /// `$PGWARDEN_ENCRYPTION_KEY`, else none.
    pub fn secret(&self) -> Result<Option<Vec<u8>>> {
        if let Some(f) = &self.key_file {
            let mut bytes = std::fs::read(f).map_err(|e| {
                BackupError::Input(format!("read the encryption key file {}: {e}", f.display()))
            })?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            if bytes.is_empty() {
                return Err(BackupError::Input(format!(
                    "the encryption key file {} is empty",
                    f.display()
                )));
            }
            return Ok(Some(bytes));
        }
        match std::env::var_os(KEY_ENV) {
            Some(v) if !v.is_empty() => Ok(Some(v.into_encoded_bytes())),
            _ => Ok(None),
        }
    }

    /// The flags that name this repository again (for `restore_command`): the URL, the S3
    /// endpoint and region and the key file; credentials are left to the environment.
    pub fn flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        if let Some(c) = &self.config_file {
            f.extend(["--repo-config".to_string(), c.display().to_string()]);
        }
        f.extend(["--repo".to_string(), self.url.clone()]);
        if let Some(e) = &self.s3_endpoint {
            f.extend(["--s3-endpoint".to_string(), e.clone()]);
        }
        if let Some(r) = &self.s3_region {
            f.extend(["--s3-region".to_string(), r.clone()]);
        }
        if let Some(k) = &self.key_file {
            f.extend(["--encryption-key-file".to_string(), k.display().to_string()]);
        }
        f
    }
}

/// What `pgwarden-repo.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RepoMeta {
    /// The repository format ([`FORMAT`]).
    pub format: u32,
    /// A random id, mixed into the encryption keys.
    pub repo_id: String,
    /// The cluster's system identifier (pg_control_system()), as text.
    pub system_identifier: String,
    /// The server's major version.
    pub pg_version: u32,
    /// WAL segment size in bytes.
    pub wal_segment_size: u64,
    /// When the repository was made (RFC 3339).
    pub created: String,
    /// Whether every object is encrypted.
    pub encrypted: bool,
    /// An encrypted known text, to tell a wrong key at once (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_check: Option<String>,
}

/// An object's name (relative to the repository root), size and time.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// A repository reached (its description not read yet).
#[derive(Debug, Clone)]
pub struct Store {
    store: Arc<dyn ObjectStore>,
    root: Option<ObjPath>,
    url: String,
    /// The directory of a local repository (files are synced and given to its owner).
    local: Option<PathBuf>,
    pub options: RepoOptions,
}

/// A repository whose description was read and whose key was checked: what every command
/// but `init` works on.
#[derive(Debug, Clone)]
pub struct Repo {
    pub store: Store,
    pub meta: RepoMeta,
    pub key: Option<Key>,
}

enum Location {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

fn parse_location(url: &str) -> Result<Location> {
    let bad = |why: &str| BackupError::Input(format!("--repo {url:?}: {why}"));
    if url.is_empty() {
        return Err(bad("empty (give --repo or PGWARDEN_REPO)"));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket (s3://bucket/prefix)"));
        }
        return Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        });
    }
    let path = if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(bad("a file:// URL needs an absolute path (file:///dir)"));
        }
        PathBuf::from(rest)
    } else if url.contains("://") {
        return Err(bad("not a directory, file:// or s3:// URL"));
    } else {
        PathBuf::from(url)
    };
    let path = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map_err(|e| BackupError::io("read the current directory for", &path, e))?
            .join(path)
    };
    Ok(Location::Local(path))
}

impl Store {
    /// Reaches the repository `options.url`. A local directory must exist unless `create`,
    /// which makes it (mode 0700, owned by `owner` when given).
    pub fn connect(options: &RepoOptions, create: Option<&pgw_node::OsUser>) -> Result<Store> {
        match parse_location(&options.url)? {
            Location::Local(dir) => {
                if !dir.is_dir() {
                    match create {
                        None => {
                            return Err(BackupError::Input(format!(
                                "repository {}: no such directory (run pgwarden backup init first)",
                                dir.display()
                            )))
                        }
                        Some(owner) => {
                            std::fs::create_dir_all(&dir)
                                .map_err(|e| BackupError::io("create the repository", &dir, e))?;
                            owner.chown(&dir)?;
                        }
                    }
                }
                let fs = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|source| BackupError::Store {
                        url: dir.display().to_string(),
                        what: "open".into(),
                        detail: crate::error::store_detail(&source),
                    })?
                    .with_automatic_cleanup(true);
                Ok(Store {
                    store: Arc::new(fs),
                    root: None,
                    url: dir.display().to_string(),
                    local: Some(dir),
                    options: options.clone(),
                })
            }
            Location::S3 { bucket, prefix } => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(RetryConfig {
                        max_retries: 2,
                        retry_timeout: Duration::from_secs(15),
                        ..RetryConfig::default()
                    })
                    .with_client_options(
                        ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(60)),
                    );
                if let Some(e) = &options.s3_endpoint {
                    b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
                }
                let region = options
                    .s3_region
                    .clone()
                    .or_else(|| std::env::var("AWS_REGION").ok())
                    .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                    .unwrap_or_else(|| "us-east-1".to_string());
                b = b.with_region(region);
                if let Some(k) = &options.s3_access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(s) = &options.s3_secret_access_key {
                    b = b.with_secret_access_key(s);
                }
                if options.s3_endpoint.is_some() || std::env::var_os("AWS_ENDPOINT").is_some() {
                    // Path-style requests: what MinIO, Ceph and test servers expect.
                    b = b.with_virtual_hosted_style_request(false);
                }
                if options.s3_access_key_id.is_some() != options.s3_secret_access_key.is_some() {
                    return Err(BackupError::Input(format!(
                        "repository {}: give both --s3-access-key-id and --s3-secret-access-key, or neither",
                        options.url
                    )));
                }
                let have_key = options.s3_access_key_id.is_some()
                    || std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
                if !have_key && options.s3_endpoint.is_some() {
                    return Err(BackupError::Input(format!(
                        "repository {}: no S3 credentials (give --s3-access-key-id and \
                         --s3-secret-access-key, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
                        options.url
                    )));
                }
                let store = b.build().map_err(|source| BackupError::Store {
                    url: options.url.clone(),
                    what: "configure S3".into(),
                    detail: crate::error::store_detail(&source),
                })?;
                Ok(Store {
                    store: Arc::new(store),
                    root: (!prefix.is_empty()).then(|| ObjPath::from(prefix.as_str())),
                    url: options.url.clone(),
                    local: None,
                    options: options.clone(),
                })
            }
        }
    }

    /// The repository as the user named it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory of a local repository.
    pub fn local_dir(&self) -> Option<&Path> {
        self.local.as_deref()
    }

    fn path(&self, name: &str) -> ObjPath {
        match &self.root {
            None => ObjPath::from(name),
            Some(r) => ObjPath::from(format!("{r}/{name}")),
        }
    }

    fn relative(&self, p: &ObjPath) -> String {
        let s = p.as_ref();
        match &self.root {
            None => s.to_string(),
            Some(r) => s
                .strip_prefix(r.as_ref())
                .map(|t| t.trim_start_matches('/'))
                .unwrap_or(s)
                .to_string(),
        }
    }

    fn err(&self, what: String) -> impl FnOnce(object_store::Error) -> BackupError + '_ {
        move |source| BackupError::Store {
            url: self.url.clone(),
            what,
            detail: crate::error::store_detail(&source),
        }
    }

    /// Writes `name` (replacing it); in a local repository the file is synced to disk and
    /// given to the directory's owner before this returns.
    pub async fn put(&self, name: &str, data: Vec<u8>) -> Result<()> {
        self.store
            .put(&self.path(name), PutPayload::from(Bytes::from(data)))
            .await
            .map_err(self.err(format!("write {name}")))?;
        if let Some(dir) = &self.local {
            sync_and_own(dir, name)?;
        }
        Ok(())
    }

    /// Reads `name`; `None` when it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        match self.store.get(&self.path(name)).await {
            Ok(r) => Ok(Some(
                r.bytes().await.map_err(self.err(format!("read {name}")))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(format!("read {name}"))(e)),
        }
    }

    /// Reads the first `len` bytes of `name`; `None` when it does not exist.
    pub async fn get_head(&self, name: &str, len: u64) -> Result<Option<Bytes>> {
        let opts = GetOptions {
            range: Some(GetRange::Bounded(0..len)),
            ..GetOptions::default()
        };
        match self.store.get_opts(&self.path(name), opts).await {
            Ok(r) => Ok(Some(
                r.bytes().await.map_err(self.err(format!("read {name}")))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(format!("read {name}"))(e)),
        }
    }

    /// Reads `len` bytes of `name` from `offset`.
    pub async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Bytes> {
        self.store
            .get_range(&self.path(name), offset..offset + len)
            .await
            .map_err(self.err(format!("read {name}")))
    }

    /// Whether `name` exists (its size when it does).
    pub async fn head(&self, name: &str) -> Result<Option<u64>> {
        match self.store.head(&self.path(name)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(format!("look up {name}"))(e)),
        }
    }

    /// Every object under `prefix` (a directory name such as `wal`), names relative to the
    /// repository root.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let p = self.path(prefix);
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(self.err(format!("list {prefix}/")))?;
        let mut out: Vec<Listed> = metas
            .into_iter()
            .map(|m| Listed {
                name: self.relative(&m.location),
                size: m.size,
                modified: m.last_modified,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes `name` (gone already is fine).
    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(format!("remove {name}"))(e)),
        }
    }

    /// Reads the description. `None` when there is none (not initialised).
    pub async fn read_meta(&self) -> Result<Option<RepoMeta>> {
        let Some(bytes) = self.get(META).await? else {
            return Ok(None);
        };
        let meta: RepoMeta = serde_json::from_slice(&bytes).map_err(|e| {
            BackupError::Damaged(format!("repository {}: {META} is damaged ({e})", self.url))
        })?;
        if meta.format != FORMAT {
            return Err(BackupError::Refused(format!(
                "repository {}: format {} is not known to this pgwarden (it knows {FORMAT})",
                self.url, meta.format
            )));
        }
        Ok(Some(meta))
    }
}

/// Syncs the file `name` under `dir` and the directories it was made in, and gives what was
/// made to `dir`'s owner (so that the server's archiver, as postgres, can write beside what
/// root wrote).
fn sync_and_own(dir: &Path, name: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(name);
    let file = std::fs::File::open(&path).map_err(|e| BackupError::io("sync", &path, e))?;
    file.sync_all()
        .map_err(|e| BackupError::io("sync", &path, e))?;
    let owner = std::fs::metadata(dir).map_err(|e| BackupError::io("read", dir, e))?;
    let me = nix::unistd::Uid::effective();
    let mut p = path.as_path();
    loop {
        if me.is_root() {
            let _ = nix::unistd::chown(
                p,
                Some(nix::unistd::Uid::from_raw(owner.uid())),
                Some(nix::unistd::Gid::from_raw(owner.gid())),
            );
        }
        let Some(parent) = p.parent() else { break };
        if let Ok(d) = std::fs::File::open(parent) {
            let _ = d.sync_all();
        }
        if parent == dir {
            break;
        }
        p = parent;
    }
    Ok(())
}

impl Repo {
    /// Opens the repository `options` names: reads its description and checks the key.
    pub async fn open(options: &RepoOptions) -> Result<Repo> {
        let store = Store::connect(options, None)?;
        let meta = match store.read_meta().await? {
            Some(m) => m,
            None => {
                // A bucket that does not exist reads as a missing object: list it, so that
                // the store's own reason is what the user sees.
                if store.local.is_none() {
                    store.list("").await?;
                }
                return Err(BackupError::Input(format!(
                    "repository {}: not a pgwarden repository (run pgwarden backup init first)",
                    store.url()
                )));
            }
        };
        let key = check_key(&store, &meta, options.secret()?)?;
        Ok(Repo { store, meta, key })
    }

    /// Makes a new repository for the cluster `system_identifier` (or finds it made already
    /// for the same cluster, `Ok(false)`).
    pub async fn init(
        options: &RepoOptions,
        owner: &pgw_node::OsUser,
        system_identifier: &str,
        pg_version: u32,
        wal_segment_size: u64,
        encrypt: bool,
    ) -> Result<(Repo, bool)> {
        let secret = options.secret()?;
        // A new local repository: refuse a bad request before its directory is made.
        if matches!(parse_location(&options.url)?, Location::Local(ref d) if !d.is_dir()) {
            check_new(encrypt, secret.is_some())?;
        }
        let store = Store::connect(options, Some(owner))?;
        if let Some(meta) = store.read_meta().await? {
            if meta.system_identifier != system_identifier {
                return Err(refuse_other(&store, &meta, system_identifier));
            }
            let key = check_key(&store, &meta, secret)?;
            return Ok((Repo { store, meta, key }, false));
        }
        check_new(encrypt, secret.is_some())?;
        let mut id = [0u8; 8];
        aes_gcm::aead::rand_core::RngCore::fill_bytes(&mut aes_gcm::aead::OsRng, &mut id);
        let repo_id = envelope::hex(&id);
        let key = secret.map(|s| Key::derive(&s, &repo_id));
        let meta = RepoMeta {
            format: FORMAT,
            repo_id,
            system_identifier: system_identifier.to_string(),
            pg_version,
            wal_segment_size,
            created: chrono::Utc::now().to_rfc3339(),
            encrypted: key.is_some(),
            key_check: key
                .as_ref()
                .map(|k| envelope::hex(&envelope::seal(KEY_CHECK, 0, Some(k)))),
        };
        let text = serde_json::to_vec_pretty(&meta)
            .map_err(|e| BackupError::Failed(format!("write {META}: {e}")))?;
        store.put(META, text).await?;
        Ok((Repo { store, meta, key }, true))
    }

    /// Refuses a server of another cluster.
    pub fn check_cluster(&self, system_identifier: &str) -> Result<()> {
        if self.meta.system_identifier != system_identifier {
            return Err(refuse_other(&self.store, &self.meta, system_identifier));
        }
        Ok(())
    }
}

/// A new repository is encrypted exactly when a key is given with --encrypt.
fn check_new(encrypt: bool, have_secret: bool) -> Result<()> {
    match (encrypt, have_secret) {
        (true, false) => Err(BackupError::Input(format!(
            "--encrypt needs a key: --encryption-key-file FILE or ${KEY_ENV}"
        ))),
        (false, true) => Err(BackupError::Input(
            "an encryption key was given without --encrypt: add --encrypt to make an encrypted repository".into(),
        )),
        _ => Ok(()),
    }
}

fn refuse_other(store: &Store, meta: &RepoMeta, sysid: &str) -> BackupError {
    BackupError::Refused(format!(
        "repository {} belongs to another cluster (system identifier {}; this one is {sysid})",
        store.url(),
        meta.system_identifier
    ))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn check_key(store: &Store, meta: &RepoMeta, secret: Option<Vec<u8>>) -> Result<Option<Key>> {
    match (meta.encrypted, secret) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(BackupError::Input(format!(
            "repository {} is not encrypted: drop --encryption-key-file / ${KEY_ENV}",
            store.url()
        ))),
        (true, None) => Err(BackupError::Input(format!(
            "repository {} is encrypted: give its key with --encryption-key-file or ${KEY_ENV}",
            store.url()
        ))),
        (true, Some(secret)) => {
            let key = Key::derive(&secret, &meta.repo_id);
            let check = meta.key_check.as_deref().and_then(unhex).ok_or_else(|| {
                BackupError::Damaged(format!(
                    "repository {}: {META} has no key check",
                    store.url()
                ))
            })?;
            match envelope::open(&check, Some(&key)) {
                Ok((plain, _)) if plain == KEY_CHECK => Ok(Some(key)),
                _ => Err(BackupError::Input(format!(
                    "the encryption key is not repository {}'s key",
                    store.url()
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert!(
            matches!(parse_location("/b").unwrap(), Location::Local(p) if p == Path::new("/b"))
        );
        assert!(
            matches!(parse_location("file:///b/c").unwrap(), Location::Local(p) if p == Path::new("/b/c"))
        );
        match parse_location("s3://bk/a/b/").unwrap() {
            Location::S3 { bucket, prefix } => {
                assert_eq!((bucket.as_str(), prefix.as_str()), ("bk", "a/b"))
            }
            Location::Local(_) => panic!("s3 expected"),
        }
        for bad in ["", "s3://", "s3:///x", "http://x/y", "file://rel"] {
            assert!(parse_location(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(
            unhex(&envelope::hex(&[0, 1, 254, 255])).unwrap(),
            vec![0, 1, 254, 255]
        );
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
