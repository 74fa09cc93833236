//! `wasmos token`, `login`, `whoami` and `audit`: the credentials of a TLS
//! cluster and what was done with them.

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
    /// Make a token and print it (its secret is shown only now). Needs an
    /// admin token. Exactly one of --principal, --admin, --read-only or
    /// --agent says what it is for.
    Create(CreateArgs),
    /// List tokens: accessor, kind, principal, roles, expiry (never
    /// secrets). Needs an admin or read-only token.
    List(ListTokensArgs),
    /// End a token by accessor: its next call fails and the streams it
    /// opened close. Needs an admin token.
    Revoke {
        /// The token's accessor (the part before the `.`; see `token list`).
        accessor: String,
        #[command(flatten)]
        master: MasterArg,
    },
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["principal", "admin", "read_only", "agent"])))]
struct CreateArgs {
    /// A token for a framework or CLI user named PRINCIPAL: it subscribes
    /// only in --roles and sees and touches only its own frameworks' tasks.
    #[arg(long, value_name = "PRINCIPAL", requires = "roles")]
    principal: Option<String>,
    /// The roles a --principal token may subscribe in, e.g. `batch,ci`.
    #[arg(long, value_delimiter = ',', requires = "principal")]
    roles: Vec<String>,
    /// An operator token that may do everything.
    #[arg(long)]
    admin: bool,
    /// An operator token that lists and reads everything and changes nothing.
    #[arg(long)]
    read_only: bool,
    /// A join token for agents: prints the join string that
    /// `wasmos agent --join` takes (masters, CA pin, token).
    #[arg(long)]
    agent: bool,
    /// How long the token can be used [default: 1h for --agent, else
    /// forever]. `0` never expires.
    #[arg(long, value_parser = cli_args::duration)]
    ttl: Option<Duration>,
    /// How many agents may join with it (--agent).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    uses: u32,
    /// The most an agent that joins with it may advertise, e.g.
    /// `cpus:64,mem:256GiB` (--agent; default: no limit).
    #[arg(long, value_parser = |s: &str| Resources::parse(s), requires = "agent")]
    max_resources: Option<Resources>,
    #[command(flatten)]
    master: MasterArg,
}

#[derive(clap::Args, Debug)]
struct ListTokensArgs {
    #[command(flatten)]
    master: MasterArg,
    /// Print one JSON object per token.
    #[arg(long)]
    json: bool,
}

