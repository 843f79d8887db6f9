//! `--set key=value` overrides: the key is a dotted path (`train.iterations`, `arms.0.name`),
//! the value a TOML value (`[0,1,2]`, `5000`, `"x"`); a value that is not valid TOML is taken
//! as a string, so paths need no quotes.

use anyhow::{anyhow, bail, Context, Result};

use super::Experiment;

/// Applies each `key=value` in order to the fully resolved config and re-reads it.
pub fn apply(exp: Experiment, sets: &[String]) -> Result<Experiment> {
    if sets.is_empty() {
        return Ok(exp);
    }
    let mut root = toml::Value::Table(exp.to_table());
    for set in sets {
        let (key, raw) = set
            .split_once('=')
            .ok_or_else(|| anyhow!("--set `{set}` is not of the form key=value"))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            bail!("--set `{set}` has an empty key");
        }
        set_path(&mut root, key, parse_value(raw.trim()))
            .with_context(|| format!("--set `{set}`"))?;
    }
    let toml::Value::Table(table) = root else {
        unreachable!("root stays a table")
    };
    Experiment::from_table(table).context("invalid --set override")
}

/// Reads a value as TOML, falling back to a plain string.
pub fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

/// Sets the value at a dotted path, creating tables on the way; numeric segments index lists.
fn set_path(root: &mut toml::Value, key: &str, value: toml::Value) -> Result<()> {
    let segments: Vec<&str> = key.split('.').collect();
    let (last, parents) = segments.split_last().expect("split yields one segment");
    let mut node = root;
    for seg in parents {
        node = match node {
            toml::Value::Table(t) => t
                .entry(seg.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new())),
            toml::Value::Array(a) => index(a, seg, key)?,
            _ => bail!("`{key}` goes through `{seg}`, which is not a table"),
        };
    }
    match node {
        toml::Value::Table(t) => {
            t.insert((*last).to_string(), value);
        }
        toml::Value::Array(a) => *index(a, last, key)? = value,
        _ => bail!("`{key}` goes through a value that is not a table"),
    }
    Ok(())
}

fn index<'a>(list: &'a mut [toml::Value], seg: &str, key: &str) -> Result<&'a mut toml::Value> {
    let len = list.len();
    let i: usize = seg
        .parse()
        .map_err(|_| anyhow!("`{seg}` in `{key}` must be a list index"))?;
    list.get_mut(i)
        .ok_or_else(|| anyhow!("index {i} in `{key}` is out of range (the list has {len})"))
}
