//! A study's finished pieces kept on disk while it runs, so that a study stopped part-way (a
//! crash, `kill -9`, Ctrl-C) continues from them instead of starting again: each piece is a
//! set of tidy tables written atomically into a hidden folder beside the outputs, under a key
//! that names the request; pieces of another request are discarded, and the folder is removed
//! once the outputs are written.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::output::{write_table, Rows};
use crate::record::atomic::write_atomic;

/// The pieces of one study's outputs in `folder/.partial/`.
pub struct Parts {
    dir: PathBuf,
}

/// One table of a piece: its name among the piece's files, header and rows.
pub struct PieceTable<'a> {
    /// Name (`<piece>.<name>.csv`).
    pub name: &'a str,
    /// Column names.
    pub header: &'a [&'a str],
    /// Rows.
    pub rows: &'a Rows,
}

/// The file holding the key of the request the pieces belong to.
const KEY_FILE: &str = "request.txt";

impl Parts {
    /// The pieces in `folder` of the request described by `key`; pieces left there by another
    /// request are removed first.
    pub fn open(folder: &Path, key: &str) -> Result<Self> {
        let dir = folder.join(".partial");
        let same = std::fs::read_to_string(dir.join(KEY_FILE)).is_ok_and(|k| k == key);
        if !same {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("cannot clear {}", dir.display()))?;
            }
            write_atomic(&dir.join(KEY_FILE), key.as_bytes())?;
        }
        Ok(Self { dir })
    }

    /// The tables of piece `piece`, named `tables` (header and rows each), when all of them
    /// were written.
    pub fn load(&self, piece: &str, tables: &[&str]) -> Result<Option<Vec<Rows>>> {
        let paths: Vec<PathBuf> = tables.iter().map(|t| self.path(piece, t)).collect();
        if !paths.iter().all(|p| p.exists()) {
            return Ok(None);
        }
        paths
            .iter()
            .map(|p| read_rows(p))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Writes piece `piece`: each table's header and rows, the last table last (a piece counts
    /// once all its tables are there).
    pub fn save(&self, piece: &str, tables: &[PieceTable<'_>]) -> Result<()> {
        for t in tables {
            write_table(&self.path(piece, t.name), t.header, t.rows)?;
        }
        Ok(())
    }

    /// Removes the pieces (the outputs are written).
    pub fn finish(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove {}", self.dir.display()))
    }

    fn path(&self, piece: &str, table: &str) -> PathBuf {
        self.dir.join(format!("{piece}.{table}.csv"))
    }
}

/// The rows of a CSV written by [`write_table`], header first, as written.
fn read_rows(path: &Path) -> Result<Rows> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    reader
        .records()
        .map(|r| {
            r.map(|r| r.iter().map(String::from).collect())
                .with_context(|| format!("cannot read {}", path.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_come_back_as_written_and_another_requests_pieces_are_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let rows = vec![
            vec!["1".to_string(), "0.1".into()],
            vec!["2".into(), "a, \"b\"".into()],
        ];
        let parts = Parts::open(tmp.path(), "one").unwrap();
        assert!(parts.load("k-0", &["paths"]).unwrap().is_none());
        let table = PieceTable {
            name: "paths",
            header: &["x", "y"],
            rows: &rows,
        };
        parts.save("k-0", &[table]).unwrap();
        let back = Parts::open(tmp.path(), "one")
            .unwrap()
            .load("k-0", &["paths"])
            .unwrap()
            .unwrap();
        assert_eq!(back[0][0], ["x", "y"]);
        assert_eq!(&back[0][1..], &rows[..]);
        // Only whole pieces count.
        assert!(parts.load("k-0", &["paths", "more"]).unwrap().is_none());
        let other = Parts::open(tmp.path(), "two").unwrap();
        assert!(other.load("k-0", &["paths"]).unwrap().is_none());
        other.finish().unwrap();
        assert!(!tmp.path().join(".partial").exists());
    }
}
