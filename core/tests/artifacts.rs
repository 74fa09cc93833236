//! The artifact index as core state: uploads indexed within the store's
//! limits, uses and expiry on the core's one clock, the index rebuilt from
//! the registry after a restart (the harness checks after every input
//! that the registry holds exactly the core's records), and the rules an
//! `Accept` reads from it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use wasmos_core::access::{Grant, Principal};
use wasmos_core::core::{ArtifactRules, CoreConfig, CoreError, Input, Reply};
use wasmos_core::store::{Record, Store};
use wasmos_core::testing::{GIB, Harness, task};
use wasmos_proto::v1;

fn principal(name: &str) -> Principal {
    Principal {
        name: name.into(),
        accessor: format!("acc-{name}"),
        grant: Grant::Roles(vec!["*".into()]),
    }
}

fn admin() -> Principal {
    Principal {
        name: "admin".into(),
        accessor: "acc-admin".into(),
        grant: Grant::Admin,
    }
}

fn digest(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn store(h: &mut Harness, owner: &Principal, digest: &str, size: u64) -> Result<Reply, CoreError> {
    h.handle(Input::StoreArtifact {
        owner: owner.clone(),
        digest: digest.into(),
        size,
    })
}

/// The index as the registry holds it, by digest.
fn stored(h: &Harness) -> HashMap<String, v1::StoredArtifact> {
    h.store
        .load()
        .unwrap()
        .records()
        .into_iter()
        .filter_map(|r| match r {
            Record::Artifact(a) => Some((a.digest.clone(), a)),
            _ => None,
        })
        .collect()
}

fn harness(rules: ArtifactRules) -> Harness {
    Harness::with_config(CoreConfig {
        wall_clock_origin_ms: 1_700_000_000_000,
        artifacts: rules,
        ..CoreConfig::default()
    })
}

#[test]
fn an_upload_is_its_owners_on_the_cores_clock_and_survives_a_restart() {
    let mut h = harness(ArtifactRules::default());
    let (alice, bob) = (principal("alice"), principal("bob"));
    store(&mut h, &alice, &digest(1), 100).unwrap();
    let wall = 1_700_000_000_000 + h.now.millis();
    let record = &stored(&h)[&digest(1)];
    assert_eq!(record.owners, ["alice"]);
    assert_eq!((record.stored_ms, record.last_used_ms), (wall, wall));

    h.advance(5_000);
    store(&mut h, &bob, &digest(1), 100).unwrap();
    let record = &stored(&h)[&digest(1)];
    assert_eq!(
        record.owners,
        ["alice", "bob"],
        "stored once, owned by both"
    );
    assert_eq!(record.stored_ms, wall);
    assert_eq!(record.last_used_ms, wall + 5_000, "uploaded again: a use");

    h.restart();
    assert!(h.core.artifact_readable(&alice, &digest(1)));
    assert!(h.core.artifact_readable(&bob, &digest(1)));
    assert!(!h.core.artifact_readable(&principal("carol"), &digest(1)));
    assert!(h.core.artifact_readable(&admin(), &digest(1)));
    assert!(
        !h.core.artifact_readable(&admin(), &digest(2)),
        "nobody stored it"
    );
}

#[test]
fn a_refused_upload_names_its_limit_and_changes_nothing() {
    let mut h = harness(ArtifactRules {
        quota: 150,
        ..ArtifactRules::default()
    });
    let alice = principal("alice");
    store(&mut h, &alice, &digest(1), 100).unwrap();
    let refused = h.refused(Input::StoreArtifact {
        owner: alice.clone(),
        digest: digest(2),
        size: 100,
    });
    assert!(
        matches!(&refused, CoreError::Exhausted(m) if m.contains("--artifact-quota")),
        "{refused}"
    );
    // Admins have no quota; a malformed digest is refused as such.
    store(&mut h, &admin(), &digest(2), 1000).unwrap();
    let bad = h.refused(Input::StoreArtifact {
        owner: alice,
        digest: "../etc".into(),
        size: 1,
    });
    assert!(matches!(bad, CoreError::InvalidArgument(_)), "{bad}");
}

#[test]
fn a_use_is_written_at_most_once_a_minute() {
    let mut h = harness(ArtifactRules::default());
    store(&mut h, &principal("alice"), &digest(1), 10).unwrap();
    let first = stored(&h)[&digest(1)].last_used_ms;
    h.advance(30_000);
    let out = h
        .core
        .handle(Input::ArtifactUsed { digest: digest(1) }, h.now);
    assert!(out.writes.is_empty(), "within the minute: no write");
    h.advance(31_000);
    h.handle(Input::ArtifactUsed { digest: digest(1) }).unwrap();
    assert_eq!(stored(&h)[&digest(1)].last_used_ms, first + 61_000);
    // A use of an artifact nobody stored changes nothing.
    let out = h
        .core
        .handle(Input::ArtifactUsed { digest: digest(9) }, h.now);
    assert!(out.writes.is_empty());
}

#[test]
fn expiry_spares_pinned_and_recently_touched_artifacts() {
    let mut h = harness(ArtifactRules {
        ttl: Duration::from_secs(10),
        ..ArtifactRules::default()
    });
    let alice = principal("alice");
    for n in 1..=3 {
        store(&mut h, &alice, &digest(n), 10).unwrap();
    }
    let expire = |h: &mut Harness, pinned: &[u8], touched: &[(u8, u64)]| {
        let reply = h
            .handle(Input::ExpireArtifacts {
                pinned: pinned.iter().map(|n| digest(*n)).collect::<HashSet<_>>(),
                touched: touched
                    .iter()
                    .map(|(n, at)| (digest(*n), *at))
                    .collect::<HashMap<_, _>>(),
            })
            .unwrap();
        let Reply::Expired(expired) = reply else {
            panic!("{reply:?}")
        };
        expired
    };
    h.advance(5_000);
    assert!(expire(&mut h, &[], &[]).is_empty(), "not yet");
    // This disk's file of 3 was read now (its time is exact; the record's
    // last use moves only once a minute).
    let touched_at = 1_700_000_000_000 + h.now.millis();
    h.advance(6_000);
    // 11 s since stored: 1 goes, 2 is pinned, 3 was touched 6 s ago.
    assert_eq!(expire(&mut h, &[2], &[(3, touched_at)]), [digest(1)]);
    let left: HashSet<String> = stored(&h).into_keys().collect();
    assert_eq!(left, HashSet::from([digest(2), digest(3)]));
    h.restart();
    assert_eq!(h.core.indexed_artifacts(), left);
}

#[test]
fn an_accept_reads_the_index_for_whose_artifacts_and_how_big_the_inputs_are() {
    let mut h = harness(ArtifactRules::default());
    let (alice, bob) = (principal("alice"), principal("bob"));
    store(&mut h, &alice, &digest(1), 10).unwrap();
    store(&mut h, &alice, &digest(2), 4096).unwrap();
    let mut info = Harness::agent_info(4.0, 4 * GIB);
    info.resources.as_mut().unwrap().disk = GIB;
    h.register_agent(info, vec![]).unwrap();
    let fw = h.subscribe_with(v1::FrameworkInfo {
        name: "bobs".into(),
        role: "default".into(),
        principal: bob.name.clone(),
        ..Default::default()
    });
    let fw = fw.unwrap();
    let offers = h.take_offers(&fw);
    let mut spec = task("t1", 1.0, GIB);
    spec.artifact = digest(1);
    let accept = |spec: v1::TaskSpec| {
        Input::Accept(v1::AcceptRequest {
            framework_id: fw.to_string(),
            offer_ids: vec![offers[0].offer_id.clone()],
            tasks: vec![spec],
            filters: None,
        })
    };
    let denied = h.core.authorize(&bob, &accept(spec.clone())).unwrap_err();
    assert!(
        matches!(&denied, CoreError::PermissionDenied(m) if m.contains("not uploaded by")),
        "{denied}"
    );
    assert!(h.core.authorize(&admin(), &accept(spec.clone())).is_ok());
    store(&mut h, &bob, &digest(1), 10).unwrap();
    assert!(h.core.authorize(&bob, &accept(spec.clone())).is_ok());
    let mut nobodys = spec.clone();
    nobodys.artifact = digest(7);
    assert!(
        h.core.authorize(&bob, &accept(nobodys)).is_ok(),
        "an artifact nobody stored fails at the fetch, as for anyone"
    );

    // Inputs count against the disk, by the sizes the index holds.
    spec.inputs.push(v1::Input {
        path: "data".into(),
        artifact: digest(2),
        kind: v1::InputKind::File as i32,
    });
    spec.resources.as_mut().unwrap().disk = 1000;
    let too_big = h.refused(accept(spec.clone()));
    assert!(
        too_big
            .to_string()
            .contains("its inputs are 4096 bytes, more than its disk of 1000 bytes"),
        "{too_big}"
    );
    spec.resources.as_mut().unwrap().disk = 4096;
    let launched = h.handle(accept(spec));
    assert!(matches!(launched, Ok(Reply::Launched(_))), "{launched:?}");
}

#[test]
fn files_and_index_are_reconciled_at_start() {
    for shared in [false, true] {
        let mut h = harness(ArtifactRules::default());
        let alice = principal("alice");
        store(&mut h, &alice, &digest(1), 10).unwrap();
        store(&mut h, &alice, &digest(2), 20).unwrap();
        // On disk: 2 (indexed), 3 (not indexed); 1's file is gone.
        let remove =
            h.core
                .reconcile_artifact_files(vec![(digest(2), 20), (digest(3), 30)], shared, h.now);
        h.store.commit(&h.core.take_writes()).unwrap();
        h.check_registry();
        let indexed = h.core.indexed_artifacts();
        if shared {
            assert_eq!(remove.0, [digest(3)], "expired meanwhile: its file goes");
            assert_eq!(indexed, HashSet::from([digest(1), digest(2)]));
        } else {
            assert!(remove.0.is_empty());
            assert_eq!(indexed, HashSet::from([digest(2), digest(3)]));
            assert!(stored(&h)[&digest(3)].owners.is_empty(), "owned by no one");
        }
    }
}
