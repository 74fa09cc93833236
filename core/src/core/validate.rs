//! Checks a task spec from a framework before anything is launched.

use wasmos_proto::v1;

use super::CoreError;
use crate::allocator::Demand;
use crate::ids::{validate_digest, validate_task_id};
use crate::resources::Resources;

/// The most arguments, environment variables and inputs a task may have:
/// enough for any real program, small enough that one spec cannot bloat
/// the master.
const MAX_LIST: usize = 4096;

/// The most tasks a framework may say it waits for.
pub const MAX_DEMAND_TASKS: u64 = 1_000_000_000;

/// Checks a declared demand: its task asks for cpus and mem as a task
/// must, and its count is sane.
pub(super) fn validate_demand(demand: &v1::Demand) -> Result<Demand, CoreError> {
    let invalid = |m: String| CoreError::InvalidArgument(format!("demand: {m}"));
    let wire = demand
        .task
        .as_ref()
        .ok_or_else(|| invalid("no task resources given".into()))?;
    let task = Resources::try_from(wire).map_err(|e| invalid(e.to_string()))?;
    if task.cpu_millis == 0 || task.mem == 0 {
        return Err(invalid(format!(
            "a task needs at least 0.001 cpus and 1 byte of mem, got {task}"
        )));
    }
    if demand.tasks > MAX_DEMAND_TASKS {
        return Err(invalid(format!(
            "at most {MAX_DEMAND_TASKS} tasks, got {}",
            demand.tasks
        )));
    }
    Ok(Demand {
        task,
        tasks: demand.tasks,
    })
}

/// Checks a task spec and returns the resources it asks for.
pub fn validate_task(spec: &v1::TaskSpec) -> Result<Resources, CoreError> {
    let invalid = |message: String| CoreError::InvalidTask {
        task: spec.task_id.clone(),
        message,
    };
    validate_task_id(&spec.task_id).map_err(|m| CoreError::InvalidTask {
        task: spec.task_id.clone(),
        message: m,
    })?;
    validate_digest(&spec.artifact).map_err(invalid)?;
    let wire = spec
        .resources
        .as_ref()
        .ok_or_else(|| invalid("no resources given: a task needs cpus and mem".into()))?;
    let resources = Resources::try_from(wire).map_err(|e| invalid(e.to_string()))?;
    if resources.cpu_millis == 0 {
        return Err(invalid(format!(
            "cpus must be at least 0.001, got {}",
            wire.cpus
        )));
    }
    if resources.mem == 0 {
        return Err(invalid("mem must be more than 0 bytes".into()));
    }
    if spec.args.len() > MAX_LIST || spec.env.len() > MAX_LIST || spec.inputs.len() > MAX_LIST {
        return Err(invalid(format!(
            "at most {MAX_LIST} args, env vars and inputs each"
        )));
    }
    for env in &spec.env {
        if env.name.is_empty() || env.name.contains('=') || env.name.contains('\0') {
            return Err(invalid(format!(
                "environment variable name `{}` must be non-empty, without `=` or NUL",
                env.name
            )));
        }
        // WASI hands a guest its environment as NUL-terminated strings: a
        // NUL inside a value would end it early, or fail the launch.
        if env.value.contains('\0') {
            return Err(invalid(format!(
                "the value of environment variable `{}` contains a NUL byte",
                env.name
            )));
        }
    }
    if let Some(position) = spec.args.iter().position(|arg| arg.contains('\0')) {
        return Err(invalid(format!(
            "argument {position} contains a NUL byte (arguments reach the task as NUL-terminated strings)"
        )));
    }
    for input in &spec.inputs {
        validate_digest(&input.artifact).map_err(invalid)?;
        let path = std::path::Path::new(&input.path);
        let escapes = path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)));
        if input.path.is_empty() || escapes {
            return Err(invalid(format!(
                "input path `{}` must be relative and stay inside the sandbox (no `..`)",
                input.path
            )));
        }
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> v1::TaskSpec {
        v1::TaskSpec {
            task_id: "t1".into(),
            artifact: "ab".repeat(32),
            resources: Some(v1::Resources {
                cpus: 0.5,
                mem: 1 << 20,
                disk: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_good_spec() {
        assert_eq!(validate_task(&spec()), Ok(Resources::new(0.5, 1 << 20, 0)));
    }

    #[test]
    fn refuses_bad_resources_with_the_reason() {
        for (cpus, mem, needle) in [
            (-1.0, 1, "cpus must be a finite number"),
            (f64::NAN, 1, "cpus must be a finite number"),
            (0.0, 1, "cpus must be at least"),
            (1.0, 0, "mem must be more than 0"),
        ] {
            let mut s = spec();
            s.resources = Some(v1::Resources { cpus, mem, disk: 0 });
            let err = validate_task(&s).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(err.starts_with("task t1:"), "{err}");
        }
        let mut s = spec();
        s.resources = None;
        assert!(validate_task(&s).is_err());
    }

    #[test]
    fn refuses_escaping_inputs_and_bad_digests() {
        let mut s = spec();
        s.inputs.push(v1::Input {
            path: "../etc/passwd".into(),
            artifact: "ab".repeat(32),
            kind: 0,
        });
        assert!(
            validate_task(&s)
                .unwrap_err()
                .to_string()
                .contains("inside the sandbox")
        );
        let mut s = spec();
        s.artifact = "nope".into();
        assert!(
            validate_task(&s)
                .unwrap_err()
                .to_string()
                .contains("sha256")
        );
    }

    #[test]
    fn refuses_nul_in_env_values_and_args() {
        let mut s = spec();
        s.env.push(v1::EnvVar {
            name: "KEY".into(),
            value: "a\0b".into(),
        });
        let err = validate_task(&s).unwrap_err().to_string();
        assert!(err.contains("`KEY`") && err.contains("NUL"), "{err}");
        let mut s = spec();
        s.args = vec!["ok".into(), "x\0".into()];
        let err = validate_task(&s).unwrap_err().to_string();
        assert!(err.contains("argument 1") && err.contains("NUL"), "{err}");
    }
}
