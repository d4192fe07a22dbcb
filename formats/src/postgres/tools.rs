//! Where PostgreSQL's client programs (psql, pg_dump, pg_dumpall) are run from.
//!
//! Debian and Ubuntu put a Perl wrapper, `pg_wrapper`, on PATH for every client program.
//! Each call then starts Perl first: 30 ms on an idle machine, 0.1-0.3 s on a busy one, and
//! a restore into a database runs psql several times in a row. When the program PATH finds
//! is that wrapper and no cluster is named (`PGCLUSTER`), the newest installed version's
//! binary is run directly: the one the wrapper itself picks when no cluster is named, and
//! the right one for any server, since newer clients read older servers.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where Debian installs each major version's binaries (`<dir>/<version>/bin`).
const DEBIAN_LIB: &str = "/usr/lib/postgresql";

/// The program to run for `name`: the newest versioned binary when PATH's `name` is
/// Debian's `pg_wrapper`, else `name` itself (looked up on PATH when it runs).
#[must_use]
pub fn program(name: &str) -> OsString {
    if std::env::var_os("PGCLUSTER").is_some() {
        return name.into();
    }
    resolve(name, std::env::var_os("PATH"), Path::new(DEBIAN_LIB))
        .map_or_else(|| name.into(), PathBuf::into_os_string)
}

/// `name` of PostgreSQL major version `major` exactly (programs that read a cluster's files,
/// such as `pg_waldump`, take no other version): Debian's `/usr/lib/postgresql/MAJOR/bin`,
/// else PATH's when its `--version` says that major version.
#[must_use]
pub fn versioned(name: &str, major: &str) -> Option<PathBuf> {
    let debian = Path::new(DEBIAN_LIB).join(major).join("bin").join(name);
    if debian.is_file() {
        return Some(debian);
    }
    let on_path = std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())?;
    let out = std::process::Command::new(&on_path)
        .arg("--version")
        .output()
        .ok()?;
    // `pg_waldump (PostgreSQL) 16.2`
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().last()?;
    (version.split('.').next()? == major).then_some(on_path)
}

fn resolve(name: &str, path: Option<OsString>, lib: &Path) -> Option<PathBuf> {
    let found = std::env::split_paths(&path?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())?;
    let real = std::fs::canonicalize(found).ok()?;
    if real.file_name()? != "pg_wrapper" {
        return None;
    }
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            // "15", "16"; the old "9.6" style is not worth a parser.
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin").join(name);
            bin.is_file().then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v)
        .map(|(_, bin)| bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    }

    #[test]
    fn the_debian_wrapper_gives_way_to_the_newest_binary() {
        let t = tempfile::tempdir().unwrap();
        let (bin, lib) = (t.path().join("bin"), t.path().join("lib"));
        touch(&t.path().join("share/pg_wrapper"));
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(t.path().join("share/pg_wrapper"), bin.join("psql")).unwrap();
        touch(&bin.join("pg_dump")); // a real program, not the wrapper
        for v in ["9.6", "13", "15"] {
            touch(&lib.join(v).join("bin/psql"));
            touch(&lib.join(v).join("bin/pg_dump"));
        }
        touch(&lib.join("16/bin/other")); // newest version, but without psql
        let path = Some(bin.clone().into_os_string());
        assert_eq!(
            resolve("psql", path.clone(), &lib),
            Some(lib.join("15/bin/psql"))
        );
        assert_eq!(resolve("pg_dump", path.clone(), &lib), None);
        assert_eq!(resolve("pg_dumpall", path, &lib), None);
        let elsewhere = Some(t.path().join("nowhere").into_os_string());
        assert_eq!(resolve("psql", elsewhere, &lib), None);
    }
}
