//! `wasmos master` on a registry it must not use: unreadable, of a newer
//! schema, or on a full disk. Each time the master exits non-zero with a
//! message naming the file, and the registry keeps what it held.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::{spawn_until, wasmos};
use wasmos_master::store::{Record, RedbStore, SCHEMA_VERSION, Store, Write};
use wasmos_proto::v1;

/// `wasmos master` on `work_dir`, expected to stop by itself.
fn master_on(work_dir: &Path) -> Output {
    let mut cmd = wasmos();
    cmd.args([
        "master",
        "--insecure",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ])
    .arg("--work-dir")
    .arg(work_dir);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.output().expect("run wasmos master"));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the master ran on a registry it must refuse")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn registry(work_dir: &Path) -> PathBuf {
    work_dir.join("registry.redb")
}

#[test]
fn an_unreadable_registry_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("master");
    std::fs::create_dir_all(&work).unwrap();
    let junk: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(registry(&work), &junk).unwrap();
    let o = master_on(&work);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&registry(&work).display().to_string()),
        "{err}"
    );
    assert!(err.contains("Not a redb database"), "{err}");
    assert!(
        std::fs::read(registry(&work)).unwrap() == junk,
        "the file changed"
    );
}

#[test]
fn a_registry_of_a_newer_schema_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("master");
    std::fs::create_dir_all(&work).unwrap();
    {
        let store = RedbStore::open(&registry(&work)).unwrap();
        store
            .commit(&[Write::Put(Record::Meta(v1::RegistryMeta {
                schema_version: SCHEMA_VERSION + 1,
                epoch: 41,
                ..Default::default()
            }))])
            .unwrap();
    }
    let before = std::fs::read(registry(&work)).unwrap();
    let o = master_on(&work);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&registry(&work).display().to_string()),
        "{err}"
    );
    assert!(
        err.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{err}"
    );
    assert!(
        std::fs::read(registry(&work)).unwrap() == before,
        "the file changed"
    );
    // And it is refused the same way the next time.
    let again = RedbStore::open(&registry(&work)).unwrap_err().to_string();
    assert!(again.contains("schema version"), "{again}");
}

/// The full disk is a 4 MiB tmpfs in a mount namespace of our own
/// (`unshare -Urm`: no root needed, nothing leaks out of the test), filled
/// to the last byte after the registry was copied in.
#[test]
fn a_registry_on_a_full_disk_is_refused_and_keeps_what_it_held() {
    let dir = tempfile::tempdir().unwrap();
    // A registry that holds something: a role's weight, set at start.
    let source = dir.path().join("source");
    let mut cmd = wasmos();
    cmd.args([
        "master",
        "--insecure",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
    ])
    .args(["--role-weight", "gold=3", "--work-dir"])
    .arg(&source);
    let (mut master, _) = spawn_until(cmd, &["listening on"]);
    master.kill().unwrap();
    master.wait().unwrap();

    let disk = dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let bin = env!("CARGO_BIN_EXE_wasmos");
    // Stops on a full disk; then, with room again, starts and lists roles.
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=4M tmpfs '{disk}' || exit 90
cp -r '{source}' '{disk}/m'
cat /dev/zero > '{disk}/fill' 2>/dev/null
WASMOS_LOG=warn timeout 30 '{bin}' master --insecure --listen 127.0.0.1:0 --http 127.0.0.1:0 --work-dir '{disk}/m'
echo "full-disk-exit=$?"
rm '{disk}/fill'
WASMOS_LOG=warn '{bin}' master --insecure --listen 127.0.0.1:0 --http 127.0.0.1:0 --work-dir '{disk}/m' > '{disk}/out' &
pid=$!
for i in $(seq 300); do
  url=$(grep -o 'http://[0-9.:]*' '{disk}/out' | head -n 1)
  [ -n "$url" ] && '{bin}' roles --json --master "$url" 2>/dev/null && break
  sleep 0.1
done
kill -9 $pid
"#,
        disk = disk.display(),
        source = source.display(),
    );
    let o = std::process::Command::new("unshare")
        .args(["-Urm", "sh", "-c", &script])
        .env("WASMOS_LOG", "warn")
        .output()
        .expect("unshare (util-linux) runs the full-disk script");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = stderr(&o);
    assert_ne!(
        o.status.code(),
        Some(90),
        "cannot mount a tmpfs in a user namespace here: {err}"
    );
    assert!(out.contains("full-disk-exit=1"), "{out}\n{err}");
    let file = disk.join("m/registry.redb").display().to_string();
    assert!(err.contains(&file), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    // With room again, the same registry starts, with what it held.
    let roles: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let gold = roles
        .iter()
        .find(|r| r["role"] == "gold")
        .unwrap_or_else(|| panic!("the role is gone: {out}\n{err}"));
    assert_eq!(gold["weight"], 3.0);
}
