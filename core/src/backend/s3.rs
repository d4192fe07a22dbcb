//! An S3-compatible object store as a [`Backend`] (aws-sdk-s3).
//!
//! Objects live under `prefix/` in one bucket, with the same paths as on disk. The contract
//! of [`Backend`] maps onto S3 as follows:
//!
//! - `create`: a `HeadObject` (some stores, Garage among them, accept `If-None-Match` but do
//!   not enforce it), then one `PutObject` with `If-None-Match: *` (dropped for stores that
//!   refuse the header), or a multipart upload completed with the same condition above
//!   [`MULTIPART_ABOVE`]. Between the two a racing writer could slip in; for dbvault that is
//!   harmless: every object but locks is named by the hash of its content, and lock names
//!   are random. S3 shows an object only once its PUT or
//!   multipart completion succeeded, so a reader never sees a partial object.
//! - `spool`: with a spool directory, a local temp file uploaded when finished, its CRC32
//!   sent for the store to check (see `spool.rs`); without one, none (packs in memory).
//! - `read_range`: a ranged `GetObject`, checked to return exactly the bytes asked for.
//! - `list`: `ListObjectsV2`, every page.
//! - `remove`: `DeleteObject` (deleting a missing key succeeds on S3).
//! - `remove_incomplete`: aborts the multipart uploads under the prefix.
//!
//! Throttling, 5xx answers, timeouts and dropped connections are retried by the SDK's
//! standard retry strategy (exponential backoff with jitter, [`MAX_ATTEMPTS`] attempts), then
//! reported as one [`Error::Storage`] naming the object and the cause.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::pieces::PieceFilter;
use super::{Backend, ObjectInfo, Spool};
use spool::Source;

mod spool;
mod upload;
use crate::error::StorageKind;
use crate::{Error, Result};

/// Objects larger than this are uploaded in parts.
pub const MULTIPART_ABOVE: usize = 32 << 20;
pub(crate) const PART_SIZE: usize = 16 << 20;
/// Pack uploads a backup keeps in flight: enough to hide a round trip per pack, few enough
/// that memory stays bounded (each holds one pack).
const UPLOADS: usize = 4;
/// Attempts per request before giving up.
pub const MAX_ATTEMPTS: u32 = 6;

/// Where and how to reach the store.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Endpoint URL (else `AWS_ENDPOINT_URL` or AWS itself).
    pub endpoint: Option<String>,
    /// Region (else `AWS_REGION` / the profile; `us-east-1` when none is set).
    pub region: Option<String>,
    /// Path-style addressing (most S3-compatible stores need it).
    pub path_style: bool,
    /// Access key id and secret (else the standard AWS chain: environment, profile, …).
    pub credentials: Option<(String, String)>,
    /// How long one attempt of a request may take before it is retried (default 120 s:
    /// a 16 MiB pack over a slow link).
    pub attempt_timeout: Option<Duration>,
    /// A local directory where a backup writes each pack as it is built, then uploads it
    /// from there ([`Backend::spool`]): no pack in memory. `None`: packs are built and
    /// sent from memory (17 MiB each, three at once).
    pub spool_dir: Option<PathBuf>,
}

/// An S3 bucket and prefix. A clone shares the connection, the runtime and the counts
/// (a spool holds one to upload its pack when finished).
#[derive(Clone)]
pub struct S3Backend {
    rt: Arc<tokio::runtime::Runtime>,
    client: Client,
    bucket: String,
    prefix: String,
    requests: Arc<AtomicU64>,
    trace: bool,
    conditional: Arc<AtomicBool>,
    spool_dir: Option<PathBuf>,
}

fn io(path: &str, msg: impl Into<String>) -> Error {
    Error::storage(path, StorageKind::Other, msg)
}

/// An SDK error as a storage error of the right kind (retries are over by now).
fn sdk<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug + HttpStatus>(
    path: &str,
    e: &SdkError<E, R>,
) -> Error {
    Error::storage(path, kind_of(e), describe(e))
}

/// What kind of failure an SDK error is.
fn kind_of<E: ProvideErrorMetadata, R: HttpStatus>(e: &SdkError<E, R>) -> StorageKind {
    match e {
        SdkError::ServiceError(s) => match s.err().code() {
            Some("NoSuchBucket") => StorageKind::NotFound,
            Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied") => {
                StorageKind::Permission
            }
            Some("SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable") => {
                StorageKind::Transient
            }
            _ if status(e).is_some_and(|c| c >= 500 || c == 429) => StorageKind::Transient,
            _ => StorageKind::Other,
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StorageKind::Transient
        }
        _ => StorageKind::Other,
    }
}

