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
        return Err(Error::format(origin, e.to_string()));
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
                Error::format(origin, first.to_string())
            }
            _ => Error::format(
                format!("{origin} with the overrides {}", listed(overrides)),
                e.to_string(),
            ),
        })?;
    Ok((spec, table))
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
    let spec: T = toml::from_str(&text).map_err(|e| Error::format(&origin, e.to_string()))?;
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
