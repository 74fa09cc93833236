//! Paging through the master's list calls (`ps`, `agents`, `frameworks`):
//! a page of `--page-size` rows per call, until the listing ends or
//! `--limit` rows came, so no answer grows with the cluster.

use wasmos_master::limits::MAX_PAGE;

use crate::ops::grpc;

/// How a listing command pages through the master's answer.
#[derive(clap::Args, Debug, Clone)]
pub struct Paging {
    /// Print at most this many rows [default: all].
    #[arg(long)]
    pub limit: Option<usize>,
    /// Rows asked of the master per call (at most 5,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=MAX_PAGE as i64))]
    pub page_size: u32,
}

/// One page as a list call answers it: its rows, the token of the next
/// page (empty on the last) and how many rows match in all.
pub type Answer<T> = (Vec<T>, String, u64);

impl Paging {
    /// Calls `fetch(page_size, page_token)` page after page; returns the
    /// rows and how many matched in all.
    pub async fn collect<T>(
        &self,
        mut fetch: impl AsyncFnMut(u32, String) -> Result<Answer<T>, tonic::Status>,
    ) -> anyhow::Result<(Vec<T>, u64)> {
        let mut rows = Vec::new();
        let mut token = String::new();
        let mut matching = 0;
        loop {
            // A master that answered more than asked leaves nothing left.
            let left = self
                .limit
                .map_or(usize::MAX, |l| l.saturating_sub(rows.len()));
            let size = left.min(self.page_size as usize);
            if size == 0 {
                break;
            }
            let (mut page, next, all) = fetch(size as u32, token).await.map_err(grpc)?;
            matching = all;
            rows.append(&mut page);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        if let Some(limit) = self.limit {
            rows.truncate(limit);
        }
        Ok((rows, matching))
    }

    /// Says on stderr when `--limit` left rows out.
    pub fn note_left_out(&self, shown: usize, matching: u64, what: &str) {
        if (shown as u64) < matching {
            eprintln!(
                "{shown} of {matching} {what} shown (--limit {})",
                self.limit.unwrap_or(shown)
            );
        }
    }
}
