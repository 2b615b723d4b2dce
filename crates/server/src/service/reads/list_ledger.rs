//! `ListLedger`: a page of the account's ledger, filtered.

use tally_api::v1 as pb;
use tally_projections::Projection;
use tally_projections::reads::{self, LedgerQuery};
use tonic::{Request, Response, Status};

use super::{deadline_of, unknown_account};
use crate::convert::{self, Validator};
use crate::service::Api;
use crate::{ServiceError, Store};

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1_000;
/// The most a page's entries take encoded. An entry lists the buckets it
/// drew from, so it may be tens of kilobytes (35 KB for 400 buckets), and
/// a thousand of them would pass the 4 MiB a gRPC client accepts by
/// default. A page that would grow past this ends early, with a token.
const MAX_PAGE_BYTES: usize = 2 << 20;

impl<S: Store> Api<S> {
    pub(in crate::service) async fn list_ledger(
        &self,
        request: Request<pb::ListLedgerRequest>,
    ) -> Result<Response<pb::ListLedgerResponse>, Status> {
        let deadline = deadline_of(&request);
        let pb::ListLedgerRequest {
            account_id,
            page_size,
            page_token,
            member_id,
            action,
            kinds,
            start_time,
            end_time,
            consistency,
        } = request.into_inner();
        let mut v = Validator::default();
        let account = v.account("account_id", &account_id);
        let limit = match usize::try_from(page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(size) if size <= MAX_PAGE_SIZE => size,
            _ => {
                v.violation(
                    "page_size",
                    format!("must be between 0 and {MAX_PAGE_SIZE}"),
                );
                DEFAULT_PAGE_SIZE
            }
        };
        let after_version = if page_token.is_empty() {
            0
        } else {
            parse_page_token(&page_token).unwrap_or_else(|| {
                v.violation("page_token", "is not a token this service issued");
                0
            })
        };
        let member = (!member_id.is_empty())
            .then(|| v.member("member_id", &member_id))
            .flatten();
        let action = (!action.is_empty())
            .then(|| v.action("action", &action))
            .flatten();
        let kinds = v.ledger_kinds("kinds", &kinds);
        let start = v.timestamp("start_time", start_time);
        let end = v.timestamp("end_time", end_time);
        let freshness = v.consistency("consistency", consistency.as_ref());
        let Some(account) = account else {
            return Err(v.into_error().into());
        };
        v.finish()?;
        self.fresh(Projection::Ledger, freshness, deadline).await?;
        let query = LedgerQuery {
            member,
            action,
            kinds,
            start,
            end,
            after_version,
            limit,
        };
        let page = reads::ledger_page(self.projections()?.store(), account.as_str(), &query)
            .await
            .map_err(ServiceError::from)?
            .ok_or_else(unknown_account)?;
        let test_clock = self.test_clock_of(&account).await?;
        let (entries, cut_after) = within_bytes(
            page.entries
                .iter()
                .map(|entry| (entry.version, convert::ledger_entry(entry))),
            MAX_PAGE_BYTES,
        );
        Ok(Response::new(pb::ListLedgerResponse {
            entries,
            next_page_token: cut_after
                .or(page.next_after_version)
                .map(page_token_after)
                .unwrap_or_default(),
            test_clock_id: convert::test_clock_id(test_clock.as_ref()),
        }))
    }
}

/// The entries, in order, while they fit in `max_bytes` encoded (the first
/// always, however large), and the version of the last one taken when
/// some were left out.
fn within_bytes(
    entries: impl Iterator<Item = (u64, pb::LedgerEntry)>,
    max_bytes: usize,
) -> (Vec<pb::LedgerEntry>, Option<u64>) {
    use prost::Message as _;
    let mut taken = Vec::new();
    let mut bytes = 0;
    let mut last = None;
    for (version, entry) in entries {
        // As a field of the response: a tag, a length, the entry.
        let len = entry.encoded_len();
        let size = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if !taken.is_empty() && bytes + size > max_bytes {
            return (taken, last);
        }
        bytes += size;
        last = Some(version);
        taken.push(entry);
    }
    (taken, None)
}

/// Page tokens are opaque to callers; inside, the stream version to
/// continue after. Stable: entries are only ever appended after it.
fn page_token_after(version: u64) -> String {
    format!("v1.{version}")
}

fn parse_page_token(token: &str) -> Option<u64> {
    token.strip_prefix("v1.")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn entry(note_bytes: usize) -> pb::LedgerEntry {
        pb::LedgerEntry {
            note: "n".repeat(note_bytes),
            ..Default::default()
        }
    }

    #[test]
    fn a_page_ends_before_it_passes_its_bytes() {
        let entries = (1..=10).map(|version| (version, entry(1_000)));
        let (taken, cut_after) = within_bytes(entries, 3_500);
        assert_eq!(taken.len(), 3);
        assert_eq!(cut_after, Some(3));
        let response = pb::ListLedgerResponse {
            entries: taken,
            next_page_token: String::new(),
            test_clock_id: String::new(),
        };
        assert!(response.encoded_len() <= 3_500);
    }

    #[test]
    fn a_page_that_fits_is_whole_and_one_entry_always_goes() {
        let (taken, cut_after) = within_bytes((1..=3).map(|v| (v, entry(10))), 1_000);
        assert_eq!((taken.len(), cut_after), (3, None));
        let (taken, cut_after) = within_bytes((7..=8).map(|v| (v, entry(5_000))), 1_000);
        assert_eq!((taken.len(), cut_after), (1, Some(7)));
    }
}