/// One line for an SDK error: the service's code and message, or what failed on the way.
fn describe<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            match (err.code(), err.message()) {
                (Some("NoSuchBucket"), _) => "the bucket does not exist".into(),
                (Some("InvalidAccessKeyId"), _) => {
                    "the access key is not known to the store (check the credentials)".into()
                }
                (Some("SignatureDoesNotMatch"), _) => {
                    "the secret key is wrong (check the credentials)".into()
                }
                // Garage says AccessDenied where AWS says SignatureDoesNotMatch.
                (Some("AccessDenied"), Some(m)) if m.to_ascii_lowercase().contains("signature") => {
                    format!("the secret key is wrong (check the credentials): {m}")
                }
                (Some("AccessDenied"), Some(m))
                    if m.to_ascii_lowercase().contains("no such key") =>
                {
                    format!("the access key is not known to the store (check the credentials): {m}")
                }
                (Some("AccessDenied"), m) => {
                    format!(
                        "access denied{}",
                        m.map(|m| format!(": {m}")).unwrap_or_default()
                    )
                }
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => format!("{err:?}"),
            }
        }
        SdkError::TimeoutError(_) => "the store did not answer in time (after retries)".into(),
        SdkError::DispatchFailure(d) => {
            if d.is_io() || d.is_timeout() {
                "cannot reach the S3 endpoint (after retries)".into()
            } else {
                format!("cannot send the request: {d:?}")
            }
        }
        SdkError::ResponseError(_) => "the store's answer could not be read".into(),
        SdkError::ConstructionFailure(_) => "the request could not be built".into(),
        _ => format!("{e:?}"),
    }
}

fn status<E, R: HttpStatus>(e: &SdkError<E, R>) -> Option<u16> {
    e.raw_response().map(HttpStatus::code)
}

/// The HTTP status of a raw response.
trait HttpStatus {
    fn code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn code(&self) -> u16 {
        self.status().as_u16()
    }
}

