//! CSV tables kept whole in memory and rewritten atomically after each round, so that a
//! resumed run drops the rows of unfinished rounds and never duplicates or tears a row.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::atomic::write_with;

/// What to do with a damaged table (the run redoes the rounds whose rows are missing).
pub(super) const REPAIR: &str = "restore it, or delete it (lth run then redoes the rounds whose rows it held; timings.csv holds only wall-clock times)";

/// How many rows each (arm, seed, round) of a complete table has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsPerKey {
    /// Exactly one (`rounds.csv`).
    One,
    /// The same number for every key (`layers.csv`: one per prunable tensor).
    SameForAll,
    /// The same number for every seed of an arm in a round (`curves.csv`: one per evaluation
    /// point of the arm's span).
    SameAcrossSeeds,
}

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
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let found: Vec<String> = reader
            .headers()
            .with_context(|| format!("cannot read {}", path.display()))?
            .iter()
            .map(String::from)
            .collect();
        // A file from an older lth may lack columns added since at the end: they read empty.
        let older = found.len() < table.header.len() && table.header.starts_with(&found);
        if found != table.header && !older {
            bail!(
                "{} has columns {:?}, expected {:?}: {REPAIR}",
                path.display(),
                found.join(","),
                table.header.join(",")
            );
        }
        let width = table.header.len();
        let mut records: Vec<csv::Result<csv::StringRecord>> = reader.records().collect();
        // lth ends every row with a newline: a last row without one was cut, even where it
        // still has every column (cut inside its last value).
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            records.pop();
        }
        let last = records.len().saturating_sub(1);
        for (i, record) in records.into_iter().enumerate() {
            match record {
                Ok(r) => {
                    let mut row: Vec<String> = r.iter().map(String::from).collect();
                    row.resize(width, String::new());
                    table.rows.push(row);
                }
                // A torn last line (a crash mid-write of a non-atomic copy) is dropped; the
                // rounds it belonged to are redone.
                Err(_) if i == last => break,
                // A damaged line with rows after it: dropping it, or all after it, would lose
                // rows of finished rounds.
                Err(e) => bail!(
                    "{} line {} is damaged ({}); lth writes the file whole, so it was changed since: {REPAIR}",
                    path.display(),
                    e.position().map_or(0, |p| p.line()),
                    crate::config::one_line(&e.to_string())
                ),
            }
        }
        Ok(table)
    }

    /// Keeps only the rows `keep` says.
    pub fn retain(&mut self, keep: impl FnMut(&Vec<String>) -> bool) {
        self.rows.retain(keep);
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

    /// The first round below `rounds` in which one of `members` (each an `arm` and a `seed`
    /// value as the table writes them) has not the rows `expect` says, if any: a file changed
    /// or cut after the run wrote it.
    pub fn first_round_lacking(
        &self,
        members: &[(String, String)],
        rounds: u32,
        expect: RowsPerKey,
    ) -> Option<u32> {
        self.first_round_lacking_in(members, 0..rounds, expect)
    }

    /// [`Table::first_round_lacking`] over the rounds of `rounds` only (a table without rows
    /// in some rounds, such as `topology.csv` in round 0).
    pub fn first_round_lacking_in(
        &self,
        members: &[(String, String)],
        rounds: std::ops::Range<u32>,
        expect: RowsPerKey,
    ) -> Option<u32> {
        use std::collections::HashMap;
        let (arm, seed, round) = (
            self.column("arm")?,
            self.column("seed")?,
            self.column("round")?,
        );
        let mut count: HashMap<(&str, &str, &str), usize> = HashMap::new();
        for r in &self.rows {
            *count
                .entry((r[arm].as_str(), r[seed].as_str(), r[round].as_str()))
                .or_default() += 1;
        }
        // Rows of each member in each round, `[round][member]`.
        let counts: Vec<Vec<usize>> = rounds
            .clone()
            .map(|r| {
                let r = r.to_string();
                members
                    .iter()
                    .map(|(a, s)| count.get(&(a.as_str(), s.as_str(), r.as_str())).copied())
                    .map(Option::unwrap_or_default)
                    .collect()
            })
            .collect();
        // Under `SameForAll`, the most common number over every key: a lost or repeated row
        // stands out.
        let mut tally: HashMap<usize, usize> = HashMap::new();
        counts
            .iter()
            .flatten()
            .for_each(|&n| *tally.entry(n).or_default() += 1);
        let usual = tally
            .into_iter()
            .max_by_key(|&(n, keys)| (keys, n))
            .map(|(n, _)| n);
        let wrong = |in_round: &[usize], i: usize| {
            let n = in_round[i];
            n == 0
                || match expect {
                    RowsPerKey::One => n != 1,
                    RowsPerKey::SameForAll => Some(n) != usual,
                    // The most any seed of the same arm has in that round.
                    RowsPerKey::SameAcrossSeeds => {
                        let of_arm = members
                            .iter()
                            .zip(in_round)
                            .filter(|((a, _), _)| *a == members[i].0);
                        n != of_arm.map(|(_, &m)| m).max().unwrap_or(0)
                    }
                }
        };
        rounds.clone().find(|&r| {
            let in_round = &counts[(r - rounds.start) as usize];
            (0..members.len()).any(|i| wrong(in_round, i))
        })
    }

    /// The first row whose `arm` or `seed` value is not one of `members`' (each an `arm` and
    /// a `seed` as the table writes them): `(arm, seed)` as the row holds them.
    pub fn first_row_outside(&self, members: &[(String, String)]) -> Option<(&str, &str)> {
        let (arm, seed) = (self.column("arm")?, self.column("seed")?);
        self.rows
            .iter()
            .map(|r| (r[arm].as_str(), r[seed].as_str()))
            .find(|&(a, s)| !members.iter().any(|(ma, ms)| ma == a && ms == s))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a column whose value in each row is computed from the row (derived values kept
    /// in memory, such as a report's; the run's own file is not changed).
    pub fn add_column(&mut self, name: &str, value: impl Fn(&[String]) -> String) {
        self.header.push(name.to_string());
        for row in &mut self.rows {
            let v = value(row);
            row.push(v);
        }
    }

    /// Appends a row (one value per column).
    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.header.len(), "row width");
        self.rows.push(row);
    }

    /// The same table (file, columns) holding `rows` instead (each one value per column).
    pub fn with_rows(&self, rows: Vec<Vec<String>>) -> Self {
        debug_assert!(
            rows.iter().all(|r| r.len() == self.header.len()),
            "row width"
        );
        Self {
            path: self.path.clone(),
            header: self.header.clone(),
            rows,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_files_without_trailing_columns_read_them_empty_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "round,a\n0,x\n1,y\n").unwrap();
        let t = Table::open(&path, &["round", "a", "b"]).unwrap();
        assert_eq!(t.rows(), &[vec!["0", "x", ""], vec!["1", "y", ""]]);
        let err = Table::open(&path, &["round", "b"]).unwrap_err();
        assert!(err.to_string().contains("has columns"), "{err}");
    }

    #[test]
    fn a_round_lacking_or_repeating_rows_is_found_per_table_kind() {
        let members = [
            ("a".to_string(), "0".to_string()),
            ("a".to_string(), "1".to_string()),
        ];
        let table = |rows: &[&str]| {
            let mut t = Table::open(Path::new("/nonexistent"), &["arm", "seed", "round"]).unwrap();
            for r in rows {
                t.push(r.split(',').map(String::from).collect());
            }
            t
        };
        // Two rows per key everywhere (two tensors, or two evaluation points): complete.
        let full = [
            "a,0,0", "a,0,0", "a,1,0", "a,1,0", "a,0,1", "a,0,1", "a,1,1", "a,1,1",
        ];
        for expect in [RowsPerKey::SameForAll, RowsPerKey::SameAcrossSeeds] {
            assert_eq!(table(&full).first_round_lacking(&members, 2, expect), None);
            // One row of seed 1 in round 1 lost, or repeated.
            let lost = table(&full[..7]);
            assert_eq!(lost.first_round_lacking(&members, 2, expect), Some(1));
            let mut extra = full.to_vec();
            extra.push("a,1,1");
            assert_eq!(
                table(&extra).first_round_lacking(&members, 2, expect),
                Some(1)
            );
        }
        assert_eq!(
            table(&full).first_round_lacking(&members, 2, RowsPerKey::One),
            Some(0)
        );
        let one = ["a,0,0", "a,1,0", "a,0,1", "a,1,1"];
        assert_eq!(
            table(&one).first_round_lacking(&members, 2, RowsPerKey::One),
            None
        );
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_a_damaged_line_before_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "round,a\n0,x\n1").unwrap();
        let t = Table::open(&path, &["round", "a"]).unwrap();
        assert_eq!(t.rows().len(), 1);
        // Cut inside its last value, a row still has every column: no final newline tells.
        std::fs::write(&path, "round,a\n0,x\n1,yy").unwrap();
        assert_eq!(Table::open(&path, &["round", "a"]).unwrap().rows().len(), 1);
        // Dropping line 3 and all after it would lose the rows of round 2.
        std::fs::write(&path, "round,a\n0,x\nx,y,zz\n2,z\n").unwrap();
        let err = Table::open(&path, &["round", "a"]).unwrap_err();
        assert!(err.to_string().contains("t.csv line 3 is damaged"), "{err}");
    }
}
