//! Runcard text: parsing with `--set` overrides, the runcard as used (written into a
//! study or sweep folder), and where in the text a refused key was set, so that an error
//! found after parsing still points at its line.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::study::spec::Override;

/// Parses a runcard (errors name the key and line of `text`), applies `overrides` and
/// deserialises the result; returns it with the table it came from. An error the runcard
/// has as written is reported with its line and without the overrides; one that only the
/// overrides bring names them.
pub(crate) fn parse_with_overrides<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    overrides: &[Override],
) -> Result<(T, toml::Table)> {
    // Parsed once as written, so that errors point at the user's lines.
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| Error::format(origin, e.to_string()))?;
    let as_written = toml::from_str::<T>(text).err();
    if let Some(e) = as_written.as_ref().filter(|_| overrides.is_empty()) {
        return Err(deserialisation_error::<T>(text, origin, e));
    }
    let mut root = toml::Value::Table(table);
    for o in overrides {
        o.apply(&mut root)?;
    }
    let toml::Value::Table(table) = root else {
        return Err(Error::param(
            "set",
            "an override replaced the whole runcard",
        ));
    };
    let spec: T = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| match as_written {
            // The same fault in the runcard as written: report it there, with its line.
            Some(first) if first.message() == e.message() => {
                deserialisation_error::<T>(text, origin, &first)
            }
            _ => Error::format(
                format!("{origin} with the overrides {}", listed(overrides)),
                e.to_string(),
            ),
        })?;
    Ok((spec, table))
}

/// The error of reading `text` as `T`, as an [`Error::Format`] of `origin`. A fault inside a
/// table that is read through an internally tagged enum (e.g. `[action]`, tagged by
/// `form`) is reported by toml at the table, without the key, because the table is
/// buffered before its tag is known; such a fault is pinned here to its key and line:
/// the key an unknown-field message names, or the one key whose removal turns the fault
/// into a missing-field error for that key (or lets the runcard read).
fn deserialisation_error<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    error: &toml::de::Error,
) -> Error {
    pinned_key::<T>(text, error)
        .map(|(key, line)| {
            Error::format(
                origin,
                format!("`{key}` (line {line}): {}", error.message().trim_end()),
            )
        })
        .unwrap_or_else(|| Error::format(origin, error.to_string()))
}

/// The dotted key (array entries counted from 1) and line of the key inside the table
/// `error` points at that causes it, when the error points at a whole table.
fn pinned_key<T: serde::de::DeserializeOwned>(
    text: &str,
    error: &toml::de::Error,
) -> Option<(String, usize)> {
    let span = error.span()?;
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    let mut tables = Vec::new();
    tables_at(doc.get_ref(), span.start, &mut path, &mut tables);
    // The innermost table the error points at.
    let table_path = tables.into_iter().max_by_key(Vec::len)?;
    let root: toml::Table = text.parse().ok()?;
    let keys: Vec<String> = table_keys(&root, &table_path.join("."))
        .into_iter()
        .map(String::from)
        .collect();
    let message = error.message();
    if message.starts_with("missing field") {
        // No key to point at: the table, which the message completes.
        return Some((shown(&table_path), key_line(text, &table_path.join("."))?));
    }
    let culprit = keys
        .iter()
        .find(|k| message.starts_with(&format!("unknown field `{k}`")))
        .or_else(|| {
            // A trial read of the runcard with the key `k` of the table changed by `edit`.
            let trial = |k: &str, edit: &dyn Fn(&mut toml::Table, &str)| {
                let mut trial = root.clone();
                edit(lookup_mut(&mut trial, &table_path)?, k);
                Some(toml::Value::Table(trial).try_into::<T>())
            };
            keys.iter().find(|k| {
                let removed = trial(k, &|t, k| {
                    t.remove(k);
                });
                let culprit = match removed {
                    Some(Ok(_)) => true,
                    Some(Err(e)) => e.message().contains(&format!("missing field `{k}`")),
                    None => false,
                };
                // The tag is missing when removed too: it is the key whose value picks
                // the variant.
                let tag = || {
                    let renamed = trial(k, &|t, k| {
                        t.insert(k.to_string(), "\u{1}".into());
                    });
                    matches!(renamed, Some(Err(e)) if e.message().contains("unknown variant"))
                };
                culprit && !tag()
            })
        })?;
    let mut full = table_path.clone();
    full.push(culprit.clone());
    let line = key_line(text, &full.join("."))?;
    Some((shown(&full), line))
}

