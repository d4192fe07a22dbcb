//! A repository's own S3 keys, read from the file its configuration names (an environment
//! file or an AWS credentials file), never from the configuration itself.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

/// An S3 key pair from `path`: an environment file (`AWS_ACCESS_KEY_ID=…`,
/// `AWS_SECRET_ACCESS_KEY=…`, optionally `export`ed or quoted) or an AWS credentials file
/// (`aws_access_key_id = …`, `aws_secret_access_key = …` in the `[profile]` section, by
/// default `[default]`). A file others can read is used, with a warning.
///
/// # Errors
/// The file cannot be read, or lacks either key.
pub fn s3_credentials(path: &Path, profile: Option<&str>) -> Result<(String, String)> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the S3 credentials file {}", path.display()))?,
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0) {
            let mut w = WARNED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !w.iter().any(|p| p == path) {
                w.push(path.to_path_buf());
                dbvault_core::warn::warn(&format!(
                    "the S3 credentials file {} can be read by other users: chmod 600 it",
                    path.display()
                ));
            }
        }
    }
    let want = profile.unwrap_or("default");
    let (mut section, mut id, mut secret) = (None::<String>, None, None);
    let mut sections = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.trim();
            let name = name
                .strip_prefix("profile ")
                .unwrap_or(name)
                .trim()
                .to_string();
            sections.push(name.clone());
            section = Some(name);
            continue;
        }
        // Keys outside any section (an environment file) count whatever the profile.
        if section.as_deref().is_some_and(|s| s != want) {
            continue;
        }
        let Some((k, v)) = l.trim_start_matches("export ").split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            _ => {}
        }
    }
    if let Some(p) = profile {
        if sections.is_empty() {
            bail!(
                "s3_profile = {p:?}, but the S3 credentials file {} has no [sections] (an environment file): remove s3_profile, or give an AWS credentials file",
                path.display()
            );
        }
        if !sections.iter().any(|s| s == p) {
            bail!(
                "the S3 credentials file {} has no section [{p}] (its sections: {})",
                path.display(),
                sections.join(", ")
            );
        }
    }
    match (id, secret) {
        (Some(i), Some(s)) if !i.is_empty() && !s.is_empty() => Ok((i, s)),
        _ => bail!(
            "the S3 credentials file {} lacks the access key id or the secret key{} (AWS_ACCESS_KEY_ID= and AWS_SECRET_ACCESS_KEY= lines, or aws_access_key_id = and aws_secret_access_key = in a section)",
            path.display(),
            profile.map(|p| format!(" in section [{p}]")).unwrap_or_default()
        ),
    }
}
