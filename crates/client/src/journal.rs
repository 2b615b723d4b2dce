//! The file that keeps usage recorded while Tally was unreachable, so it
//! survives the process (see [`crate::ClientConfig::offline_journal`]).
//!
//! Each entry is what the usage counts against the allowance (8 bytes,
//! little-endian) and the `UsageRecord`, length-delimited. A record is
//! appended and fsynced before the action's result is returned; once
//! Tally has answered for records, the file is rewritten with the rest
//! (a temporary file, fsynced, renamed over it). An entry cut short by a
//! crash mid-append was never acknowledged: loading drops it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use tally_api::v1 as pb;

pub(crate) struct Journal {
    path: PathBuf,
}

impl Journal {
    /// Opens the journal at `path` (created when missing) and returns what
    /// it holds, oldest first.
    pub(crate) fn open(path: &Path) -> io::Result<(Journal, Vec<(pb::UsageRecord, i64)>)> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let entries = decode(&bytes);
        let journal = Journal {
            path: path.to_owned(),
        };
        // Rewritten whole: a torn entry at the end goes, and a later append
        // starts on a clean boundary.
        journal.rewrite(entries.iter().map(|(r, m)| (r, *m)))?;
        Ok((journal, entries))
    }

    /// Appends one record, durably.
    pub(crate) fn append(&self, record: &pb::UsageRecord, millicredits: i64) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        file.write_all(&encode(record, millicredits))?;
        file.sync_data()
    }

    /// Replaces the journal with `entries`, durably.
    pub(crate) fn rewrite<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a pb::UsageRecord, i64)>,
    ) -> io::Result<()> {
        let mut bytes = Vec::new();
        for (record, millicredits) in entries {
            bytes.extend(encode(record, millicredits));
        }
        let mut temporary = self.path.clone().into_os_string();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let mut file = File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, &self.path)?;
        // The rename itself is durable once the folder is.
        if let Some(folder) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(folder)?.sync_all()?;
        }
        Ok(())
    }
}

fn encode(record: &pb::UsageRecord, millicredits: i64) -> Vec<u8> {
    let mut bytes = millicredits.to_le_bytes().to_vec();
    record
        .encode_length_delimited(&mut bytes)
        .expect("a Vec grows");
    bytes
}

/// Every whole entry, up to the first that is cut short or unreadable.
fn decode(mut bytes: &[u8]) -> Vec<(pb::UsageRecord, i64)> {
    let mut entries = Vec::new();
    while bytes.len() > 8 {
        let millicredits = i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let mut rest = &bytes[8..];
        let Ok(record) = pb::UsageRecord::decode_length_delimited(&mut rest) else {
            break;
        };
        entries.push((record, millicredits));
        bytes = rest;
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, amount: i64) -> pb::UsageRecord {
        pb::UsageRecord {
            idempotency_key: key.into(),
            account_id: "acme".into(),
            member_id: "alice".into(),
            action: "article.draft".into(),
            amount_millicredits: Some(amount),
            ..Default::default()
        }
    }

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_dropped() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("usage.journal");
        let (journal, loaded) = Journal::open(&path).unwrap();
        assert!(loaded.is_empty());
        journal.append(&record("a", 1_500), 1_500).unwrap();
        journal.append(&record("b", 700), 2_000).unwrap();
        // A crash in the middle of a third append.
        let whole = fs::read(&path).unwrap();
        let third = encode(&record("c", 9), 9);
        let mut torn = whole.clone();
        torn.extend(&third[..third.len() - 3]);
        fs::write(&path, &torn).unwrap();

        let (journal, loaded) = Journal::open(&path).unwrap();
        assert_eq!(
            loaded,
            vec![(record("a", 1_500), 1_500), (record("b", 700), 2_000)]
        );
        assert_eq!(fs::read(&path).unwrap(), whole, "the torn entry is gone");
        journal.append(&record("d", 5), 5).unwrap();
        journal.rewrite([(&record("d", 5), 5)]).unwrap();
        let (_, loaded) = Journal::open(&path).unwrap();
        assert_eq!(loaded, vec![(record("d", 5), 5)]);
    }
}
