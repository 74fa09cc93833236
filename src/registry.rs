//! `wasmos registry migrate`: moves a lone master's registry (redb, in its
//! work dir) into etcd, for masters that share it (`wasmos master --etcd`).

use std::path::PathBuf;
use std::time::Duration;

use wasmos_master::etcd::{Keys, endpoints};
use wasmos_master::store::{self, EtcdStore, RedbStore, Store, Table, Write};

/// Move a registry between stores.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Copy the registry of a stopped master (its work dir's
    /// registry.redb) into an empty prefix of etcd. Start the masters with
    /// --etcd afterwards, the first on this work dir (it holds the admin
    /// token and the artifacts).
    Migrate {
        /// The stopped master's work dir.
        #[arg(long, default_value = "wasmos-master")]
        work_dir: PathBuf,
        /// etcd's client URLs (`http://127.0.0.1:2379[,...]`, or https://
        /// with --etcd-ca).
        #[arg(long, value_name = "URL[,URL...]")]
        etcd: String,
        #[command(flatten)]
        etcd_tls: crate::etcd_tls::EtcdTlsArgs,
        /// The cluster's key prefix in etcd; it must hold nothing yet.
        #[arg(long, default_value = "/wasmos")]
        etcd_prefix: String,
    },
}

/// How many records one commit into etcd carries.
const BATCH: usize = 1000;

pub fn run(args: Args) -> anyhow::Result<()> {
    let Command::Migrate {
        work_dir,
        etcd,
        etcd_tls,
        etcd_prefix,
    } = args.command;
    let path = RedbStore::path_in(&work_dir);
    if !path.exists() {
        anyhow::bail!(
            "no registry at {}: give the master's --work-dir",
            path.display()
        );
    }
    let source = RedbStore::open(&path)?;
    let keys = Keys::new(&etcd_prefix)?;
    let target = EtcdStore::connect(
        &endpoints(&etcd, etcd_tls.load()?.as_ref())?,
        keys.clone(),
        None,
        Duration::from_secs(10),
    )?;
    if target.newest_revision()? != 0 {
        anyhow::bail!(
            "etcd already holds a registry under {}: migrate only into an empty prefix (or pick another --etcd-prefix)",
            keys.prefix()
        );
    }
    // The header goes last: a migration cut short leaves records without
    // a header, which a master refuses to start on.
    let mut header = Vec::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut counts = Vec::new();
    for table in Table::ALL {
        let mut count = 0usize;
        let mut failed = None;
        store::scan(&source, table, "", None, &mut |record| {
            if failed.is_some() {
                return;
            }
            count += 1;
            if table == Table::Meta {
                header.push(Write::Put(record));
                return;
            }
            batch.push(Write::Put(record));
            if batch.len() == BATCH
                && let Err(e) = target.commit(&std::mem::take(&mut batch))
            {
                failed = Some(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        if table != Table::Meta && count > 0 {
            counts.push(format!("{count} {table}"));
        }
    }
    target.commit(&batch)?;
    if header.is_empty() {
        anyhow::bail!(
            "{} has no header: not a registry a master wrote",
            path.display()
        );
    }
    target.commit(&header)?;
    println!(
        "migrated {} into etcd under {}: {}",
        path.display(),
        keys.prefix(),
        if counts.is_empty() {
            "no records but the header".to_string()
        } else {
            counts.join(", ")
        }
    );
    Ok(())
}
