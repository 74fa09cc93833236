//! Signed launches.
//!
//! A launch goes to its agent in the turn of its `Accept`, before the
//! registry holds it: a master that crashes in between learns of the task
//! only when its agent re-registers and reports it. It adopts the task then,
//! but only one it launched itself: every launch carries an HMAC-SHA256 of
//! what it says (the agent, the framework, the master's epoch and the spec,
//! which holds the task's id and resources) under a key that lives in the registry and
//! never leaves the master. An agent that reports a task with a MAC that
//! does not check out is told to kill it, so no agent can run a task billed
//! to another framework or claim resources nobody gave it.

use std::fmt;

use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;
use wasmos_proto::v1;

use crate::ids::{AgentId, FrameworkId};

/// What a MAC is computed over, before the fields: a version, so a later
/// layout can never be mistaken for this one.
const DOMAIN: &[u8] = b"wasmos launch v1\0";

/// The master's launch key (32 bytes from the registry's header).
#[derive(Clone, PartialEq, Eq)]
pub struct LaunchKey([u8; 32]);

impl LaunchKey {
    pub fn new(bytes: [u8; 32]) -> LaunchKey {
        LaunchKey(bytes)
    }

    /// The MAC of launching `spec` for `framework` on `agent`, by the
    /// master of `epoch`.
    pub fn sign(
        &self,
        agent: &AgentId,
        framework: &FrameworkId,
        epoch: u64,
        spec: &v1::TaskSpec,
    ) -> Vec<u8> {
        self.mac(agent, framework, epoch, spec)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// Whether `mac` is this key's MAC of the launch (compared in constant
    /// time).
    pub fn verify(
        &self,
        agent: &AgentId,
        framework: &FrameworkId,
        epoch: u64,
        spec: &v1::TaskSpec,
        mac: &[u8],
    ) -> bool {
        self.mac(agent, framework, epoch, spec)
            .verify_slice(mac)
            .is_ok()
    }

    fn mac(
        &self,
        agent: &AgentId,
        framework: &FrameworkId,
        epoch: u64,
        spec: &v1::TaskSpec,
    ) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac.update(&epoch.to_be_bytes());
        // Length-prefixed, so no two launches share an encoding.
        for field in [agent.as_str().as_bytes(), framework.as_str().as_bytes()] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        // prost encodes a message's known fields in a fixed order, and drops
        // fields it does not know: an agent of an older version reports a
        // spec without the fields it never knew, its MAC fails, and the task
        // is killed rather than adopted with less than it was launched with.
        // A map is the exception: prost writes a `HashMap` in its iteration
        // order, which differs between two maps of the same pairs, so the
        // labels are taken out and added sorted, each length-prefixed.
        if spec.labels.is_empty() {
            mac.update(&spec.encode_to_vec());
        } else {
            let mut bare = spec.clone();
            let mut labels: Vec<(String, String)> =
                std::mem::take(&mut bare.labels).into_iter().collect();
            labels.sort_unstable();
            mac.update(&bare.encode_to_vec());
            for (key, value) in &labels {
                for field in [key.as_bytes(), value.as_bytes()] {
                    mac.update(&(field.len() as u64).to_be_bytes());
                    mac.update(field);
                }
            }
        }
        mac
    }
}

/// Zeros: for tests and simulations. A master always uses its registry's key.
impl Default for LaunchKey {
    fn default() -> LaunchKey {
        LaunchKey([0; 32])
    }
}

/// Never prints the key.
impl fmt::Debug for LaunchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LaunchKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, cpus: f64) -> v1::TaskSpec {
        v1::TaskSpec {
            task_id: id.into(),
            artifact: "ab".repeat(32),
            resources: Some(v1::Resources {
                cpus,
                mem: 1 << 20,
                disk: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_mac_checks_out_only_for_the_launch_and_key_it_was_made_for() {
        let key = LaunchKey::new([7; 32]);
        let (agent, framework) = (AgentId::from("A1"), FrameworkId::from("F1"));
        let mac = key.sign(&agent, &framework, 1, &spec("t", 0.5));
        assert_eq!(mac.len(), 32);
        assert!(key.verify(&agent, &framework, 1, &spec("t", 0.5), &mac));
        // Any field changed: another agent, framework, task or size.
        assert!(!key.verify(&AgentId::from("A2"), &framework, 1, &spec("t", 0.5), &mac));
        assert!(!key.verify(&agent, &FrameworkId::from("F2"), 1, &spec("t", 0.5), &mac));
        assert!(!key.verify(&agent, &framework, 1, &spec("u", 0.5), &mac));
        assert!(!key.verify(&agent, &framework, 1, &spec("t", 4.0), &mac));
        // Another key, a cut MAC, none.
        assert!(!LaunchKey::new([8; 32]).verify(&agent, &framework, 1, &spec("t", 0.5), &mac));
        assert!(!key.verify(&agent, &framework, 1, &spec("t", 0.5), &mac[..16]));
        assert!(!key.verify(&agent, &framework, 1, &spec("t", 0.5), &[]));
        // The length prefix keeps ("A1F", "1") apart from ("A1", "F1").
        let shifted = key.sign(
            &AgentId::from("A1F"),
            &FrameworkId::from("1"),
            1,
            &spec("t", 0.5),
        );
        assert_ne!(shifted, mac);
        // Another master's start.
        assert!(!key.verify(&agent, &framework, 2, &spec("t", 0.5), &mac));
    }

    #[test]
    fn labels_are_signed_whatever_order_their_map_keeps() {
        let key = LaunchKey::new([7; 32]);
        let (agent, framework) = (AgentId::from("A1"), FrameworkId::from("F1"));
        let with = |pairs: &mut dyn Iterator<Item = usize>| v1::TaskSpec {
            labels: pairs
                .map(|i| (format!("key-{i}"), format!("value-{i}")))
                .collect(),
            ..spec("t", 0.5)
        };
        let signed = with(&mut (0..32));
        let mac = key.sign(&agent, &framework, 1, &signed);
        // The same pairs, inserted in another order and sent over the wire
        // (decoded into a map of their own): the MAC checks out.
        let again = with(&mut (0..32).rev());
        let decoded = v1::TaskSpec::decode(again.encode_to_vec().as_slice()).unwrap();
        assert!(key.verify(&agent, &framework, 1, &decoded, &mac));
        // Another value, a label more or less: it does not.
        let mut changed = decoded.clone();
        changed.labels.insert("key-3".into(), "other".into());
        assert!(!key.verify(&agent, &framework, 1, &changed, &mac));
        assert!(!key.verify(&agent, &framework, 1, &with(&mut (0..31)), &mac));
        assert!(!key.verify(&agent, &framework, 1, &spec("t", 0.5), &mac));
        // A label's key and value cannot trade bytes.
        let mut a = spec("t", 0.5);
        a.labels.insert("ab".into(), "c".into());
        let mut b = spec("t", 0.5);
        b.labels.insert("a".into(), "bc".into());
        assert_ne!(
            key.sign(&agent, &framework, 1, &a),
            key.sign(&agent, &framework, 1, &b)
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert_eq!(format!("{:?}", LaunchKey::new([1; 32])), "LaunchKey(..)");
    }
}
