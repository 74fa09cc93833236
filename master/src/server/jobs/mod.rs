//! The `Jobs` service: submit a job and walk away. Calls go to the
//! [`driver`], which owns the job service's state machine; this file
//! checks who may do what and audits the changes.

pub mod driver;
mod usage;

use std::sync::Arc;

use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use wasmos_proto::v1;
use wasmos_proto::v1::jobs_server;

use super::audit::{Actor, Audit};
use super::trust::principal_of;
use crate::access::Principal;
use crate::jobs::{Job, submit};
use driver::Call;
pub use driver::JobsHandle;

/// Jobs one page lists at most, and by default.
const MAX_LIST: usize = 1000;
const DEFAULT_LIST: usize = 100;
/// Indices one page of results holds at most, and by default.
const MAX_RESULTS: u32 = 10_000;
const DEFAULT_RESULTS: u32 = 1000;

pub struct JobsService {
    pub jobs: JobsHandle,
    pub audit: Arc<Audit>,
    /// The registry, for the usage ledger.
    pub registry: Arc<dyn crate::store::Store>,
}

/// A job's summary as the wire carries it.
fn summary(job: &Job, framework_id: &str) -> v1::JobSummary {
    let counts = job.indices.counts();
    v1::JobSummary {
        job_id: job.id.clone(),
        name: job.spec.name.clone(),
        role: job.owner.role.clone(),
        owner: job.owner.principal.clone(),
        state: job.state as i32,
        reason: job.reason.clone(),
        held: job.held,
        count: job.indices.count(),
        succeeded: counts.succeeded,
        failed: counts.failed,
        cancelled: counts.cancelled,
        running: job.indices.running() as u32,
        submitted_ms: job.submitted.millis(),
        ended_ms: job.ended_at.map_or(0, |t| t.millis()),
        priority: job.spec.priority,
        framework_id: framework_id.to_string(),
        expired: job.expired,
        detail: None,
        outputs_dropped: job.outputs_dropped,
    }
}

