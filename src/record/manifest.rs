//! The SHA-256 manifest of a run dir: the files of its completed rounds, so that a run dir
//! copied between machines (or a disk that flips a bit) is checked before its files are used.
//!
//! `manifest.sha256` lists, one `<64 hex>  <path>` line per file sorted by path (paths relative
//! to the run dir), the format `sha256sum -c` reads: `cd RUN && sha256sum -c manifest.sha256`
//! checks a complete run by hand. It lists `config.toml`, every tensor file of the completed
//! rounds under `seed_<s>/` (θ_k and optimizer states, which belong to round 0, and each
//! round's start, weights and mask), and `rounds.csv`, `curves.csv`, `layers.csv` whole. Not
//! listed: `timings.csv` (wall-clock times, rewritten with other values when a stopped round is
//! redone, and read by nothing), `progress.toml` (the commit point, written after the manifest:
//! the manifest may run one round ahead of it), `.lock`, `checkpoints/` (a checkpoint carries
//! its own checksum and is removed when its round completes), the figures, and the manifest's
//! own two files.
//!
//! The CSVs grow round by round, and a resumed run keeps the rows of its completed rounds and
//! redoes the rest (a torn tail, rows lost or repeated). So `manifest.toml` records, for each
//! CSV and each round r written so far, how many bytes of the file hold its header and its rows
//! of rounds 0..=r (rows are written in round order) and their SHA-256: a resumed run and the
//! report of a partial run check that prefix only, the report of a complete run checks the
//! whole file against `manifest.sha256`.
//!
//! Both files are written atomically when a round's files and rows are on disk, before
//! `progress.toml` counts the round (`manifest.toml` first), so that a crash in between redoes
//! the round, whose bytes are the same, and the manifest stays consistent. Entries of earlier
//! rounds are kept, not hashed again; the CSVs are hashed again each round. Files of rounds
//! beyond the one written are left out (a round being redone is listed again when it
//! completes). A run dir made before manifests existed (no `manifest.sha256`) is accepted
//! unchecked; `lth run` on it writes the manifest from its next completed round on (or at once
//! when the run is already complete), taking the files of earlier rounds as they are.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::atomic::write_atomic;
use super::run_dir::RunDir;

/// The listing in `sha256sum` format, in the run dir's root.
pub const MANIFEST: &str = "manifest.sha256";

/// The CSVs' per-round prefixes, in the run dir's root.
pub const TABLE_PREFIXES: &str = "manifest.toml";

/// The CSVs the manifest lists.
const TABLES: [&str; 4] = ["curves.csv", "layers.csv", "rounds.csv", "topology.csv"];

/// The length of the header line of the listed table `rel`, as the run writes it.
fn header_bytes(rel: &str) -> u64 {
    use super::rows::{CURVES, LAYERS, ROUNDS, TOPOLOGY};
    let columns = match rel {
        "curves.csv" => CURVES,
        "layers.csv" => LAYERS,
        "rounds.csv" => ROUNDS,
        _ => TOPOLOGY,
    };
    columns.join(",").len() as u64 + 1
}

/// How the CSVs are checked against the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableCheck {
    /// Their rows of the completed rounds, the bytes that hold them (a resumed run, or a
    /// partial run's report: rows of a round in progress may follow).
    Prefix,
    /// Whole, as `manifest.sha256` lists them (a complete run's report).
    Whole,
}

/// What a listed file is, told by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listed {
    /// `config.toml`, written once before round 0.
    Config,
    /// One of [`TABLES`].
    Table,
    /// A tensor file written by this round.
    Round(u32),
}

/// One CSV's prefixes: entry r is the first `bytes[r]` bytes (the header and the rows of
/// rounds 0..=r) and their SHA-256.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RowPrefixes {
    bytes: Vec<u64>,
    sha256: Vec<String>,
}

/// Relative path -> SHA-256 (hex), as `manifest.sha256` lists them.
type Listing = BTreeMap<String, String>;

/// What to do about a changed file, by kind.
fn remedy(kind: Listed) -> &'static str {
    match kind {
        Listed::Table => "restore it from a copy, or delete it (lth run then redoes the rounds whose rows it held)",
        _ => "restore it from a copy, or remove the run dir to start over",
    }
}