/// A key path as shown to users: dotted, array entries counted from 1.
fn shown(path: &[String]) -> String {
    path.iter()
        .map(|s| match s.parse::<usize>() {
            Ok(i) => (i + 1).to_string(),
            Err(_) => s.clone(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Collects into `found` the paths (array entries by index) of the tables of `table`
/// whose span (a `[header]`, or a whole inline table) starts at the byte offset `at`,
/// `path` being the path of `table`.
fn tables_at(
    table: &toml::de::DeTable<'_>,
    at: usize,
    path: &mut Vec<String>,
    found: &mut Vec<Vec<String>>,
) {
    for (key, value) in table {
        path.push(key.get_ref().to_string());
        visit_value(value, at, path, found);
        path.pop();
    }
}

/// [`tables_at`] for one value: a table, or the tables of an array.
fn visit_value(
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    at: usize,
    path: &mut Vec<String>,
    found: &mut Vec<Vec<String>>,
) {
    match value.get_ref() {
        toml::de::DeValue::Table(inner) => {
            if value.span().start == at {
                found.push(path.clone());
            }
            tables_at(inner, at, path, found);
        }
        toml::de::DeValue::Array(entries) => {
            for (i, entry) in entries.iter().enumerate() {
                path.push(i.to_string());
                visit_value(entry, at, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The table at `path` (array entries by index) of `root`, mutably.
fn lookup_mut<'a>(root: &'a mut toml::Table, path: &[String]) -> Option<&'a mut toml::Table> {
    let (first, rest) = path.split_first()?;
    let mut value = root.get_mut(first)?;
    for segment in rest {
        value = match (value, segment.parse::<usize>()) {
            (toml::Value::Array(entries), Ok(i)) => entries.get_mut(i)?,
            (v, _) => v.get_mut(segment.as_str())?,
        };
    }
    value.as_table_mut()
}

/// The overrides as `--set key=value`, separated by spaces.
fn listed(overrides: &[Override]) -> String {
    overrides
        .iter()
        .map(|o| format!("--set {}={}", o.key, o.value))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The runcard as used: a header with the latflow version and the overrides, then `spec`.
pub(crate) fn runcard_text<T: Serialize>(
    spec: &T,
    kind: &str,
    overrides: &[Override],
) -> Result<String> {
    let mut header = format!(
        "# latflow {} {kind} runcard, as used (every seed written out)\n",
        env!("CARGO_PKG_VERSION")
    );
    if !overrides.is_empty() {
        header.push_str("# overrides:");
        for o in overrides {
            header.push_str(&format!(" --set {}={}", o.key, o.value));
        }
        header.push('\n');
    }
    let body = toml::to_string(spec).map_err(|e| Error::format("runcard output", e.to_string()))?;
    Ok(format!("{header}{body}"))
}

/// The line (from 1) of `text` where the dotted key `path` (array entries by index, e.g.
/// `sampler.1.kernel.tau`) is given; `None` when the runcard does not give it.
pub(crate) fn key_line(text: &str, path: &str) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut segments = path.split('.');
    let mut value = doc.get_ref().get(segments.next()?)?;
    for segment in segments {
        value = match segment.parse::<usize>() {
            Ok(i) if value.get_ref().is_array() => value.get_ref().get(i)?,
            _ => value.get_ref().get(segment)?,
        };
    }
    Some(text[..value.span().start].matches('\n').count() + 1)
}

/// The keys the table at the dotted `path` of `doc` gives (array entries by index, as for
/// [`key_line`]); none when `doc` has no table there (e.g. a kernel given as an expression).
pub(crate) fn table_keys<'a>(doc: &'a toml::Table, path: &str) -> Vec<&'a str> {
    let mut segments = path.split('.');
    let mut value = segments.next().and_then(|first| doc.get(first));
    for segment in segments {
        value = value.and_then(|v| match (v, segment.parse::<usize>()) {
            (toml::Value::Array(entries), Ok(i)) => entries.get(i),
            (v, _) => v.get(segment),
        });
    }
    value
        .and_then(toml::Value::as_table)
        .map(|t| t.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// The runcard at `path` read as `T` and checked by `validate` (which gets the parsed
/// document too, for checks of the keys the runcard gives), whose errors get the line of
/// the first of the keys `paths` gives for the parameter they name (see [`located`]).
pub(crate) fn read_checked<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    validate: impl Fn(&T, &toml::Table) -> Result<()>,
    paths: impl Fn(&str) -> Vec<String>,
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let origin = format!("runcard {}", path.display());
    let doc: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| Error::format(&origin, e.to_string()))?;
    let spec: T =
        toml::from_str(&text).map_err(|e| deserialisation_error::<T>(&text, &origin, &e))?;
    validate(&spec, &doc).map_err(|e| {
        let keys = match &e {
            Error::InvalidParameter { name, .. } => paths(name),
            _ => Vec::new(),
        };
        located(e, &text, &origin, &[], &keys)
    })?;
    Ok(spec)
}

/// `error` with where its key was set: for an [`Error::InvalidParameter`], the reason gets
/// "(set by the override KEY=VALUE)" when an override set the key (or a table holding
/// it, or a key inside it), else "(line N of ORIGIN)" for the first of the runcard keys `paths` that the text
/// gives; other errors are kept.
pub(crate) fn located(
    error: Error,
    text: &str,
    origin: &str,
    overrides: &[Override],
    paths: &[String],
) -> Error {
    let Error::InvalidParameter { name, reason } = error else {
        return error;
    };
    // An override of the key, of a table holding it, or of a key inside it.
    let set_by = overrides.iter().find(|o| {
        paths.iter().any(|p| {
            *p == o.key
                || p.starts_with(&format!("{}.", o.key))
                || o.key.starts_with(&format!("{p}."))
        })
    });
    let reason = match set_by {
        Some(o) => format!("{reason} (set by the override {}={})", o.key, o.value),
        None => match paths.iter().find_map(|p| key_line(text, p)) {
            Some(line) => format!("{reason} (line {line} of {origin})"),
            None => reason,
        },
    };
    Error::InvalidParameter { name, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runcard with an internally tagged table.
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Card {
        name: String,
        action: crate::run::ActionSpec,
        #[serde(default)]
        stage: Vec<Stage>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Stage {
        action: crate::run::ActionSpec,
    }

    fn message(text: &str) -> String {
        let e = toml::from_str::<Card>(text).unwrap_err();
        deserialisation_error::<Card>(text, "runcard r.toml", &e).to_string()
    }

    #[test]
    fn faults_in_tagged_tables_name_their_key_and_line() {
        let head = "name = \"x\"\n[action]\nform = \"phi4\"\n";
        let e = message(&format!("{head}beta = 0.5\nlambda = 0.5\nmass = 1.0\n"));
        assert!(
            e.contains("`action.mass` (line 6)") && e.contains("unknown field"),
            "{e}"
        );
        let e = message(&format!("{head}beta = \"hot\"\nlambda = 0.5\n"));
        assert!(
            e.contains("`action.beta` (line 4)") && e.contains("invalid type"),
            "{e}"
        );
        let e = message(&format!("{head}beta = 0.5\nlambda = [1]\n"));
        assert!(e.contains("`action.lambda` (line 5)"), "{e}");
        // A missing key is reported at its table.
        let e = message(&format!("{head}beta = 0.5\n"));
        assert!(
            e.contains("`action` (line 2): missing field `lambda`"),
            "{e}"
        );
        let inline = "name = \"x\"\n\naction = { form = \"free\", mass = true }\n";
        let e = message(inline);
        assert!(e.contains("`action.mass` (line 3)"), "{e}");
        let staged = "name = \"x\"\naction = { form = \"free\", mass = 1.0 }\n[[stage]]\n\
                      action = { form = \"free\", mass = 1.0 }\n[[stage]]\n[stage.action]\n\
                      form = \"phi4\"\nbeta = 0.5\nlambda = 0.5\nm2 = 1\n";
        let e = message(staged);
        assert!(e.contains("`stage.2.action.m2` (line 10)"), "{e}");
        // A fault at a key keeps toml's own report, with its line and column.
        let e = message("name = 3\naction = { form = \"free\", mass = 1.0 }\n");
        assert!(e.contains("line 1, column 8"), "{e}");
    }

    #[test]
    fn keys_are_found_on_their_lines() {
        let text = "name = \"x\"\n[hmc]\nn = 0\n[[sampler]]\nname = \"a\"\n[[sampler]]\n\
                    name = \"b\"\nkernel = { kind = \"hmc\", tau = -1 }\n";
        assert_eq!(key_line(text, "name"), Some(1));
        assert_eq!(key_line(text, "hmc.n"), Some(3));
        assert_eq!(key_line(text, "sampler.1.name"), Some(7));
        assert_eq!(key_line(text, "sampler.1.kernel.tau"), Some(8));
        assert_eq!(key_line(text, "sampler.2.name"), None);
        assert_eq!(key_line(text, "hmc.therm"), None);
        let doc: toml::Table = text.parse().unwrap();
        assert_eq!(table_keys(&doc, "sampler.1.kernel"), ["kind", "tau"]);
        assert_eq!(table_keys(&doc, "hmc"), ["n"]);
        assert!(table_keys(&doc, "sampler.0.kernel").is_empty());
        assert!(table_keys(&doc, "name").is_empty());
        let e = located(
            Error::param("hmc.n", "must be at least 1"),
            text,
            "runcard r.toml",
            &[],
            &["hmc.n".to_string()],
        );
        assert!(e.to_string().contains("(line 3 of runcard r.toml)"), "{e}");
        let set = Override::parse("hmc={n = 0}").unwrap();
        let e = located(
            Error::param("hmc.n", "must be at least 1"),
            text,
            "runcard r.toml",
            &[set],
            &["hmc.n".to_string()],
        );
        assert!(
            e.to_string().contains("set by the override hmc={n = 0}"),
            "{e}"
        );
    }
}