impl S3Backend {
    /// Connects to `s3://bucket/prefix` (credentials from the standard AWS chain).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a malformed URL or a missing runtime.
    pub fn new(url: &str, opts: &S3Options) -> Result<S3Backend> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| Error::Invalid(format!("not an s3:// URL: {url}")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Invalid(format!("{url}: no bucket")));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Invalid(format!("cannot start the S3 runtime: {e}")))?;
        let shared = rt.block_on(aws_config::defaults(BehaviorVersion::latest()).load());
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(opts.path_style)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(
                        opts.attempt_timeout.unwrap_or(Duration::from_secs(120)),
                    )
                    .build(),
            );
        if let Some(e) = &opts.endpoint {
            b = b.endpoint_url(e);
        }
        if let Some((id, secret)) = &opts.credentials {
            b = b.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id, secret, None, None, "dbvault",
            ));
        }
        match &opts.region {
            Some(r) => b = b.region(Region::new(r.clone())),
            None if shared.region().is_none() => b = b.region(Region::new("us-east-1")),
            None => {}
        }
        Ok(S3Backend {
            rt: Arc::new(rt),
            client: Client::from_conf(b.build()),
            bucket: bucket.to_string(),
            prefix,
            requests: Arc::new(AtomicU64::new(0)),
            trace: std::env::var_os("DBVAULT_TRACE_S3").is_some(),
            conditional: Arc::new(AtomicBool::new(true)),
            spool_dir: opts.spool_dir.clone(),
        })
    }

    /// `s3://bucket/prefix/path`, for messages.
    fn url_of(&self, path: &str) -> String {
        format!("s3://{}/{}{path}", self.bucket, self.prefix)
    }

    fn key(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// Counts a request; with `DBVAULT_TRACE_S3` set, also names it on stderr.
    fn count(&self, op: &str, path: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.trace {
            eprintln!("s3 request: {op} {path}");
        }
    }

    fn get(&self, path: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>> {
        self.get_pieces(path, range, None)
    }

    /// A GET of `range` (whole object: `None`) that keeps only `pieces` of it when given.
    fn get_pieces(
        &self,
        path: &str,
        range: Option<(u64, u64)>,
        pieces: Option<&[(u64, u64)]>,
    ) -> Result<Vec<u8>> {
        match range {
            Some((off, len)) => self.count("get_object", &format!("{path} {off}+{len}")),
            None => self.count("get_object", path),
        }
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(path));
        if let Some((off, len)) = range {
            if len == 0 {
                return Ok(Vec::new());
            }
            req = req.range(format!("bytes={off}-{}", off + len - 1));
        }
        let (out, seen) = self.rt.block_on(async {
            let r = req.send().await;
            match r {
                Ok(o) => {
                    // The body copied into one buffer of the announced size as it arrives:
                    // collecting its parts first and joining them held each read two or
                    // three times over (a 16 MiB range read, 48 MiB for a moment). With
                    // `pieces`, only they are kept (see `super::pieces`).
                    let mut filter = pieces.map(|p| PieceFilter::new(range.map_or(0, |r| r.0), p));
                    let size = match &filter {
                        Some(f) => Some(f.wanted()),
                        None => o.content_length().and_then(|n| usize::try_from(n).ok()),
                    };
                    let mut out = Vec::with_capacity(size.unwrap_or(0).min(MULTIPART_ABOVE));
                    let mut body = o.body;
                    loop {
                        match body.try_next().await {
                            Ok(Some(piece)) => match &mut filter {
                                Some(f) => f.take(&piece, &mut out),
                                None => out.extend_from_slice(&piece),
                            },
                            Ok(None) => break Ok((out, filter.map(|f| f.seen()))),
                            Err(e) => {
                                break Err(Error::storage(
                                    self.url_of(path),
                                    StorageKind::Transient,
                                    format!("reading the object failed: {e}"),
                                ))
                            }
                        }
                    }
                }
                // A missing bucket is a 404 too, but not a missing object.
                Err(e) if status(&e) == Some(404) && e.code() != Some("NoSuchBucket") => {
                    Err(Error::NotFound {
                        path: path.to_string(),
                    })
                }
                Err(e) if status(&e) == Some(416) => {
                    Err(Error::corrupt(path, "a read runs past its end".to_string()))
                }
                Err(e) => Err(sdk(&self.url_of(path), &e)),
            }
        })?;
        if let Some((_, len)) = range {
            let got = seen.unwrap_or(out.len() as u64);
            if got != len {
                return Err(Error::corrupt(
                    path,
                    format!("a read of {len} bytes returned {got}"),
                ));
            }
        }
        Ok(out)
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// Requests sent so far (an operation the SDK retried counts once).
    fn requests(&self) -> Option<u64> {
        Some(self.requests.load(Ordering::Relaxed))
    }

    fn uploads(&self) -> usize {
        UPLOADS
    }

    fn create(&self, path: &str, data: &[u8]) -> Result<()> {
        self.put(path, &Source::Mem(Bytes::copy_from_slice(data)), true)
    }

    /// No look before the write: an object already there holds these very bytes.
    fn create_unique(&self, path: &str, data: &[u8]) -> Result<()> {
        self.create_unique_owned(path, data.to_vec()).0
    }

    fn create_unique_owned(&self, path: &str, data: Vec<u8>) -> (Result<()>, Vec<u8>) {
        let data = Source::Mem(Bytes::from(data));
        let r = match self.put(path, &data, false) {
            Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        };
        let Source::Mem(data) = data else {
            return (r, Vec::new());
        };
        // The requests are gone: the buffer is ours again, unless the SDK still holds a
        // piece of it. Then a new one is made later rather than a copy now, which for a
        // moment held the pack twice.
        let buf = data.try_into_mut().map(Vec::from).unwrap_or_default();
        (r, buf)
    }

    /// A spool file when the spool directory takes one; else `None`, and the pack is built
    /// in memory as without a spool directory: a read-only home (a locked-down service)
    /// costs memory, not the backup.
    fn spool(&self) -> Result<Option<Box<dyn Spool>>> {
        Ok(self
            .spool_dir
            .as_ref()
            .and_then(|dir| spool::FileSpool::new(self.clone(), dir).ok())
            .map(|s| Box::new(s) as Box<dyn Spool>))
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.get(path, None)
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.get(path, Some((offset, len)))
    }

    fn read_pieces(&self, path: &str, pieces: &[(u64, u64)]) -> Result<Vec<u8>> {
        match super::pieces::span(pieces) {
            Some(span) => self.get_pieces(path, Some(span), Some(pieces)),
            None => Ok(Vec::new()),
        }
    }

    fn size(&self, path: &str) -> Result<u64> {
        self.count("head_object", path);
        let r = self.rt.block_on(
            self.client
                .head_object()
                .bucket(&self.bucket)
                .key(self.key(path))
                .send(),
        );
        match r {
            Ok(o) => Ok(u64::try_from(o.content_length().unwrap_or(0)).unwrap_or(0)),
            Err(e) if status(&e) == Some(404) => Err(Error::NotFound {
                path: path.to_string(),
            }),
            Err(e) => Err(sdk(&self.url_of(path), &e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let full = self.key(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.count("list_objects_v2", prefix);
            let r = self
                .rt
                .block_on(
                    self.client
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(&full)
                        .set_continuation_token(token.clone())
                        .send(),
                )
                .map_err(|e| sdk(&self.url_of(prefix), &e))?;
            for o in r.contents() {
                if let Some(k) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    out.push(ObjectInfo {
                        path: k.to_string(),
                        size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                    });
                }
            }
            match r.next_continuation_token() {
                Some(t) if r.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    fn remove_incomplete(&self, prefix: &str) -> Result<usize> {
        self.count("list_multipart_uploads", prefix);
        let r = self
            .rt
            .block_on(
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .prefix(self.key(prefix))
                    .send(),
            )
            .map_err(|e| sdk(&self.url_of(prefix), &e))?;
        let mut n = 0;
        for u in r.uploads() {
            let (Some(k), Some(id)) = (u.key(), u.upload_id()) else {
                continue;
            };
            self.count("abort_multipart_upload", k);
            self.rt
                .block_on(
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(k)
                        .upload_id(id)
                        .send(),
                )
                .map_err(|e| sdk(&self.url_of(prefix), &e))?;
            n += 1;
        }
        Ok(n)
    }

    fn remove(&self, path: &str) -> Result<()> {
        self.count("delete_object", path);
        self.rt
            .block_on(
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(self.key(path))
                    .send(),
            )
            .map(|_| ())
            .map_err(|e| sdk(&self.url_of(path), &e))
    }
}