/// Whether `text` is decimal digits only (no sign, not empty).
fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// The number `text` writes in decimal digits only.
fn digits(text: &str) -> Option<u32> {
    all_digits(text).then(|| text.parse().ok()).flatten()
}

/// The kind of the file at `rel` (relative, `/`-separated), or `None` when lth does not list it.
fn listed_as(rel: &str) -> Option<Listed> {
    if rel == "config.toml" {
        return Some(Listed::Config);
    }
    if TABLES.contains(&rel) {
        return Some(Listed::Table);
    }
    let parts: Vec<&str> = rel.split('/').collect();
    // Seeds and iterations are u64, rounds u32.
    if !all_digits(parts.first()?.strip_prefix("seed_")?) {
        return None;
    }
    let stem = parts.last()?.strip_suffix(".safetensors")?;
    if stem.is_empty() || stem.starts_with('.') {
        return None;
    }
    let round = |folder: &str| folder.strip_prefix("round_").and_then(digits);
    let dense = ["theta_", "optimizer_"]
        .iter()
        .any(|p| stem.strip_prefix(p).is_some_and(all_digits));
    match parts.len() {
        2 if dense => Some(Listed::Round(0)),
        3 => round(parts[1]).map(Listed::Round),
        4 if !parts[1].is_empty() && !parts[1].starts_with('.') => {
            round(parts[2]).map(Listed::Round)
        }
        _ => None,
    }
}

/// Whether the file at `rel` is checked whole when `completed` rounds are: the config and the
/// tensor files of completed rounds.
fn checked(rel: &str, completed: u32) -> bool {
    match listed_as(rel) {
        Some(Listed::Config) => true,
        Some(Listed::Round(r)) => r < completed,
        _ => false,
    }
}

/// Lower-case hex of a digest.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the first `limit` bytes of the file at `path` (all of it when `None`), and how
/// many bytes that was.
fn sha256_of(path: &Path, limit: Option<u64>) -> std::io::Result<(String, u64)> {
    let file = File::open(path)?;
    let mut reader = file.take(limit.unwrap_or(u64::MAX));
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok((hex(&hash.finalize()), read));
        }
        hash.update(&buf[..n]);
        read += n as u64;
    }
}

/// The prefixes of a CSV's `bytes` for rounds 0..=`last`: round r's ends where the first row
/// of a later round starts (or at the end of the file).
fn row_prefixes(bytes: &[u8], last: u32) -> RowPrefixes {
    let mut reader = csv::Reader::from_reader(bytes);
    let column = reader
        .headers()
        .ok()
        .and_then(|h| h.iter().position(|c| c == "round"));
    let mut ends: Vec<u64> = Vec::new();
    let mut record = csv::ByteRecord::new();
    while let Ok(true) = reader.read_byte_record(&mut record) {
        let start = record.position().map_or(bytes.len() as u64, |p| p.byte());
        let round = column
            .and_then(|c| record.get(c))
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(digits)
            .unwrap_or(u32::MAX);
        while ends.len() <= last as usize && round > ends.len() as u32 {
            ends.push(start);
        }
    }
    ends.resize(last as usize + 1, bytes.len() as u64);
    let mut hash = Sha256::new();
    let mut at = 0usize;
    let mut prefixes = RowPrefixes::default();
    for end in ends {
        hash.update(&bytes[at..end as usize]);
        at = end as usize;
        prefixes.bytes.push(end);
        prefixes.sha256.push(hex(&hash.clone().finalize()));
    }
    prefixes
}

/// `sha256sum`'s text for `listing`.
fn listing_text(listing: &Listing) -> String {
    listing
        .iter()
        .map(|(path, hash)| format!("{hash}  {path}\n"))
        .collect()
}

/// One line of `manifest.sha256` (text mode `  ` or binary mode ` *`), if well formed and
/// naming a file lth lists.
fn parse_line(line: &str) -> Option<(String, String)> {
    let (hash, rest) = line.split_at_checked(64)?;
    let path = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))?;
    let hex_ok = hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex_ok && listed_as(path).is_some()).then(|| (path.to_string(), hash.to_string()))
}

