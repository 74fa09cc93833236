//! The trust tables as core state: tokens made and revoked, join tokens
//! spent one use at a time on the core's clock, agent identities renewed
//! and revoked (removing the agent), all rebuilt from the registry after a
//! restart (the harness checks after every input that the registry holds
//! exactly the core's records).

use wasmos_core::core::{CoreConfig, CoreError, Input, Reply};
use wasmos_core::testing::{GIB, Harness, task};
use wasmos_proto::v1;

const ORIGIN: u64 = 1_700_000_000_000;

fn harness() -> Harness {
    Harness::with_config(CoreConfig {
        wall_clock_origin_ms: ORIGIN,
        ..CoreConfig::default()
    })
}

fn join_token(accessor: &str, uses: u32) -> v1::StoredToken {
    v1::StoredToken {
        accessor: accessor.into(),
        secret_sha256: format!("hash-of-{accessor}"),
        kind: v1::TokenKind::AgentJoin as i32,
        uses_left: uses,
        ..Default::default()
    }
}

fn create(h: &mut Harness, token: v1::StoredToken, ttl_ms: u64) -> v1::StoredToken {
    match h.handle(Input::CreateToken { token, ttl_ms }) {
        Ok(Reply::Token(stored)) => *stored,
        other => panic!("{other:?}"),
    }
}

fn join(accessor: &str, secret: &str, agent: &str) -> Input {
    Input::Join {
        accessor: accessor.into(),
        secret_sha256: secret.into(),
        identity: v1::StoredIdentity {
            agent_id: agent.into(),
            not_after_ms: ORIGIN + 1_000_000,
            hostname: "host".into(),
            ..Default::default()
        },
    }
}

#[test]
fn a_token_is_stamped_by_the_core_and_revoked_by_it() {
    let mut h = harness();
    let stored = create(&mut h, join_token("j1", 1), 60_000);
    let wall = ORIGIN + h.now.millis();
    assert_eq!(
        (stored.created_ms, stored.expires_ms),
        (wall, wall + 60_000)
    );
    let admin = create(
        &mut h,
        v1::StoredToken {
            accessor: "adm".into(),
            kind: v1::TokenKind::Admin as i32,
            ..Default::default()
        },
        0,
    );
    assert_eq!(admin.expires_ms, 0, "no TTL: never expires");
    let taken = h.refused(Input::CreateToken {
        token: join_token("j1", 1),
        ttl_ms: 0,
    });
    assert!(matches!(taken, CoreError::InvalidArgument(_)), "{taken}");

    h.restart();
    assert_eq!(h.core.tokens().count(), 2);
    let Ok(Reply::Token(revoked)) = h.handle(Input::RevokeToken {
        accessor: "adm".into(),
    }) else {
        panic!("revoked")
    };
    assert_eq!(revoked.accessor, "adm");
    let gone = h.refused(Input::RevokeToken {
        accessor: "adm".into(),
    });
    assert!(matches!(gone, CoreError::NotFound(_)), "{gone}");
    h.restart();
    assert_eq!(h.core.tokens().count(), 1);
}

#[test]
fn a_join_spends_one_use_and_a_refused_one_spends_nothing() {
    let mut h = harness();
    create(&mut h, join_token("j1", 2), 60_000);
    let Ok(Reply::Identity(identity)) = h.handle(join("j1", "hash-of-j1", "A1")) else {
        panic!("joins")
    };
    assert_eq!(identity.token_accessor, "j1");
    assert_eq!(identity.joined_ms, ORIGIN + h.now.millis());

    // A wrong secret, a taken id: refused, and the use is still there.
    for (input, why) in [
        (join("j1", "hash-of-other", "A2"), "a wrong secret"),
        (join("j1", "hash-of-j1", "A1"), "a taken agent id"),
    ] {
        h.refused(input);
        let left = h.core.tokens().find(|t| t.accessor == "j1").unwrap();
        assert_eq!(left.uses_left, 1, "{why} spent a use");
    }
    h.handle(join("j1", "hash-of-j1", "A2")).unwrap();
    let spent = h.refused(join("j1", "hash-of-j1", "A3"));
    assert!(
        matches!(&spent, CoreError::PermissionDenied(m) if m.contains("spent")),
        "{spent}"
    );

    // Expiry is the core's clock's.
    create(&mut h, join_token("j2", 5), 1_000);
    h.advance(1_000);
    let expired = h.refused(join("j2", "hash-of-j2", "A4"));
    assert!(
        matches!(expired, CoreError::PermissionDenied(_)),
        "{expired}"
    );
    h.restart();
    assert_eq!(h.core.identities().count(), 2);
}

#[test]
fn a_revoked_identity_removes_its_agent_and_cannot_renew() {
    let mut h = harness();
    create(&mut h, join_token("j1", 1), 0);
    h.handle(join("j1", "hash-of-j1", "A1")).unwrap();
    let mut info = Harness::agent_info(2.0, 2 * GIB);
    info.agent_id = "A1".into();
    let agent = h.register_agent(info, vec![]).unwrap();
    let fw = h.subscribe("fw", "default");
    let offers = h.take_offers(&fw);
    h.accept(&fw, &[&offers[0]], vec![task("t1", 1.0, GIB)], None)
        .unwrap();

    let Ok(Reply::Identity(renewed)) = h.handle(Input::RenewIdentity {
        agent: "A1".into(),
        not_after_ms: ORIGIN + 9_000_000,
    }) else {
        panic!("renews")
    };
    assert_eq!(renewed.not_after_ms, ORIGIN + 9_000_000);

    let Ok(Reply::Identity(revoked)) = h.handle(Input::RevokeIdentity { agent: "A1".into() })
    else {
        panic!("revokes")
    };
    assert!(revoked.revoked);
    assert!(h.closed_agents.contains(&agent), "its stream is closed");
    assert_eq!(h.state_of("t1"), Some(v1::TaskState::Lost));
    let refused = h.refused(Input::RenewIdentity {
        agent: "A1".into(),
        not_after_ms: ORIGIN + 10_000_000,
    });
    assert!(
        matches!(refused, CoreError::PermissionDenied(_)),
        "{refused}"
    );
    let mut info = Harness::agent_info(2.0, 2 * GIB);
    info.agent_id = "A1".into();
    let back = h.register_agent(info, vec![]).unwrap_err();
    assert!(
        matches!(&back, CoreError::PermissionDenied(m) if m.contains("revoked")),
        "{back}"
    );
    let never = h.refused(Input::RevokeIdentity { agent: "A9".into() });
    assert!(matches!(never, CoreError::NotFound(_)), "{never}");
    h.restart();
    assert!(h.core.identities().all(|i| i.revoked));
}