pub async fn token(args: TokenArgs) -> anyhow::Result<()> {
    match args.action {
        TokenAction::Create(args) => create(args).await,
        TokenAction::List(args) => list(args).await,
        TokenAction::Revoke { accessor, master } => {
            master
                .operator()
                .await?
                .revoke_token(v1::RevokeTokenRequest {
                    accessor: accessor.clone(),
                })
                .await
                .map_err(ops::grpc)?;
            println!("token {accessor} revoked");
            Ok(())
        }
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let kind = if args.agent {
        v1::TokenKind::AgentJoin
    } else if args.admin {
        v1::TokenKind::Admin
    } else if args.read_only {
        v1::TokenKind::ReadOnly
    } else {
        v1::TokenKind::Principal
    };
    let made = args
        .master
        .operator()
        .await?
        .create_token(v1::CreateTokenRequest {
            kind: kind as i32,
            ttl_ms: args.ttl.map_or(0, |ttl| ttl.as_millis() as u64),
            uses: args.uses,
            max_resources: args.max_resources.as_ref().map(Into::into),
            principal: args.principal.clone().unwrap_or_default(),
            roles: args.roles.clone(),
        })
        .await
        .map_err(ops::grpc)?
        .into_inner();
    let ttl = if made.expires_ms == 0 {
        "never expires".to_string()
    } else {
        format!(
            "valid for {}",
            humantime::format_duration(args.ttl.unwrap_or(Duration::from_secs(3600)))
        )
    };
    if kind == v1::TokenKind::AgentJoin {
        println!("{}", made.join);
        eprintln!(
            "join token {} for {} agent(s), {ttl}: pass it to `wasmos agent --join`",
            made.accessor, args.uses,
        );
    } else {
        println!("{}", made.token);
        let what = match kind {
            v1::TokenKind::Admin => "admin token".to_string(),
            v1::TokenKind::ReadOnly => "read-only token".to_string(),
            _ => format!(
                "token of principal {} (roles {})",
                args.principal.unwrap_or_default(),
                args.roles.join(", ")
            ),
        };
        eprintln!(
            "{what} {}, {ttl}: shown only now; pass it as --token, WASMOS_TOKEN or to `wasmos login`",
            made.accessor
        );
    }
    Ok(())
}

async fn list(args: ListTokensArgs) -> anyhow::Result<()> {
    let tokens = args
        .master
        .operator()
        .await?
        .list_tokens(v1::ListTokensRequest {})
        .await
        .map_err(ops::grpc)?
        .into_inner()
        .tokens;
    if !args.json {
        println!(
            "{:<18} {:<10} {:<16} {:<20} {:<22}",
            "ACCESSOR", "KIND", "PRINCIPAL", "ROLES", "EXPIRES"
        );
    }
    for t in tokens {
        let kind = match t.kind() {
            v1::TokenKind::Admin => "admin",
            v1::TokenKind::ReadOnly => "read-only",
            v1::TokenKind::Principal => "principal",
            v1::TokenKind::AgentJoin => "agent-join",
            v1::TokenKind::Unspecified => "?",
        };
        let expires = ops::wall_time(t.expires_ms).unwrap_or_else(|| "never".into());
        if args.json {
            println!(
                "{}",
                serde_json::json!({"accessor": t.accessor, "kind": kind, "principal": t.principal,
                    "roles": t.roles, "created_ms": t.created_ms, "expires_ms": t.expires_ms,
                    "uses_left": t.uses_left})
            );
        } else {
            println!(
                "{:<18} {:<10} {:<16} {:<20} {:<22}",
                t.accessor,
                kind,
                t.principal,
                t.roles.join(","),
                expires
            );
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct WhoAmIArgs {
    #[command(flatten)]
    master: MasterArg,
}

/// Says who the CLI is to the master and what it may do.
pub async fn whoami(args: WhoAmIArgs) -> anyhow::Result<()> {
    let me = args
        .master
        .operator()
        .await?
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .map_err(ops::grpc)?
        .into_inner();
    let kind = match me.kind() {
        v1::TokenKind::Admin => "admin",
        v1::TokenKind::ReadOnly => "read-only",
        _ => "principal",
    };
    print!("{} ({kind}", me.principal);
    if !me.roles.is_empty() {
        print!(", roles {}", me.roles.join(", "));
    }
    if !me.accessor.is_empty() {
        print!(", token {}", me.accessor);
    }
    match ops::wall_time(me.expires_ms) {
        Some(at) => println!(", expires {at})"),
        None => println!(")"),
    }
    for line in me.may {
        println!("  may {line}");
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    master: MasterArg,
    /// Only entries newer than this, e.g. `1h` or `30m`.
    #[arg(long, value_parser = cli_args::duration)]
    since: Option<Duration>,
    /// At most this many of the newest entries.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
}

/// Prints the master's audit log, one JSON object per line. Needs an admin
/// or read-only token.
pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let since_ms = args.since.map_or(0, |since| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.saturating_sub(since).as_millis() as u64
    });
    let read = args
        .master
        .operator()
        .await?
        .read_audit(v1::ReadAuditRequest {
            since_ms,
            limit: args.limit,
        })
        .await
        .map_err(ops::grpc)?
        .into_inner();
    if let Some(note) = dropped_note(&read, since_ms, args.limit) {
        eprintln!("{note}");
    }
    if read.leading_since_ms > since_ms {
        eprintln!(
            "note: these are the leading master's lines; it has led since {}, and lines of \
             earlier leaders are in their own audit.log (`wasmos masters` lists the masters)",
            ops::wall_time(read.leading_since_ms)
                .unwrap_or_else(|| format!("{} ms", read.leading_since_ms))
        );
    }
    for entry in read.entries {
        println!("{entry}");
    }
    Ok(())
}

/// A note for stderr (stdout stays JSON lines) when the range asked for
/// reaches back past what the log still keeps: rotation deleted older
/// lines, so "nothing there" would be a lie.
fn dropped_note(read: &v1::ReadAuditResponse, since_ms: u64, limit: u32) -> Option<String> {
    let reaches_back = read.dropped_until_ms > 0
        && since_ms <= read.dropped_until_ms
        && read.entries.len() < limit as usize;
    reaches_back.then(|| {
        let at = |ms| ops::wall_time(ms).unwrap_or_else(|| format!("{ms} ms"));
        format!(
            "note: the audit log keeps a size budget; lines up to {} were deleted by rotation \
             (the oldest kept is from {})",
            at(read.dropped_until_ms),
            at(read.oldest_kept_ms)
        )
    })
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
        .who_am_i(v1::WhoAmIRequest {})
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
