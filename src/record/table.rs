//! CSV tables kept whole in memory and rewritten atomically after each round, so that a
//! resumed run drops the rows of unfinished rounds and never duplicates or tears a row.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::atomic::write_with;

/// One CSV file of a run dir.
#[derive(Debug, Clone)]
pub struct Table {
    path: PathBuf,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Reads `path` if it exists (its header must equal `header`), else starts empty.
    pub fn open(path: &Path, header: &[&str]) -> Result<Self> {
        let mut table = Self {
            path: path.to_path_buf(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        };
        if !path.exists() {
            return Ok(table);
        }
        let mut reader = csv::Reader::from_path(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let found: Vec<String> = reader
            .headers()
            .with_context(|| format!("cannot read {}", path.display()))?
            .iter()
            .map(String::from)
            .collect();
        if found != table.header {
            bail!(
                "{} has columns {:?}, expected {:?}",
                path.display(),
                found.join(","),
                table.header.join(",")
            );
        }
        for record in reader.records() {
            match record {
                Ok(r) => table.rows.push(r.iter().map(String::from).collect()),
                // A torn last line (a crash mid-write of a non-atomic copy) is dropped; the
                // rounds it belonged to are redone.
                Err(_) => break,
            }
        }
        Ok(table)
    }

    /// Keeps only rows whose `round` column is below `rounds`.
    pub fn keep_rounds_below(&mut self, rounds: u32) {
        let col = self
            .header
            .iter()
            .position(|h| h == "round")
            .expect("table has a round column");
        self.rows.retain(|r| {
            r.get(col)
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|v| v < rounds)
        });
    }

    /// Appends a row (one value per column).
    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.header.len(), "row width");
        self.rows.push(row);
    }

    /// The rows held.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// Column position by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// Rewrites the file atomically.
    pub fn save(&self) -> Result<()> {
        write_with(&self.path, |tmp| {
            let mut w = csv::Writer::from_path(tmp)?;
            w.write_record(&self.header)?;
            for row in &self.rows {
                w.write_record(row)?;
            }
            w.flush()
        })
    }
}