/// What a job's indices did, in all: one pass over their outcomes.
fn detail(job: &Job) -> v1::JobDetail {
    let mut ends: std::collections::BTreeMap<(i32, i32), u32> = Default::default();
    let mut run_times = Vec::new();
    let mut detail = v1::JobDetail::default();
    for (index, outcome) in job.indices.outcomes() {
        detail.attempts += u64::from(outcome.attempts);
        match outcome.state {
            v1::IndexState::Succeeded | v1::IndexState::Failed | v1::IndexState::Cancelled => {
                if outcome.attempts > 0 {
                    *ends
                        .entry((outcome.task_state, outcome.reason))
                        .or_default() += 1;
                    run_times.push(outcome.wall_time_ms);
                    detail.fuel += outcome.fuel;
                    detail.cpu_time_ms += outcome.cpu_time_ms;
                }
                if outcome.state != v1::IndexState::Succeeded && detail.failed_indices.len() < 100 {
                    detail.failed_indices.push(index);
                }
            }
            v1::IndexState::Pending | v1::IndexState::Running => {}
        }
    }
    run_times.sort_unstable();
    let at = |p: f64| {
        run_times
            .get(((run_times.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    };
    detail.run_time_p50_ms = at(0.5);
    detail.run_time_p99_ms = at(0.99);
    detail.ends = ends
        .into_iter()
        .map(|((state, reason), count)| v1::StateReasonCount {
            state,
            reason,
            count,
        })
        .collect();
    detail
}

/// Fills in the stdout heads the registry keeps for a page of results
/// (those of each index's last attempt).
fn with_outputs(
    registry: &dyn crate::store::Store,
    job_id: &str,
    mut page: v1::JobResultsResponse,
) -> Result<v1::JobResultsResponse, Status> {
    let (Some(first), Some(last)) = (page.results.first(), page.results.last()) else {
        return Ok(page);
    };
    let unreadable = |e| Status::unavailable(format!("the job's outputs cannot be read: {e}"));
    let span = (last.index - first.index + 1) as usize;
    let records = if span <= 4 * page.results.len() {
        // A dense page: one range read.
        let from = crate::store::chunk_key(job_id, first.index);
        let to = crate::store::chunk_key(job_id, last.index + 1);
        registry
            .range(crate::store::Table::JobOutputs, &from, Some(&to), span)
            .map_err(unreadable)?
    } else {
        // A sparse one (failed indices only): one read per index.
        let mut records = Vec::with_capacity(page.results.len());
        for result in &page.results {
            let key = crate::store::chunk_key(job_id, result.index);
            if let Some(record) = registry
                .get(crate::store::Table::JobOutputs, &key)
                .map_err(unreadable)?
            {
                records.push(record);
            }
        }
        records
    };
    let mut heads: std::collections::HashMap<u32, v1::StoredJobOutput> = records
        .into_iter()
        .filter_map(|r| match r {
            crate::store::Record::JobOutput(o) => Some((o.index, o)),
            _ => None,
        })
        .collect();
    for result in &mut page.results {
        let attempts = result.outcome.as_ref().map_or(0, |o| o.attempts);
        if let Some(kept) = heads.remove(&result.index)
            && kept.attempt == attempts
        {
            result.stdout_head = Some(kept.stdout_head);
        }
    }
    Ok(page)
}

impl JobsService {
    /// Reads the jobs in the driver; `None` when it has stopped.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&crate::jobs::Jobs, &dyn Fn(&Job) -> String) -> T + Send + 'static,
    ) -> Result<T, Status> {
        self.jobs
            .ask(|reply| {
                Call::Read(Box::new(move |jobs, frameworks| {
                    let framework_of = |job: &Job| {
                        frameworks
                            .get(&job.owner)
                            .map_or_else(String::new, |f| f.to_string())
                    };
                    let value = read(jobs, &framework_of);
                    Box::new(move || {
                        let _ = reply.send(value);
                    })
                }))
            })
            .await
    }

    /// Reads job `id`'s per-index outcomes with `read` (`None`: no such
    /// job): brought into memory first, and read again should they leave
    /// it before the read runs (the job ended and was written meanwhile, or
    /// other jobs were read since).
    async fn read_loaded<T: Send + 'static>(
        &self,
        id: &str,
        read: impl Fn(&Job) -> T + Clone + Send + 'static,
    ) -> Result<Option<T>, Status> {
        for _ in 0..3 {
            self.jobs.load(&self.registry, id).await?;
            let (id, read) = (id.to_string(), read.clone());
            let answer = self
                .read(move |jobs, _| match jobs.job(&id) {
                    Some(job) if !job.loaded && !job.expired => None,
                    found => Some(found.map(read)),
                })
                .await?;
            if let Some(answer) = answer {
                return Ok(answer);
            }
        }
        Err(Status::unavailable(format!(
            "the results of {id} kept leaving the master's memory while being read; try again"
        )))
    }

    /// The summary of a job `who` may see, or NOT_FOUND (also for one it
    /// may not see: whose jobs exist is not its business).
    async fn visible(&self, who: &Principal, id: &str) -> Result<v1::JobSummary, Status> {
        let id = id.to_string();
        let found = self
            .read(move |jobs, framework_of| {
                jobs.job(&id).map(|job| summary(job, &framework_of(job)))
            })
            .await?;
        match found {
            Some(job) if who.may_see(&job.owner) => Ok(job),
            _ => Err(Status::not_found("no such job")),
        }
    }

    /// A change to a job `who` may use: held, released or cancelled.
    async fn change(
        &self,
        request: Request<v1::JobRequest>,
        call: &str,
        make: impl FnOnce(String, String, oneshot::Sender<bool>) -> Call,
    ) -> Result<Response<v1::JobSummary>, Status> {
        let who = principal_of(&request)?;
        let id = request.into_inner().job_id;
        let result = async {
            let job = self.visible(&who, &id).await?;
            who.require_use(&format!("{call} of {id}"), &job.owner)
                .map_err(|d| Status::permission_denied(d.0))?;
            let why = format!("cancelled by {}", who.name);
            let changed = self.jobs.ask(|reply| make(id.clone(), why, reply)).await?;
            if !changed {
                return Err(Status::failed_precondition(format!(
                    "{id} has ended: nothing to change"
                )));
            }
            self.visible(&who, &id).await
        }
        .await;
        self.audit.record(
            Actor::Principal(&who),
            call,
            serde_json::json!({"job_id": id}),
            &result,
        );
        result.map(Response::new)
    }
}

#[tonic::async_trait]
impl jobs_server::Jobs for JobsService {
    async fn submit(
        &self,
        request: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let who = principal_of(&request)?;
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("no job spec given"))?;
        let role = if spec.role.is_empty() {
            "default".to_string()
        } else {
            spec.role.clone()
        };
        let args = serde_json::json!({"name": spec.name, "role": role, "count": spec.count});
        let result = async {
            who.require_writer("Jobs.Submit")
                .map_err(|d| Status::permission_denied(d.0))?;
            who.require_role(&role)
                .map_err(|d| Status::permission_denied(d.0))?;
            // An index-wise dependency's outcomes must be in memory.
            let loaded = self
                .jobs
                .read_unloaded(&self.registry, vec![spec.after_each.clone()])
                .await?;
            self.jobs
                .ask(|reply| Call::Submit {
                    who: who.clone(),
                    spec: Box::new(spec),
                    loaded,
                    reply,
                })
                .await?
        }
        .await;
        self.audit
            .record(Actor::Principal(&who), "Jobs.Submit", args, &result);
        result.map(Response::new)
    }

    async fn list(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let who = principal_of(&request)?;
        let request = request.into_inner();
        let limit = match request.limit as usize {
            0 => DEFAULT_LIST,
            n => n.min(MAX_LIST),
        };
        let after = request.after;
        if !after.is_empty() && submit::parse_job_id(&after).is_none() {
            return Err(Status::invalid_argument(format!(
                "`{after}` is not a job id"
            )));
        }
        let page = self
            .read(move |jobs, framework_of| {
                let mut page: Vec<v1::JobSummary> = jobs
                    .jobs_after(Some(after.as_str()).filter(|a| !a.is_empty()))
                    .filter(|job| who.may_see(&job.owner.principal))
                    .take(limit + 1)
                    .map(|job| summary(job, &framework_of(job)))
                    .collect();
                let next = if page.len() > limit {
                    page.truncate(limit);
                    page.last().map(|j| j.job_id.clone()).unwrap_or_default()
                } else {
                    String::new()
                };
                v1::ListJobsResponse { jobs: page, next }
            })
            .await?;
        Ok(Response::new(page))
    }

    async fn get(
        &self,
        request: Request<v1::JobRequest>,
    ) -> Result<Response<v1::JobSummary>, Status> {
        let who = principal_of(&request)?;
        let v1::JobRequest {
            job_id,
            detail: with_detail,
        } = request.into_inner();
        let mut summary = self.visible(&who, &job_id).await?;
        if with_detail && !summary.expired {
            summary.detail = self.read_loaded(&job_id, detail).await?;
        }
        Ok(Response::new(summary))
    }

    async fn results(
        &self,
        request: Request<v1::JobResultsRequest>,
    ) -> Result<Response<v1::JobResultsResponse>, Status> {
        let who = principal_of(&request)?;
        let request = request.into_inner();
        let job = self.visible(&who, &request.job_id).await?;
        if job.expired {
            return Err(Status::failed_precondition(format!(
                "{} ended longer ago than the master's job retention: its per-index results are gone, its summary (`wasmos job show`) stays",
                job.job_id
            )));
        }
        let limit = match request.limit {
            0 => DEFAULT_RESULTS,
            n => n.min(MAX_RESULTS),
        };
        let page = self
            .read_loaded(&job.job_id, move |job| {
                let count = job.indices.count();
                let mut results = Vec::new();
                let mut index = request.from_index;
                while index < count && results.len() < limit as usize {
                    let outcome = job.indices.outcome(index);
                    let failed = matches!(
                        outcome.state,
                        v1::IndexState::Failed | v1::IndexState::Cancelled
                    );
                    if !request.failed_only || failed {
                        results.push(v1::IndexResult {
                            index,
                            stdout_head: None,
                            task_id: if outcome.attempts > 0 {
                                submit::task_id(&job.id, index, outcome.attempts)
                            } else {
                                String::new()
                            },
                            outcome: Some(v1::IndexOutcome {
                                state: outcome.state as i32,
                                task_state: outcome.task_state,
                                reason: outcome.reason,
                                exit_code: outcome.exit_code,
                                attempts: outcome.attempts,
                                agent_id: job.indices.agent(&outcome).to_string(),
                                usage: Some(v1::TaskUsage {
                                    cpu_time_ms: outcome.cpu_time_ms,
                                    wall_time_ms: outcome.wall_time_ms,
                                    fuel_consumed: outcome.fuel,
                                    ..Default::default()
                                }),
                            }),
                        });
                    }
                    index += 1;
                }
                v1::JobResultsResponse {
                    results,
                    next_index: if index < count { index } else { 0 },
                }
            })
            .await?
            .unwrap_or_default();
        let registry = self.registry.clone();
        let job_id = job.job_id.clone();
        let page = tokio::task::spawn_blocking(move || with_outputs(&*registry, &job_id, page))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(page))
    }

    async fn hold(
        &self,
        request: Request<v1::JobRequest>,
    ) -> Result<Response<v1::JobSummary>, Status> {
        self.change(request, "Jobs.Hold", |id, _, reply| Call::Hold {
            id,
            reply,
        })
        .await
    }

    async fn release(
        &self,
        request: Request<v1::JobRequest>,
    ) -> Result<Response<v1::JobSummary>, Status> {
        self.change(request, "Jobs.Release", |id, _, reply| Call::Release {
            id,
            reply,
        })
        .await
    }

    async fn usage(
        &self,
        request: Request<v1::UsageRequest>,
    ) -> Result<Response<v1::UsageResponse>, Status> {
        let who = principal_of(&request)?;
        let request = request.into_inner();
        let by = usage::By::parse(&request.by)?;
        let registry = self.registry.clone();
        let answer = tokio::task::spawn_blocking(move || {
            usage::read(&*registry, &who, request.since_ms, by)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(answer))
    }

    async fn retry(
        &self,
        request: Request<v1::RetryJobRequest>,
    ) -> Result<Response<v1::JobSummary>, Status> {
        let who = principal_of(&request)?;
        let v1::RetryJobRequest { job_id, cancelled } = request.into_inner();
        let result = async {
            let job = self.visible(&who, &job_id).await?;
            who.require_use(&format!("Jobs.Retry of {job_id}"), &job.owner)
                .map_err(|d| Status::permission_denied(d.0))?;
            // An index-wise dependent reruns what its counterpart
            // succeeded in: both are read.
            let id = job_id.clone();
            let after_each = self
                .read(move |jobs, _| {
                    jobs.job(&id)
                        .map(|j| j.spec.after_each.clone())
                        .unwrap_or_default()
                })
                .await?;
            let loaded = self
                .jobs
                .read_unloaded(&self.registry, vec![job_id.clone(), after_each])
                .await?;
            let reopened = self
                .jobs
                .ask(|reply| Call::Retry {
                    id: job_id.clone(),
                    cancelled,
                    loaded,
                    reply,
                })
                .await?;
            if reopened.is_none() {
                return Err(Status::failed_precondition(format!(
                    "{job_id} is still stopping: retry once it has ended"
                )));
            }
            self.visible(&who, &job_id).await
        }
        .await;
        self.audit.record(
            Actor::Principal(&who),
            "Jobs.Retry",
            serde_json::json!({"job_id": job_id, "cancelled": cancelled}),
            &result,
        );
        result.map(Response::new)
    }

    async fn cancel(
        &self,
        request: Request<v1::JobRequest>,
    ) -> Result<Response<v1::JobSummary>, Status> {
        self.change(request, "Jobs.Cancel", |id, why, reply| Call::Cancel {
            id,
            why,
            reply,
        })
        .await
    }
}
