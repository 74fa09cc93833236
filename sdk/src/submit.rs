//! Jobs the master runs: [`Client::submit`] hands it a [`JobSpec`] and
//! returns the job's id at once; the master places, retries and records
//! every index whether or not the client stays. Unlike a [`Job`](crate::Job),
//! which runs in the caller's process as a framework of its own.

use std::time::Duration;

use wasmos_proto::v1;
use wasmos_proto::v1::jobs_client::JobsClient;

use crate::client::Client;
use crate::connect::Channel;
use crate::error::{Error, Result};
use crate::job::{RetryPolicy, TaskTemplate};

/// A job for the master to run: `count` indices of one template. `{i}` in
/// the template's arguments and environment values becomes the index; the
/// task also finds it in `WASMOS_INDEX`, and its attempt in
/// `WASMOS_ATTEMPT`.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    spec: v1::JobSpec,
}

impl JobSpec {
    /// `count` indices of `template`, in role `default`, with the default
    /// retry policy.
    pub fn new(template: &TaskTemplate, count: u32) -> JobSpec {
        JobSpec {
            spec: v1::JobSpec {
                task: Some(template.spec(String::new())),
                count,
                ..Default::default()
            },
        }
    }

    /// A name for people.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.spec.name = name.into();
        self
    }

    /// The role its tasks run in (the caller must hold it).
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.spec.role = role.into();
        self
    }

    /// Which failed indices run again, and how often.
    pub fn retry(mut self, policy: &RetryPolicy) -> Self {
        self.spec.retry = Some(policy.to_proto());
        self
    }

    /// Stop the job once this many indices failed for good.
    pub fn max_failed(mut self, n: u32) -> Self {
        self.spec.max_failed = n;
        self
    }

    /// Run at most this many indices at once.
    pub fn max_running(mut self, n: u32) -> Self {
        self.spec.max_running = n;
        self
    }

    /// Orders the caller's jobs in a role: higher first.
    pub fn priority(mut self, priority: i32) -> Self {
        self.spec.priority = priority;
        self
    }

    /// Fail what has not finished this long after submission.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.spec.deadline_ms = deadline.as_millis().max(1) as u64;
        self
    }

    /// Start once `job` succeeded (repeatable).
    pub fn after(mut self, job: impl Into<String>) -> Self {
        self.spec.after.push(job.into());
        self
    }

    /// Start once `job` ended, however it ended (repeatable).
    pub fn after_any(mut self, job: impl Into<String>) -> Self {
        self.spec.after_any.push(job.into());
        self
    }

    /// Start only if `job` (or another named so) failed.
    pub fn after_failed(mut self, job: impl Into<String>) -> Self {
        self.spec.after_failed.push(job.into());
        self
    }

    /// Run index i once index i of `job` succeeded.
    pub fn after_each(mut self, job: impl Into<String>) -> Self {
        self.spec.after_each = job.into();
        self
    }

    /// Submit held: nothing starts until released.
    pub fn hold(mut self) -> Self {
        self.spec.hold = true;
        self
    }

    /// A second submission with the same key answers the first job's id.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.spec.idempotency_key = key.into();
        self
    }

    /// The spec as it travels.
    pub fn to_proto(&self) -> v1::JobSpec {
        self.spec.clone()
    }
}

fn ended(job: &v1::JobSummary) -> bool {
    matches!(
        job.state(),
        v1::JobState::Succeeded | v1::JobState::Failed | v1::JobState::Cancelled
    )
}

impl Client {
    fn jobs_client(&self) -> JobsClient<Channel> {
        JobsClient::new(self.channel()).max_decoding_message_size(64 << 20)
    }

    /// Hands `job` to the master, which runs it; returns its id at once.
    pub async fn submit(&self, job: &JobSpec) -> Result<String> {
        let answer = self
            .jobs_client()
            .submit(v1::SubmitJobRequest {
                spec: Some(job.to_proto()),
            })
            .await
            .map_err(Error::rpc("Jobs.Submit"))?;
        Ok(answer.into_inner().job_id)
    }

    /// One job's summary.
    pub async fn job(&self, id: &str) -> Result<v1::JobSummary> {
        let job = self
            .jobs_client()
            .get(v1::JobRequest {
                job_id: id.to_string(),
                ..Default::default()
            })
            .await
            .map_err(Error::rpc("Jobs.Get"))?;
        Ok(job.into_inner())
    }

    /// Every job the caller may see, oldest first (page by page).
    pub async fn jobs(&self) -> Result<Vec<v1::JobSummary>> {
        let mut client = self.jobs_client();
        let mut jobs = Vec::new();
        let mut after = String::new();
        loop {
            let page = client
                .list(v1::ListJobsRequest {
                    after: after.clone(),
                    limit: 1000,
                })
                .await
                .map_err(Error::rpc("Jobs.List"))?
                .into_inner();
            jobs.extend(page.jobs);
            if page.next.is_empty() {
                return Ok(jobs);
            }
            after = page.next;
        }
    }

    /// Every index's outcome (`failed_only`: those that failed or were
    /// cancelled), page by page.
    pub async fn job_results(&self, id: &str, failed_only: bool) -> Result<Vec<v1::IndexResult>> {
        let mut client = self.jobs_client();
        let mut results = Vec::new();
        let mut from = 0;
        loop {
            let page = client
                .results(v1::JobResultsRequest {
                    job_id: id.to_string(),
                    from_index: from,
                    limit: 10_000,
                    failed_only,
                })
                .await
                .map_err(Error::rpc("Jobs.Results"))?
                .into_inner();
            results.extend(page.results);
            if page.next_index == 0 {
                return Ok(results);
            }
            from = page.next_index;
        }
    }

    /// Waits for a job to end, asking every `poll`; its last summary.
    pub async fn wait_job(&self, id: &str, poll: Duration) -> Result<v1::JobSummary> {
        loop {
            let job = self.job(id).await?;
            if ended(&job) {
                return Ok(job);
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Kills what runs of a job and starts nothing more.
    pub async fn cancel_job(&self, id: &str) -> Result<v1::JobSummary> {
        let job = self
            .jobs_client()
            .cancel(v1::JobRequest {
                job_id: id.to_string(),
                ..Default::default()
            })
            .await
            .map_err(Error::rpc("Jobs.Cancel"))?;
        Ok(job.into_inner())
    }

    /// Holds a job: nothing more of it starts until released.
    pub async fn hold_job(&self, id: &str) -> Result<v1::JobSummary> {
        let job = self
            .jobs_client()
            .hold(v1::JobRequest {
                job_id: id.to_string(),
                ..Default::default()
            })
            .await
            .map_err(Error::rpc("Jobs.Hold"))?;
        Ok(job.into_inner())
    }

    /// Runs a job's failed indices again (with `cancelled`, its cancelled
    /// ones too), each as a new attempt.
    pub async fn retry_job(&self, id: &str, cancelled: bool) -> Result<v1::JobSummary> {
        let job = self
            .jobs_client()
            .retry(v1::RetryJobRequest {
                job_id: id.to_string(),
                cancelled,
            })
            .await
            .map_err(Error::rpc("Jobs.Retry"))?;
        Ok(job.into_inner())
    }

    /// Lets a held job start again.
    pub async fn release_job(&self, id: &str) -> Result<v1::JobSummary> {
        let job = self
            .jobs_client()
            .release(v1::JobRequest {
                job_id: id.to_string(),
                ..Default::default()
            })
            .await
            .map_err(Error::rpc("Jobs.Release"))?;
        Ok(job.into_inner())
    }
}