impl RunDir {
    /// `manifest.sha256`.
    fn manifest_path(&self) -> PathBuf {
        self.root().join(MANIFEST)
    }

    /// `manifest.toml`.
    fn prefixes_path(&self) -> PathBuf {
        self.root().join(TABLE_PREFIXES)
    }

    /// Whether the run dir has a manifest (run dirs made before manifests have none).
    pub fn has_manifest(&self) -> bool {
        self.manifest_path().exists()
    }

    /// `rel` under the run dir, for messages and reading.
    fn file(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// `path` (under the run dir) as the manifest names it.
    fn relative(&self, path: &Path) -> String {
        let rel = path.strip_prefix(self.root()).unwrap_or(path);
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        parts.join("/")
    }

    /// The listing in `manifest.sha256`, or `None` when the run dir has none.
    fn read_listing(&self) -> Result<Option<Listing>> {
        let path = self.manifest_path();
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let text = String::from_utf8_lossy(&text);
        let mut listing = Listing::new();
        for (i, line) in text.lines().enumerate() {
            match parse_line(line) {
                Some((file, hash)) => listing.insert(file, hash),
                None => bail!(
                    "{} line {} is damaged (not `<sha256>  <path>` of a file lth lists): {}",
                    path.display(),
                    i + 1,
                    remedy(Listed::Config)
                ),
            };
        }
        Ok(Some(listing))
    }

    /// The CSVs' prefixes in `manifest.toml`.
    fn read_prefixes(&self) -> Result<BTreeMap<String, RowPrefixes>> {
        let path = self.prefixes_path();
        let damaged = || {
            format!(
                "{} is missing or damaged, but {} lists the run's files: {}",
                path.display(),
                self.manifest_path().display(),
                remedy(Listed::Config)
            )
        };
        let text = std::fs::read_to_string(&path).map_err(|_| anyhow::anyhow!(damaged()))?;
        toml::from_str(&text).map_err(|_| anyhow::anyhow!(damaged()))
    }

    /// `config.toml` and every tensor file lth lists, on disk now (relative paths).
    fn listable_files(&self) -> Result<Vec<String>> {
        fn walk(dir: &RunDir, folder: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
            for entry in std::fs::read_dir(folder)? {
                let path = entry?.path();
                if path.is_dir() {
                    walk(dir, &path, out)?;
                } else {
                    out.push(dir.relative(&path));
                }
            }
            Ok(())
        }
        let mut files = Vec::new();
        let root = self.root();
        let seeds = std::fs::read_dir(root)
            .and_then(|entries| entries.collect::<std::io::Result<Vec<_>>>())
            .with_context(|| format!("cannot read run dir {}", root.display()))?;
        for entry in seeds {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("seed_") && path.is_dir() {
                walk(self, &path, &mut files)
                    .with_context(|| format!("cannot read {}", path.display()))?;
            } else if name == "config.toml" {
                files.push(name);
            }
        }
        files.retain(|f| matches!(listed_as(f), Some(Listed::Config | Listed::Round(_))));
        files.sort();
        Ok(files)
    }

    /// Writes the manifest of rounds 0..=`rounds.end()` once their files and rows are on disk
    /// (before `progress.toml` counts them): the files of `rounds` (just written) are hashed,
    /// earlier entries kept (files not yet listed, in a run dir made before manifests, hashed),
    /// files of later rounds left out; the CSVs are hashed whole and by round.
    pub fn write_manifest(&self, rounds: RangeInclusive<u32>) -> Result<()> {
        let old = self.read_listing()?.unwrap_or_default();
        let last = *rounds.end();
        let mut listing = Listing::new();
        for rel in self.listable_files()? {
            let kept = match listed_as(&rel) {
                Some(Listed::Round(r)) if r > last => continue,
                Some(Listed::Round(r)) => !rounds.contains(&r),
                _ => true,
            };
            let hash = match old.get(&rel) {
                Some(hash) if kept => hash.clone(),
                _ => {
                    let path = self.file(&rel);
                    sha256_of(&path, None)
                        .with_context(|| format!("cannot read {}", path.display()))?
                        .0
                }
            };
            listing.insert(rel, hash);
        }
        let mut prefixes = BTreeMap::new();
        for name in TABLES {
            let path = self.file(name);
            if !path.exists() {
                continue;
            }
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            listing.insert(name.to_string(), hex(&Sha256::digest(&bytes)));
            prefixes.insert(name.to_string(), row_prefixes(&bytes, last));
        }
        let toml = toml::to_string(&prefixes).context("cannot write the manifest")?;
        write_atomic(&self.prefixes_path(), toml.as_bytes())?;
        write_atomic(&self.manifest_path(), listing_text(&listing).as_bytes())
    }

    /// Checks the run dir against its manifest before its files are used: `config.toml`, the
    /// tensor files of the rounds below `completed` (each listed, present and matching; those
    /// of later rounds are redone or not read), and the CSVs as `tables` says. A run dir
    /// without a manifest passes. The error names the first file that fails and what to do.
    pub fn verify_manifest(&self, completed: u32, tables: TableCheck) -> Result<()> {
        let Some(listing) = self.read_listing()? else {
            return Ok(());
        };
        for rel in self.listable_files()? {
            if checked(&rel, completed) && !listing.contains_key(&rel) {
                return Err(self.unlisted(&rel));
            }
        }
        for (rel, hash) in &listing {
            let whole_table = tables == TableCheck::Whole && listed_as(rel) == Some(Listed::Table);
            if whole_table || checked(rel, completed) {
                self.check_whole(rel, hash)?;
            }
        }
        if tables == TableCheck::Prefix && completed > 0 {
            self.check_prefixes(&listing, completed - 1)?;
        }
        Ok(())
    }

    /// Checks the files that the final weights and the mask of round `round` of (`arm`,
    /// `seed`) (a completed round) and `config.toml` are read from, when the run dir has a
    /// manifest.
    pub fn verify_replica_round(&self, arm: &str, seed: u64, round: u32) -> Result<()> {
        let Some(listing) = self.read_listing()? else {
            return Ok(());
        };
        let paths = [
            self.config_path(),
            self.weights_path(arm, seed, round),
            self.mask_path(arm, seed, round),
        ];
        for path in paths {
            let rel = self.relative(&path);
            match listing.get(&rel) {
                Some(hash) => self.check_whole(&rel, hash)?,
                None => return Err(self.unlisted(&rel)),
            }
        }
        Ok(())
    }

    /// Checks the whole file at `rel` against `expected`.
    fn check_whole(&self, rel: &str, expected: &str) -> Result<()> {
        let found = self.hash_listed(rel, None)?.0;
        if found != expected {
            let why = match listed_as(rel) {
                Some(Listed::Config) => "changed since the run wrote it",
                Some(Listed::Table) => "changed since the run completed",
                _ => "changed since its round completed",
            };
            self.mismatch(rel, &self.manifest_path(), why)?;
        }
        Ok(())
    }

    /// Checks each CSV's header and rows of rounds 0..=`round` against `manifest.toml`.
    fn check_prefixes(&self, listing: &Listing, round: u32) -> Result<()> {
        let prefixes = self.read_prefixes()?;
        let at = round as usize;
        for rel in listing.keys() {
            if listed_as(rel) != Some(Listed::Table) {
                continue;
            }
            let record = prefixes
                .get(rel)
                .and_then(|p| Some((*p.bytes.get(at)?, p.sha256.get(at)?)));
            let Some((bytes, expected)) = record else {
                bail!(
                    "{} records no SHA-256 of {}'s rows of round {round}: {}",
                    self.prefixes_path().display(),
                    rel,
                    remedy(Listed::Config)
                );
            };
            // A table without rows in those rounds (`topology.csv` has none in round 0) may
            // be missing: the run writes it again with the rounds it redoes.
            if bytes == header_bytes(rel) && !self.file(rel).exists() {
                continue;
            }
            let (found, read) = self.hash_listed(rel, Some(bytes))?;
            if read != bytes || found != *expected {
                let why = format!("its rows of rounds 0..={round} changed since they were written");
                self.mismatch(rel, &self.prefixes_path(), &why)?;
            }
        }
        Ok(())
    }

    /// SHA-256 of the listed file at `rel` (of its first `limit` bytes); a missing file is
    /// refused, naming what to do.
    fn hash_listed(&self, rel: &str, limit: Option<u64>) -> Result<(String, u64)> {
        let path = self.file(rel);
        match sha256_of(&path, limit) {
            Ok(found) => Ok(found),
            Err(e) if e.kind() == ErrorKind::NotFound => bail!(
                "{} is missing, but {} lists it (its round completed): {}",
                path.display(),
                self.manifest_path().display(),
                remedy(listed_as(rel).unwrap_or(Listed::Config))
            ),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The error for the file at `rel`, of a completed round, missing from the listing.
    fn unlisted(&self, rel: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{} is not listed in {}, though its round completed (the manifest was changed): {}",
            self.file(rel).display(),
            self.manifest_path().display(),
            remedy(Listed::Config)
        )
    }

    /// The error for the file at `rel` not matching its SHA-256 in `manifest`.
    fn mismatch(&self, rel: &str, manifest: &Path, why: &str) -> Result<()> {
        bail!(
            "{} does not match its SHA-256 in {} ({why}): {}",
            self.file(rel).display(),
            manifest.display(),
            remedy(listed_as(rel).unwrap_or(Listed::Config))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_listed_by_their_place_in_the_run_dir() {
        let cases = [
            ("config.toml", Some(Listed::Config)),
            ("rounds.csv", Some(Listed::Table)),
            ("timings.csv", None),
            ("progress.toml", None),
            ("seed_0/theta_40.safetensors", Some(Listed::Round(0))),
            ("seed_3/optimizer_40.safetensors", Some(Listed::Round(0))),
            ("seed_0/round_00/mask.safetensors", Some(Listed::Round(0))),
            (
                "seed_0/rewind/round_02/weights.safetensors",
                Some(Listed::Round(2)),
            ),
            ("seed_0/rewind/round_02/.tmp-weights.safetensors", None),
            ("seed_0/rewind/round_+2/weights.safetensors", None),
            ("seed_0/theta_x.safetensors", None),
            ("seed_/round_00/mask.safetensors", None),
            (
                "seed_12345678901/theta_5000000000.safetensors",
                Some(Listed::Round(0)),
            ),
            ("checkpoints/round_01/dense.safetensors", None),
            ("seed_0/../round_00/mask.safetensors", None),
            ("accuracy_vs_weights.png", None),
        ];
        for (path, kind) in cases {
            assert_eq!(listed_as(path), kind, "{path}");
        }
    }

    #[test]
    fn a_csv_prefix_of_round_r_holds_its_header_and_rows_of_rounds_up_to_r() {
        let text = b"arm,seed,round\na,0,0\na,1,0\na,0,1\na,1,1\na,0,2\n";
        let p = row_prefixes(text, 2);
        let header = "arm,seed,round\n".len() as u64;
        let row = "a,0,0\n".len() as u64;
        assert_eq!(
            p.bytes,
            [header + 2 * row, header + 4 * row, header + 5 * row]
        );
        assert_eq!(p.sha256[2], hex(&Sha256::digest(text)));
        assert_eq!(
            p.sha256[0],
            hex(&Sha256::digest(&text[..p.bytes[0] as usize]))
        );
        // Rounds not written yet end with the file.
        assert_eq!(row_prefixes(text, 3).bytes[3], text.len() as u64);
    }

    #[test]
    fn sha256sum_lines_are_read_back_and_others_refused() {
        let mut listing = Listing::new();
        listing.insert("config.toml".into(), "a".repeat(64));
        listing.insert("seed_0/round_00/mask.safetensors".into(), "0".repeat(64));
        let text = listing_text(&listing);
        for line in text.lines() {
            let (path, hash) = parse_line(line).unwrap();
            assert_eq!(listing[&path], hash);
        }
        let binary = format!("{} *config.toml", "b".repeat(64));
        assert!(parse_line(&binary).is_some());
        for bad in [
            format!("{}  /etc/passwd", "a".repeat(64)),
            format!("{}  config.toml", "A".repeat(64)),
            format!("{} config.toml", "a".repeat(64)),
            "short  config.toml".to_string(),
        ] {
            assert!(parse_line(&bad).is_none(), "{bad}");
        }
    }
}
