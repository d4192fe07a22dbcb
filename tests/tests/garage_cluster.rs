//! dbvault on the distributed store it recommends: a three-node Garage cluster
//! (replication factor 3), one node killed in the middle of a backup, of a restore and of
//! a prune. Each command completes (two nodes are a quorum) or fails saying so and
//! completes when run again; nothing stored before is lost; with every node back,
//! `check --read-data` is clean and every kept snapshot restores byte for byte.

use std::process::Stdio;
use std::time::Duration;

use dbvault_tests::garage_cluster::GarageCluster;
use dbvault_tests::{random_bytes, run_cmd, Run};

/// Runs `args` (feeding `stdin`), killing node `victim` `after` into the run; returns the
/// run's result.
fn with_a_node_killed(
    g: &mut GarageCluster,
    args: &[&str],
    stdin: Option<&[u8]>,
    victim: usize,
    after: Duration,
) -> Run {
    let mut c = g.dbvault("fleet", args);
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("dbvault");
    let feeder = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut pipe, &data);
        })
    });
    std::thread::sleep(after);
    g.kill(victim);
    let t0 = std::time::Instant::now();
    let out = child.wait_with_output().expect("wait");
    eprintln!(
        "{args:?} with node {victim} killed after {after:?}: exit {:?} {:.1} s later",
        out.status.code(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(f) = feeder {
        let _ = f.join();
    }
    dbvault_tests::finish(out)
}

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
    r
}

/// A command that failed while a node went away must say so in one line and exit 1 or 75.
fn failed_clearly(r: &Run, what: &str) {
    assert!(
        matches!(r.code, Some(1 | 75)),
        "{what}: exit {:?}: {}",
        r.code,
        r.stderr
    );
    assert!(r.stderr.contains("dbvault: error:"), "{what}: {}", r.stderr);
}

#[test]
fn a_node_killed_mid_backup_restore_and_prune_loses_nothing() {
    let mut g = GarageCluster::start();
    let dbv = |g: &GarageCluster, args: &[&str], stdin: Option<&[u8]>| {
        run_cmd(g.dbvault("fleet", args), stdin)
    };
    ok(dbv(&g, &["init"], None), "init");
    let night1 = random_bytes(16 << 20, 1);
    ok(
        dbv(&g, &["backup", "-", "--name", "db"], Some(&night1)),
        "night 1",
    );

    // Node 3 dies during the second night's backup.
    let mut night2 = night1.clone();
    night2.extend(random_bytes(48 << 20, 2));
    let r = with_a_node_killed(
        &mut g,
        &["backup", "-", "--name", "db", "--json"],
        Some(&night2),
        3,
        Duration::from_millis(800),
    );
    if r.code != Some(0) {
        failed_clearly(&r, "backup with node 3 killed");
        ok(
            dbv(&g, &["backup", "-", "--name", "db"], Some(&night2)),
            "backup again",
        );
    }
    let ids = |g: &GarageCluster| -> Vec<String> {
        dbv(g, &["snapshots", "--json"], None)
            .ok()
            .json()
            .as_array()
            .expect("snapshots")
            .iter()
            .map(|s| s["id"].as_str().expect("id").to_string())
            .collect()
    };
    let snaps = ids(&g);
    assert_eq!(snaps.len(), 2, "two nights, no partial snapshot");
    // Two nodes serve everything, stored before and during.
    let back = ok(
        dbv(&g, &["restore", &snaps[1], "--to", "-"], None),
        "restore, node 3 down",
    );
    assert!(back.stdout == night2, "night 2 from two nodes");
    g.restart(3);

    // Node 2 dies during a restore.
    let r = with_a_node_killed(
        &mut g,
        &["restore", &snaps[1], "--to", "-"],
        None,
        2,
        Duration::from_millis(300),
    );
    if r.code == Some(0) {
        assert!(
            r.stdout == night2,
            "a restore that says it succeeded gave the bytes"
        );
    } else {
        failed_clearly(&r, "restore with node 2 killed");
        let again = ok(
            dbv(&g, &["restore", &snaps[1], "--to", "-"], None),
            "restore again",
        );
        assert!(again.stdout == night2);
    }
    g.restart(2);

    // Node 3 dies during a prune that repacks and deletes.
    ok(dbv(&g, &["forget", &snaps[0]], None), "forget night 1");
    let r = with_a_node_killed(&mut g, &["prune"], None, 3, Duration::from_millis(150));
    // Whatever happened, the node comes back first (as an operator would bring it back),
    // then a prune that failed is run again.
    g.restart(3);
    if r.code != Some(0) {
        failed_clearly(&r, "prune with node 3 killed");
        eprintln!("prune with node 3 killed: {}", r.stderr);
        // A snapshot forgotten while the nodes did not all agree can still be listed
        // after reading it answers "not found": prune stops (75, worth retrying) and
        // never tells anyone to forget it.
        assert!(!r.stderr.contains("dbvault forget"), "{}", r.stderr);
        g.repair_tables();
        let mut again = dbv(&g, &["prune"], None);
        for _ in 0..20 {
            if again.code == Some(0) {
                break;
            }
            assert_eq!(again.code, Some(75), "prune again: {}", again.stderr);
            std::thread::sleep(Duration::from_secs(3));
            again = dbv(&g, &["prune"], None);
        }
        ok(again, "prune again");
    }

    // All back: the repository is sound and the kept night restores.
    ok(
        dbv(&g, &["check", "--read-data"], None),
        "check --read-data",
    );
    let last = ok(
        dbv(
            &g,
            &["restore", "latest", "--name", "db", "--to", "-"],
            None,
        ),
        "restore",
    );
    assert!(last.stdout == night2, "the kept night, byte for byte");
    assert_eq!(ids(&g), vec![snaps[1].clone()]);
}
