//! The append-only split: a database host whose credentials cannot delete still backs up,
//! restores and checks; `forget` and `prune` there fail at once with one line saying they
//! need deletion rights, and nothing is lost; `run` there leaves retention to the admin host.

use dbvault_tests::garage::Garage;
use dbvault_tests::proxy::{FaultProxy, Faults};
use dbvault_tests::{bin, run_cmd, Repo, Run, PASSWORD};

fn refuses_deletion(r: &Run, command: &str) {
    assert_eq!(r.code, Some(1), "{command} succeeded: {}", r.stderr);
    let err = r.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{command} needs the right to delete")) && err.contains("admin host"),
        "{err}"
    );
}

#[test]
fn an_append_only_client_backs_up_and_restores_but_deletes_nothing() {
    let repo = Repo::new();
    let ao = |args: &[&str], stdin: Option<&[u8]>| {
        let mut c = repo.cmd(args);
        c.env("DBVAULT_APPEND_ONLY", "1");
        run_cmd(c, stdin)
    };
    for night in 0..3 {
        ao(
            &["backup", "-", "--name", "db"],
            Some(format!("night {night}\n").as_bytes()),
        )
        .ok();
    }
    assert_eq!(
        ao(&["restore", "latest", "--to", "-"], None).ok().stdout,
        b"night 2\n"
    );
    ao(&["check", "--read-data"], None).ok();
    ao(&["snapshots"], None).ok();
    let before = repo.files();
    refuses_deletion(&ao(&["forget", "--keep-last", "1"], None), "forget");
    refuses_deletion(&ao(&["prune"], None), "prune");
    refuses_deletion(
        &ao(&["forget", "--keep-last", "1", "--prune"], None),
        "forget",
    );
    assert_eq!(
        repo.files(),
        before,
        "a refused command changed the repository"
    );
    // No lock was left behind: the admin host can go on at once.
    assert!(std::fs::read_dir(repo.path.join("locks")).map_or(true, |d| d.count() == 0));
    repo.run(&["forget", "--keep-last", "1", "--prune"], None)
        .ok();
    assert_eq!(repo.snapshot_ids().len(), 1);
}

#[test]
fn run_on_an_append_only_host_leaves_retention_to_the_admin_host() {
    let repo = Repo::new();
    let d = repo.dir.path();
    let pw = d.join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).expect("pw");
    let cfg = d.join("dbvault.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.main]\nurl = \"{}\"\npassword_file = \"{}\"\nappend_only = true\n\n\
             [retention]\nkeep_last = 1\n\n[prune]\n\n[[source]]\nname = \"s\"\ncommand = \"echo rows\"\n",
            repo.path.display(),
            pw.display()
        ),
    )
    .expect("config");
    for _ in 0..3 {
        let mut c = std::process::Command::new(bin());
        c.arg("--config").arg(&cfg).args(["run", "--json"]);
        c.env_remove("DBVAULT_PASSWORD").env_remove("DBVAULT_REPO");
        c.env("DBVAULT_CACHE_DIR", d.join("client"));
        let r = run_cmd(c, None).ok();
        let v = r.json();
        assert_eq!(v["ok"], true, "{v}");
        let steps = v["maintenance"].to_string();
        assert!(steps.contains("left to the admin host"), "{steps}");
        assert!(!steps.contains("\"prune\""), "prune ran: {steps}");
    }
    assert_eq!(
        repo.snapshot_ids().len(),
        3,
        "retention ran on the append-only host"
    );
}

#[test]
fn s3_credentials_without_delete_rights_back_up_restore_and_check() {
    let g = Garage::start();
    let proxy = FaultProxy::start(
        &g.endpoint,
        Faults {
            refuse_deletes: true,
            ..Faults::default()
        },
    );
    let cmd = |args: &[&str]| g.dbvault(&proxy.endpoint, "appendonly", args);
    run_cmd(cmd(&["init"]), None).ok();
    let data = dbvault_tests::dump_like(3 << 20, 4);
    run_cmd(cmd(&["backup", "-", "--name", "db"]), Some(&data)).ok();
    run_cmd(
        cmd(&["backup", "-", "--name", "db"]),
        Some(&data[..2 << 20]),
    )
    .ok();
    let out = run_cmd(cmd(&["--no-cache", "restore", "latest", "--to", "-"]), None).ok();
    assert!(out.stdout == data[..2 << 20], "restore differs");
    run_cmd(cmd(&["check", "--read-data"]), None).ok();
    let (_, refused_so_far, _) = proxy.counts();
    assert_eq!(
        refused_so_far, 0,
        "backup, restore or check tried to delete data"
    );
    refuses_deletion(
        &run_cmd(cmd(&["forget", "--keep-last", "1"]), None),
        "forget",
    );
    refuses_deletion(&run_cmd(cmd(&["prune"]), None), "prune");
    let (_, refused, _) = proxy.counts();
    assert!(refused >= 2, "the store was never asked to delete");
    // Nothing was lost, and the admin credentials (straight to the store) can prune.
    let list = run_cmd(
        g.dbvault(&g.endpoint, "appendonly", &["snapshots", "--json"]),
        None,
    )
    .ok();
    assert_eq!(list.json().as_array().map(Vec::len), Some(2));
    run_cmd(
        g.dbvault(
            &g.endpoint,
            "appendonly",
            &["forget", "--keep-last", "1", "--prune"],
        ),
        None,
    )
    .ok();
}
