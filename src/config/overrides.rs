//! `--set key=value` overrides: the key is a dotted path (`train.iterations`, `arms.0.name`),
//! the value a TOML value (`[0,1,2]`, `5000`, `"x"`); a value that is not valid TOML is taken
//! as a string, so paths need no quotes. A segment may be double-quoted to hold dots, and
//! everything after `prune.layer_fractions.` is one tensor name, so
//! `prune.layer_fractions.fc3.weight=0.5` sets the entry the tidy data names so. A table
//! value replaces the whole table. `--unset key` removes a key first (its default applies
//! again) or a list entry (`arms.5`).

use anyhow::{anyhow, bail, Context, Result};

use super::Experiment;

/// Removes each key of `unsets`, then applies each `key=value` of `sets` in order, to the
/// fully resolved config, and re-reads it.
pub fn apply(exp: Experiment, unsets: &[String], sets: &[String]) -> Result<Experiment> {
    if sets.is_empty() && unsets.is_empty() {
        return Ok(exp);
    }
    let mut root = toml::Value::Table(exp.to_table());
    for key in unsets {
        let key = key.trim();
        let segments = key_segments(key).with_context(|| format!("--unset `{key}`"))?;
        unset_path(&mut root, &segments).with_context(|| format!("--unset `{key}`"))?;
    }
    for set in sets {
        let (key, raw) = set
            .split_once('=')
            .ok_or_else(|| anyhow!("--set `{set}` is not of the form key=value"))?;
        let key = key.trim();
        let segments = key_segments(key).with_context(|| format!("--set `{set}`"))?;
        set_path(&mut root, key, &segments, parse_value(raw.trim()))
            .with_context(|| format!("--set `{set}`"))?;
    }
    let toml::Value::Table(table) = root else {
        unreachable!("root stays a table")
    };
    Experiment::from_table(table).context("invalid --set/--unset override")
}

/// Removes the key or list entry at `segments`.
fn unset_path(root: &mut toml::Value, segments: &[String]) -> Result<()> {
    let (last, parents) = segments.split_last().expect("at least one segment");
    let mut node = root;
    for seg in parents {
        node = match node {
            toml::Value::Table(t) => t
                .get_mut(seg)
                .ok_or_else(|| anyhow!("the config has no `{seg}` there"))?,
            toml::Value::Array(a) => index(a, seg, seg)?,
            _ => bail!("`{seg}` is not a table"),
        };
    }
    match node {
        toml::Value::Table(t) => {
            t.remove(last)
                .ok_or_else(|| anyhow!("the config has no `{last}` set there"))?;
        }
        toml::Value::Array(a) => {
            let len = a.len();
            let i: usize = last
                .parse()
                .map_err(|_| anyhow!("`{last}` must be a list index"))?;
            if i >= len {
                bail!("index {i} is out of range (the list has {len})");
            }
            a.remove(i);
        }
        _ => bail!("it goes through a value that is not a table"),
    }
    Ok(())
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

/// The segments of a dotted key, as TOML writes them: bare (`train`, `0`) or a whole segment
/// in double or single quotes (`"fc3.weight"`), quotes removed; the rest of a
/// `prune.layer_fractions.` key is joined back into one tensor name.
fn key_segments(key: &str) -> Result<Vec<String>> {
    let mut segments = Vec::new();
    let mut rest = key;
    loop {
        let (segment, after) = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let close = rest[1..]
                    .find(q)
                    .ok_or_else(|| anyhow!("the key has an unclosed `{q}`"))?;
                (&rest[1..=close], &rest[close + 2..])
            }
            _ => {
                let end = rest.find('.').unwrap_or(rest.len());
                let bare = &rest[..end];
                if bare.contains(['"', '\'']) {
                    bail!("a quote in the key must enclose a whole segment (`prune.layer_fractions.\"fc3.weight\"`)");
                }
                (bare, &rest[end..])
            }
        };
        if segment.is_empty() {
            bail!("the key is empty or has an empty segment");
        }
        segments.push(segment.to_string());
        match after.strip_prefix('.') {
            Some(next) => rest = next,
            None if after.is_empty() => break,
            None => bail!("a quoted segment of the key must be followed by `.` or end it"),
        }
    }
    if segments.len() > 3 && segments[..2] == ["prune", "layer_fractions"] {
        let name = segments[2..].join(".");
        segments.truncate(2);
        segments.push(name);
    }
    Ok(segments)
}

/// Sets the value at the path `segments` (of `key`), creating tables on the way; numeric
/// segments index lists.
fn set_path(
    root: &mut toml::Value,
    key: &str,
    segments: &[String],
    value: toml::Value,
) -> Result<()> {
    let (last, parents) = segments.split_last().expect("at least one segment");
    let mut node = root;
    for seg in parents {
        node = match node {
            toml::Value::Table(t) => t
                .entry(seg.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new())),
            toml::Value::Array(a) => index(a, seg, key)?,
            _ => bail!("`{key}` goes through `{seg}`, which is not a table"),
        };
    }
    match node {
        toml::Value::Table(t) => {
            t.insert(last.clone(), value);
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

#[cfg(test)]
mod tests {
    use super::key_segments;

    #[test]
    fn keys_split_at_dots_outside_quotes_and_layer_fraction_names_stay_whole() {
        let seg = |k: &str| key_segments(k).unwrap();
        assert_eq!(seg("train.iterations"), ["train", "iterations"]);
        assert_eq!(seg("arms.0.name"), ["arms", "0", "name"]);
        // A tensor name holds a dot: quoted, or the rest of a layer_fractions key.
        let entry = ["prune", "layer_fractions", "fc3.weight"];
        assert_eq!(seg("prune.layer_fractions.\"fc3.weight\""), entry);
        assert_eq!(seg("prune.layer_fractions.'fc3.weight'"), entry);
        assert_eq!(seg("arms.0.\"name\""), ["arms", "0", "name"]);
        assert_eq!(seg("prune.layer_fractions.fc3.weight"), entry);
        assert_eq!(seg("prune.layer_fractions"), ["prune", "layer_fractions"]);
        for bad in [
            "",
            "train..lr",
            ".x",
            "x.",
            "a.\"b",
            "a\"b.c\"d",
            "a.\"b\"c",
            "a.\"\"",
        ] {
            assert!(key_segments(bad).is_err(), "{bad:?} is refused");
        }
    }
}
