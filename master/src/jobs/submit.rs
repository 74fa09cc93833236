//! A submitted job checked against the limits, and the task spec of each
//! index made from its template (only when the index starts).

use wasmos_proto::v1;

use crate::Resources;
use crate::core::validate_task;
use crate::limits::MAX_NAME_BYTES;
use crate::retry;

/// Indices one job may have.
pub const MAX_INDICES: u32 = 1_000_000;
/// Jobs one job may depend on, all kinds together.
pub const MAX_DEPENDENCIES: usize = 20;
/// Jobs one principal may have that have not ended.
pub const MAX_LIVE_JOBS_PER_PRINCIPAL: usize = 10_000;
/// Idempotency keys, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Attributes a job may ask its agents for (`on`).
pub const MAX_ON: usize = 16;

/// What [`check`] found a job asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub role: String,
    /// What each index asks for.
    pub shape: Resources,
}

/// Checks `spec` as submitted: each refusal names the field and the limit.
/// Whether the dependencies exist, and the owner may use the role, is the
/// service's to check.
pub fn check(spec: &v1::JobSpec) -> Result<Checked, String> {
    if spec.name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the job's name is {} bytes; at most {MAX_NAME_BYTES}",
            spec.name.len()
        ));
    }
    let role = if spec.role.is_empty() {
        "default".to_string()
    } else {
        spec.role.clone()
    };
    crate::ids::validate_role(&role)?;
    if spec.count == 0 || spec.count > MAX_INDICES {
        return Err(format!(
            "a job has 1 to {MAX_INDICES} indices, got {}",
            spec.count
        ));
    }
    let template = spec.task.as_ref().ok_or("the job has no task to run")?;
    // Checked as its longest task id will be.
    let longest = index_spec(
        template,
        &format!("j{}.{}", u64::MAX, u64::MAX),
        spec.count - 1,
        crate::limits::MAX_ATTEMPTS,
    );
    let shape = validate_task(&longest).map_err(|e| e.to_string())?;
    if let Some(policy) = &spec.retry {
        retry::validate(policy)?;
    }
    let dependencies = super::deps::named(spec).count();
    if dependencies > MAX_DEPENDENCIES {
        return Err(format!(
            "a job depends on at most {MAX_DEPENDENCIES} jobs, got {dependencies}"
        ));
    }
    if spec.idempotency_key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the idempotency key is {} bytes; at most {MAX_KEY_BYTES}",
            spec.idempotency_key.len()
        ));
    }
    crate::limits::check_pairs(
        "on",
        spec.on.iter().map(|a| (a.key.as_str(), a.value.as_str())),
        MAX_ON,
    )?;
    Ok(Checked { role, shape })
}

/// The start's epoch and the number a job id (`j<epoch>.<n>`) names.
/// The stdout heads (4 KiB each at most) the master keeps of one job's
/// successful indices; failed ones' are kept up to twice this.
pub const MAX_OUTPUT_BYTES_PER_JOB: u64 = 64 << 20;

pub fn parse_job_id(id: &str) -> Option<(u64, u64)> {
    let (epoch, number) = id.strip_prefix('j')?.split_once('.')?;
    Some((epoch.parse().ok()?, number.parse().ok()?))
}

/// The task id of attempt `attempt` of index `index` of job `job`.
pub fn task_id(job: &str, index: u32, attempt: u32) -> String {
    format!("{job}-{index}-{attempt}")
}

/// The job, index and attempt a task id of the service names (`None` for
/// any other task's id).
pub fn parse_task_id(task_id: &str) -> Option<(&str, u32, u32)> {
    let mut parts = task_id.rsplitn(3, '-');
    let attempt = parts.next()?.parse().ok()?;
    let index = parts.next()?.parse().ok()?;
    let job = parts.next()?;
    job.starts_with('j').then_some((job, index, attempt))
}

/// The spec of one attempt of one index: `{i}` in arguments and
/// environment values becomes the index, and the task learns where it is
/// from `WASMOS_JOB`, `WASMOS_INDEX` and `WASMOS_ATTEMPT` (and the labels
/// `wasmos.job`, `wasmos.index`).
pub fn index_spec(template: &v1::TaskSpec, job: &str, index: u32, attempt: u32) -> v1::TaskSpec {
    let i = index.to_string();
    let mut spec = template.clone();
    spec.task_id = task_id(job, index, attempt);
    for arg in &mut spec.args {
        if arg.contains("{i}") {
            *arg = arg.replace("{i}", &i);
        }
    }
    for env in &mut spec.env {
        if env.value.contains("{i}") {
            env.value = env.value.replace("{i}", &i);
        }
    }
    let set = |name: &str, value: String| v1::EnvVar {
        name: name.into(),
        value,
    };
    spec.env.push(set("WASMOS_JOB", job.to_string()));
    spec.env.push(set("WASMOS_INDEX", i.clone()));
    spec.env.push(set("WASMOS_ATTEMPT", attempt.to_string()));
    spec.labels.insert("wasmos.job".into(), job.to_string());
    spec.labels.insert("wasmos.index".into(), i);
    spec
}
