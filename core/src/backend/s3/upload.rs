//! Writing objects to S3: one `PutObject`, or a multipart upload above
//! [`MULTIPART_ABOVE`](super::MULTIPART_ABOVE), from bytes in memory or a spooled file.

use std::sync::atomic::Ordering;

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::spool::Source;
use super::{io, sdk, status, Backend, S3Backend, MULTIPART_ABOVE, PART_SIZE};
use crate::{Error, Result};

/// Sends a `PutObject` or `UploadPart` request (inside an async block). With a CRC32 (a
/// spooled file's): the CRC32 in a header, which the store checks, and the payload
/// unsigned, since signing streamed chunks with a trailing checksum is what some stores,
/// Garage among them, get wrong. Without (bytes in memory): as the SDK sends them, signed
/// and checksummed.
macro_rules! send_checked {
    ($req:expr, $crc:expr) => {
        match $crc {
            Some(crc) => {
                $req.checksum_crc32(crc)
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
            }
            None => $req.send().await,
        }
    };
}

impl S3Backend {
    /// Writes an object; `look` first checks that the path is free (see `create`). The
    /// bytes are shared with each attempt's request, not copied.
    pub(super) fn put(&self, path: &str, data: &Source, look: bool) -> Result<()> {
        let key = self.key(path);
        // Some stores (Garage) accept If-None-Match but do not enforce it: look first. The
        // header still closes the race on stores that do.
        if look {
            match self.size(path) {
                Ok(_) => {
                    return Err(Error::AlreadyExists {
                        path: path.to_string(),
                    })
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if data.len() > MULTIPART_ABOVE as u64 {
            return self.put_multipart(path, &key, data);
        }
        loop {
            let conditional = self.conditional.load(Ordering::Relaxed);
            self.count("put_object", path);
            let sent = self.rt.block_on(async {
                let mut req = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .body(data.body(0, data.len(), &self.url_of(path)).await?);
                if conditional {
                    req = req.if_none_match("*");
                }
                Ok::<_, Error>(send_checked!(req, data.crc32(0)))
            })?;
            match sent {
                Ok(_) => return Ok(()),
                Err(e) if status(&e) == Some(412) => {
                    return Err(Error::AlreadyExists {
                        path: path.to_string(),
                    })
                }
                Err(e) if conditional && status(&e) == Some(501) => {
                    // The store does not do conditional writes: check, then write.
                    self.conditional.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(sdk(&self.url_of(path), &e)),
            }
        }
    }

    fn put_multipart(&self, path: &str, key: &str, data: &Source) -> Result<()> {
        self.count("create_multipart_upload", path);
        let up = self
            .rt
            .block_on(
                self.client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .send(),
            )
            .map_err(|e| sdk(&self.url_of(path), &e))?;
        let id = up
            .upload_id()
            .ok_or_else(|| io(&self.url_of(path), "the store gave no upload id"))?
            .to_string();
        let result = (|| -> Result<()> {
            let mut parts = Vec::new();
            for (i, start) in (0..data.len()).step_by(PART_SIZE).enumerate() {
                let n =
                    i32::try_from(i + 1).map_err(|_| io(&self.url_of(path), "too many parts"))?;
                let len = (data.len() - start).min(PART_SIZE as u64);
                self.count("upload_part", path);
                let r = self.rt.block_on(async {
                    let body = data.body(start, len, &self.url_of(path)).await?;
                    let req = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(&id)
                        .part_number(n)
                        .body(body);
                    send_checked!(req, data.crc32(start)).map_err(|e| sdk(&self.url_of(path), &e))
                })?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(r.e_tag().map(str::to_string))
                        .build(),
                );
            }
            self.count("complete_multipart_upload", path);
            let mut req = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                );
            if self.conditional.load(Ordering::Relaxed) {
                req = req.if_none_match("*");
            }
            match self.rt.block_on(req.send()) {
                Ok(_) => Ok(()),
                Err(e) if status(&e) == Some(412) => Err(Error::AlreadyExists {
                    path: path.to_string(),
                }),
                Err(e) => Err(sdk(&self.url_of(path), &e)),
            }
        })();
        if result.is_err() {
            self.count("abort_multipart_upload", path);
            let _ = self.rt.block_on(
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&id)
                    .send(),
            );
        }
        result
    }
}
