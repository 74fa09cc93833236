//! `wasmos token` and `wasmos login`: the credentials of a TLS cluster.

use std::path::PathBuf;
use std::time::Duration;

use wasmos_master::Resources;
use wasmos_proto::v1;
use wasmos_sdk::{ConnectOptions, Profile};

use crate::cli_args;
use crate::ops::{self, MasterArg};

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    action: TokenAction,
}

#[derive(clap::Subcommand, Debug)]
enum TokenAction {
    /// Make a token and print it (its secret is shown only now). Needs the
    /// admin token.
    Create(CreateArgs),
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// A join token for agents: prints the join string that
    /// `wasmos agent --join` takes (masters, CA pin, token).
    #[arg(long, required = true)]
    agent: bool,
    /// How long the token can be used.
    #[arg(long, default_value = "1h", value_parser = cli_args::duration)]
    ttl: Duration,
    /// How many agents may join with it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    uses: u32,
    /// The most an agent that joins with it may advertise, e.g.
    /// `cpus:64,mem:256GiB` (default: no limit).
    #[arg(long, value_parser = |s: &str| Resources::parse(s))]
    max_resources: Option<Resources>,
    #[command(flatten)]
    master: MasterArg,
}

pub async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let TokenAction::Create(args) = args.action;
    debug_assert!(args.agent);
    let made = args
        .master
        .operator()
        .await?
        .create_token(v1::CreateTokenRequest {
            kind: v1::TokenKind::AgentJoin as i32,
            ttl_ms: args.ttl.as_millis() as u64,
            uses: args.uses,
            max_resources: args.max_resources.as_ref().map(Into::into),
        })
        .await
        .map_err(ops::grpc)?
        .into_inner();
    println!("{}", made.join);
    eprintln!(
        "join token {} for {} agent(s), valid for {}: pass it to `wasmos agent --join`",
        made.accessor,
        args.uses,
        humantime::format_duration(args.ttl)
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The master's URL, e.g. https://master.example:5050.
    url: String,
    /// The cluster's CA certificate (PEM; a master writes it to
    /// <work-dir>/ca.pem).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The token (e.g. the contents of <work-dir>/admin.token).
    #[arg(long, env = "WASMOS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Checks that the master answers with these credentials, then saves them
/// in the profile the CLI and SDK read.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let mut options = ConnectOptions::default();
    if let Some(ca) = &args.ca {
        options = options.ca_file(ca)?;
    }
    options.token = args.token.map(|t| t.trim().to_string());
    let client = ops::client(&args.url, options.clone()).await?;
    ops::operator_of(&client)
        .list_roles(v1::ListRolesRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("the master refused these credentials: {}", s.message()))?;
    let path = Profile {
        master: Some(args.url.clone()),
        ca: options.ca_pem,
        token: options.token,
    }
    .save()?;
    println!("logged in to {}; saved in {}", args.url, path.display());
    Ok(())
}
