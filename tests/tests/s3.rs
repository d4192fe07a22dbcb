//! S3 repositories against a real S3-compatible server (Garage): the backend contract, and
//! backup/restore round trips through `s3://`.

use dbvault_core::backend::s3::{S3Backend, S3Options};
use dbvault_tests::garage::Garage;
use dbvault_tests::{bin, dump_like, run_cmd, PASSWORD};

fn options(g: &Garage) -> S3Options {
    S3Options {
        endpoint: Some(g.endpoint.clone()),
        region: Some("garage".into()),
        path_style: true,
        credentials: Some((g.key_id.clone(), g.secret.clone())),
    }
}

#[test]
fn the_backend_contract_holds_on_garage() {
    let g = Garage::start();
    let b = S3Backend::new(&g.url("conformance"), &options(&g)).expect("backend");
    dbvault_core::backend::conformance::run(&b).unwrap_or_else(|e| panic!("{e}\n{}", g.log()));
    // Large objects go up in parts.
    let big = dump_like(40 << 20, 3);
    dbvault_core::backend::Backend::create(&b, "data/ab/big", &big).expect("multipart");
    assert!(dbvault_core::backend::Backend::read(&b, "data/ab/big").expect("read") == big);
}

#[test]
fn backup_and_restore_through_s3_are_byte_identical() {
    let g = Garage::start();
    let cmd = |args: &[&str]| {
        let mut c = std::process::Command::new(bin());
        c.args(["--repo", &g.url("repo"), "--s3-path-style"])
            .args(args);
        c.env("DBVAULT_PASSWORD", PASSWORD);
        for (k, v) in g.env() {
            c.env(k, v);
        }
        c
    };
    run_cmd(cmd(&["init"]), None).ok();
    let data = dump_like(12 << 20, 5);
    run_cmd(cmd(&["backup", "-", "--name", "s"]), Some(&data)).ok();
    let out = run_cmd(cmd(&["restore", "latest", "--to", "-"]), None).ok();
    assert!(out.stdout == data, "restore through S3 differs");
    run_cmd(cmd(&["check", "--read-data"]), None).ok();
}
