//! The Rust SDK for wasmos frameworks.
//!
//! A *framework* gets resources from the master as offers and launches
//! WebAssembly tasks on them. This crate gives you three levels:
//!
//! - [`Client`]: a connection to a master; uploads modules and input files
//!   ([`Client::upload`], which also accepts `.wat` text).
//! - [`Scheduler`] + [`Events`]: a framework session
//!   ([`Client::subscribe`]). You see every offer and status update and make
//!   every decision; the session acknowledges updates in batches, detects a
//!   dead stream by missing heartbeats, re-subscribes with the same framework
//!   id and reconciles your tasks.
//! - [`Job`]: N tasks run to completion for you: placement on offers,
//!   retries of lost tasks, progress callbacks, cancellation, teardown.
//! - [`Client::submit`] of a [`JobSpec`]: N indices the master itself runs
//!   (retries, dependencies, every index's outcome kept), with nothing of
//!   yours running meanwhile; [`Client::wait_job`], [`Client::job_results`].
//!
//! # Example
//!
//! Run a module ten times and print each outcome (start a master with
//! `wasmos master` and an agent with `wasmos agent` first):
//!
//! ```no_run
//! use wasmos_sdk::{Client, Job, TaskTemplate};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), wasmos_sdk::Error> {
//!     let client = Client::connect("http://127.0.0.1:5050").await?;
//!     // `.wat` text or a `.wasm` binary; uploaded once, named by its sha256.
//!     let module = client
//!         .upload(r#"(module (func (export "_start")) (memory (export "memory") 1))"#)
//!         .await?;
//!     let template = TaskTemplate::new(module.digest).cpus(0.1).mem(16 << 20);
//!     let report = Job::new("hello")
//!         .tasks((0..10).map(|i| template.clone().arg(i.to_string())))
//!         .on_update(|u| eprintln!("{}/{} done", u.done, u.total))
//!         .run(&client)
//!         .await?;
//!     for task in &report.tasks {
//!         println!("{} {:?} exit={:?}", task.task_id, task.state, task.exit_code);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! The lower level, for frameworks that decide for themselves:
//!
//! ```no_run
//! use wasmos_sdk::{Client, Event, FrameworkConfig};
//!
//! # async fn example(client: Client) -> Result<(), wasmos_sdk::Error> {
//! let (scheduler, mut events) = client
//!     .subscribe(FrameworkConfig::new("my-framework").role("batch"))
//!     .await?;
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Offers(offers) => {
//!             let ids = offers.into_iter().map(|o| o.offer_id).collect();
//!             scheduler.decline(ids, Some(30.0)).await?;
//!         }
//!         Event::Update(status) => println!("{} is {:?}", status.task_id, status.state()),
//!         Event::Error(message) => return Err(wasmos_sdk::Error::SubscriptionEnded(message)),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The wire types are re-exported as [`proto`] (`wasmos.v1`).

#![warn(missing_docs)]

mod client;
mod connect;
mod error;
mod job;
mod scheduler;
mod submit;

pub use client::{Client, UPLOAD_CHUNK, Uploaded, digest_of, module_bytes};
pub use connect::{Channel, ConnectOptions, Credentials, Profile};
pub use error::{Error, Result};
pub use job::{
    CancelHandle, Job, JobReport, JobUpdate, Master, RetryPolicy, TaskOutcome, TaskTemplate,
};
pub use scheduler::{Event, Events, FrameworkConfig, Scheduler, SessionStats, is_terminal};
pub use submit::JobSpec;

/// The `wasmos.v1` wire types (offers, task specs, statuses, ...).
pub use wasmos_proto::v1 as proto;
