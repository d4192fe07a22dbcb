//! Secrets kept from the processes dbvault starts (`--command`, pg_dump, psql,
//! `password_command`): the repository passphrase and the object store's credentials are
//! dbvault's alone, so a child never inherits them.

use std::process::Command;

/// Environment variables that hold dbvault's secrets (or say where they are).
pub const SECRET_VARS: &[&str] = &[
    "DBVAULT_PASSWORD",
    "DBVAULT_PASSWORD_FILE",
    "DBVAULT_PASSWORD_COMMAND",
    "DBVAULT_TO_PASSWORD",
    "DBVAULT_TO_PASSWORD_FILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
];

/// Removes dbvault's secrets from a child's environment.
pub fn scrub(cmd: &mut Command) -> &mut Command {
    for v in SECRET_VARS {
        cmd.env_remove(v);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_sees_none_of_the_secrets() {
        let mut c = Command::new("env");
        c.env("DBVAULT_PASSWORD", "pp")
            .env("AWS_SECRET_ACCESS_KEY", "sk")
            .env("KEEP", "1");
        let out = scrub(&mut c).output().expect("env");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("KEEP=1"));
        assert!(!text.contains("DBVAULT_PASSWORD") && !text.contains("AWS_SECRET_ACCESS_KEY"));
    }
}
