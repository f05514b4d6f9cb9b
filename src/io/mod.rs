//! Files the library writes and reads: atomic writes (a temporary file renamed into place,
//! so no half-written file is ever left behind), JSON, and npy arrays.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// synced and renamed over `path`. On error the previous content of `path` is untouched and
/// the temporary file is removed; temporary files of this path left behind by a process that
/// was killed while writing are removed by the next successful write.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let (dir, name) = split_output_path(path)?;
    let tmp = dir.join(format!("{}{}", temporary_prefix(&name), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    remove_stale_temporaries(&dir, &name);
    Ok(())
}

/// The directory and file name of an output path (`.` when it has no directory part).
fn split_output_path(path: &Path) -> Result<(PathBuf, String)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::param("path", format!("`{}` names no file", path.display())))?;
    Ok((dir, name.to_string_lossy().into_owned()))
}

/// Refuses a run whose `outputs` name the same file twice, or name a file among its
/// `inputs` (which writing would destroy). Each entry is the name the user gave it under (a
/// runcard key like `out`, or a flag like `--out`) and the path; paths are compared after
/// resolving the existing part (so `m.json` and `./m.json` are one file). The error names
/// the output (as a runcard key) and, in its message, the other name.
pub fn check_distinct_files(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<()> {
    let key = |name: &str| name.trim_start_matches('-').replace('-', "_");
    for (i, &(name, path)) in outputs.iter().enumerate() {
        let file = resolved(path);
        if let Some(&(other, _)) = outputs[..i].iter().find(|o| resolved(o.1) == file) {
            return Err(Error::param(
                key(name),
                format!(
                    "{} is also given as `{other}`: two outputs of one run cannot share a file",
                    path.display()
                ),
            ));
        }
        if let Some(&(input, _)) = inputs.iter().find(|i| resolved(i.1) == file) {
            return Err(Error::param(
                key(name),
                format!(
                    "{} is also `{input}`, which this run reads: writing it would destroy it",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// `path` made absolute, through the existing directory it lies in when there is one.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(file) = fs::canonicalize(path) {
        return file;
    }
    match (split_output_path(path), std::path::absolute(path)) {
        (Ok((dir, name)), fallback) => fs::canonicalize(&dir)
            .map(|d| d.join(name))
            .or(fallback)
            .unwrap_or_else(|_| path.to_path_buf()),
        (Err(_), fallback) => fallback.unwrap_or_else(|_| path.to_path_buf()),
    }
}

/// The name of the temporary files of `name`, before the writer's process id.
fn temporary_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Removes temporary files of `name` in `dir` whose writing process no longer runs (it was
/// killed between creating and renaming them). Only where the process table is visible
/// (`/proc`); elsewhere nothing is removed.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = temporary_prefix(name);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Checks, before a run starts, that `path` can be written when the run ends: it names a
/// file (not `-`, not a directory), its directory exists, and a file can be created there.
/// `flag` names the option the path came from in the error.
pub fn check_output_path(path: &Path, flag: &str) -> Result<()> {
    if path.as_os_str() == "-" {
        return Err(Error::param(
            flag,
            "`-` (standard output) is not a file this option can write",
        ));
    }
    if path.is_dir() {
        return Err(Error::param(
            flag,
            format!("{} is a directory, not a file", path.display()),
        ));
    }
    let (dir, name) = split_output_path(path)
        .map_err(|_| Error::param(flag, format!("`{}` names no file", path.display())))?;
    if !dir.is_dir() {
        return Err(Error::param(
            flag,
            format!("the directory {} does not exist", dir.display()),
        ));
    }
    let probe = dir.join(format!("{}{}", temporary_prefix(&name), std::process::id()));
    fs::File::create(&probe).map_err(|e| {
        Error::param(
            flag,
            format!("cannot create files in {}: {e}", dir.display()),
        )
    })?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Serialises `value` as pretty JSON into `path`, atomically.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::format("JSON output", e.to_string()))?;
    write_atomic(path, &text)
}

/// Reads and parses a JSON file; `what` names it in errors ("model file", "checkpoint").
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(format!("{what} {}", path.display()), e.to_string()))
}

/// Writes an array (e.g. configurations × sites) as a `.npy` file, atomically.
pub fn write_npy<A, S, D>(path: &Path, array: &ndarray::ArrayBase<S, D>) -> Result<()>
where
    A: ndarray_npy::WritableElement,
    S: ndarray::Data<Elem = A>,
    D: ndarray::Dimension,
{
    use ndarray_npy::WriteNpyExt;
    let mut buf = Vec::new();
    array
        .write_npy(&mut buf)
        .map_err(|e| Error::format("npy output", e.to_string()))?;
    write_atomic(path, &buf)
}

/// Reads a `.npy` file of element type `A` and dimension `D` (e.g. `Array2<f64>`).
pub fn read_npy<A, D>(path: &Path) -> Result<ndarray::Array<A, D>>
where
    A: ndarray_npy::ReadableElement,
    D: ndarray::Dimension,
{
    use ndarray_npy::ReadNpyExt;
    let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    ndarray::Array::<A, D>::read_npy(std::io::BufReader::new(f))
        .map_err(|e| Error::format(format!("npy file {}", path.display()), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> crate::testing::TempDir {
        crate::testing::TempDir::new(&format!("latflow-io-{tag}-{}", std::process::id()))
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let d = temp_dir("atomic");
        let p = d.join("out.json");
        write_json(&p, &vec![1, 2, 3]).unwrap();
        write_json(&p, &vec![4]).unwrap();
        let back: Vec<i32> = read_json(&p, "test file").unwrap();
        assert_eq!(back, vec![4]);
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failed_write_keeps_old_file_and_reports_path() {
        let d = temp_dir("fail");
        let err = write_atomic(&d.join("missing-dir").join("x.json"), b"{}").unwrap_err();
        assert!(err.to_string().contains("missing-dir"), "{err}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_temporaries_of_killed_writers_are_removed() {
        let d = temp_dir("stale");
        let p = d.join("model.json");
        // No process has this id (above the kernel's pid_max limit of 2^22).
        let stale = d.join(".model.json.tmp-4999999");
        fs::write(&stale, b"half").unwrap();
        let other = d.join(".other.json.tmp-4999999");
        fs::write(&other, b"half").unwrap();
        write_atomic(&p, b"{}").unwrap();
        assert!(!stale.exists(), "the killed writer's temporary is removed");
        assert!(other.exists(), "another file's temporary is left alone");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn output_paths_are_checked_before_a_run() {
        let d = temp_dir("check");
        assert!(check_output_path(&d.join("ok.json"), "out").is_ok());
        assert_eq!(fs::read_dir(&d).unwrap().count(), 0, "the probe is removed");
        for (path, needle) in [
            (PathBuf::from("-"), "standard output"),
            (d.to_path_buf(), "is a directory"),
            (d.join("missing").join("x.json"), "does not exist"),
        ] {
            let err = check_output_path(&path, "out").unwrap_err();
            let text = err.to_string();
            assert!(text.contains("`out`") && text.contains(needle), "{text}");
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn malformed_json_is_a_format_error() {
        let d = temp_dir("bad");
        let p = d.join("bad.json");
        fs::write(&p, b"{not json").unwrap();
        let err = read_json::<Vec<i32>>(&p, "model file").unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err}");
        assert!(err.to_string().contains("model file"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn npy_round_trip() {
        let d = temp_dir("npy");
        let p = d.join("a.npy");
        let a = ndarray::Array2::from_shape_fn((3, 4), |(i, j)| i as f64 - 0.5 * j as f64);
        write_npy(&p, &a.view()).unwrap();
        assert_eq!(read_npy::<f64, ndarray::Ix2>(&p).unwrap(), a);
        // Other element types and dimensions.
        let q = d.join("b.npy");
        let b =
            ndarray::Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as u32);
        write_npy(&q, &b).unwrap();
        assert_eq!(read_npy::<u32, ndarray::Ix3>(&q).unwrap(), b);
        assert!(read_npy::<f64, ndarray::Ix3>(&q).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}
