//! The node's own access log: every SQL statement, fragment and refused call, one JSON
//! line each, hash-chained like the city's log so that a removed or altered line shows.
//! The city's replicated log records what the city asked; this one records what reached
//! the node, including calls that never passed through the city.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// One access.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessRecord {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The authenticated user, or `unknown`.
    pub user: String,
    /// `sql`, `fragment` or `access`.
    pub action: String,
    /// The statement, the query id, or the refused token's hash prefix.
    pub detail: String,
    /// `allowed`, or `refused: …` with the rule.
    pub decision: String,
    /// SHA-256 of the previous line's record, empty for the first.
    pub previous: String,
}

/// Appends access records to a file; without one, records go to the log output only.
#[derive(Debug)]
pub struct NodeAudit {
    file: Option<Mutex<(File, String)>>,
    path: Option<PathBuf>,
}

impl NodeAudit {
    /// Appends to `path`, continuing its chain; `None` keeps records in the log output.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self {
                file: None,
                path: None,
            });
        };
        let failed = |source: std::io::Error| {
            Error::Config(format!(
                "cannot open the access log {}: {source}",
                path.display()
            ))
        };
        let mut last = String::new();
        if path.exists() {
            for line in BufReader::new(File::open(path).map_err(failed)?).lines() {
                let line = line.map_err(failed)?;
                if !line.trim().is_empty() {
                    last = hex::encode(Sha256::digest(line.as_bytes()));
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(failed)?;
        Ok(Self {
            file: Some(Mutex::new((file, last))),
            path: Some(path.to_path_buf()),
        })
    }

    /// Records one access; a record that cannot be written is reported in the log output.
    pub fn record(&self, user: &str, action: &str, detail: &str, decision: &str) {
        tracing::info!(target: "sunlight::access", user, action, detail, decision);
        let Some(file) = &self.file else {
            return;
        };
        let mut guard = file.lock().expect("not poisoned");
        let (file, previous) = &mut *guard;
        let record = AccessRecord {
            at_ms: chrono::Utc::now().timestamp_millis(),
            user: user.to_string(),
            action: action.to_string(),
            detail: detail.to_string(),
            decision: decision.to_string(),
            previous: previous.clone(),
        };
        let line = serde_json::to_string(&record).expect("records serialize");
        match writeln!(file, "{line}").and_then(|()| file.flush()) {
            Ok(()) => *previous = hex::encode(Sha256::digest(line.as_bytes())),
            Err(e) => tracing::error!(
                path = ?self.path,
                "an access record could not be written: {e}"
            ),
        }
    }
}

/// The first line of `path` whose chain link does not match the line before it, if any.
pub fn verify_access_log(path: &Path) -> Result<Option<usize>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let mut previous = String::new();
    for (number, line) in text.lines().enumerate() {
        let record: AccessRecord = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(_) => return Ok(Some(number + 1)),
        };
        if record.previous != previous {
            return Ok(Some(number + 1));
        }
        previous = hex::encode(Sha256::digest(line.as_bytes()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_continues_across_restarts_and_shows_a_removed_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.jsonl");
        NodeAudit::open(Some(&path))
            .unwrap()
            .record("ana", "sql", "SELECT 1", "allowed");
        let audit = NodeAudit::open(Some(&path)).unwrap();
        audit.record("city", "fragment", "q1", "allowed");
        audit.record("unknown", "access", "ab12", "refused: unknown token");
        assert_eq!(verify_access_log(&path).unwrap(), None);
        let text = std::fs::read_to_string(&path).unwrap();
        let without_second: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| l)
            .collect();
        std::fs::write(&path, without_second.join("\n")).unwrap();
        assert_eq!(verify_access_log(&path).unwrap(), Some(2));
    }
}
