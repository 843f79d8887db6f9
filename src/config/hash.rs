//! Content hash of a resolved config, used to name run dirs (`runs/<name>-<hash>`).
//!
//! Like OpenLTH, only values that differ from the defaults enter the hash, so adding a new key
//! with a default later keeps existing run dirs valid. `data.dir` (where the files are) does not
//! enter it: the same experiment on the same data moved elsewhere is the same run.

use sha2::{Digest, Sha256};

use super::Experiment;

/// Hex digest (12 characters) of the config's non-default values.
pub fn config_hash(exp: &Experiment) -> String {
    let mut table = exp.to_table();
    if let Some(toml::Value::Table(data)) = table.get_mut("data") {
        data.remove("dir");
    }
    let defaults = Experiment::default().to_table();
    let diff = non_default(&table, &defaults);
    let canonical = toml::to_string(&diff).expect("table serializes");
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Keeps the entries of `table` that differ from `defaults`, recursing into sub-tables.
fn non_default(table: &toml::Table, defaults: &toml::Table) -> toml::Table {
    let mut out = toml::Table::new();
    for (key, value) in table {
        match (value, defaults.get(key)) {
            (toml::Value::Table(sub), Some(toml::Value::Table(sub_default))) => {
                let d = non_default(sub, sub_default);
                if !d.is_empty() {
                    out.insert(key.clone(), toml::Value::Table(d));
                }
            }
            (v, Some(default)) if v == default => {}
            (v, _) => {
                out.insert(key.clone(), v.clone());
            }
        }
    }
    out
}
