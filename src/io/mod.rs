//! Files the library writes and reads: atomic writes (a temporary file renamed into place,
//! so no half-written file is ever left behind), JSON, and npy arrays.

use std::fs;
use std::io::Write;
use std::path::Path;

use ndarray::ArrayView2;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// synced and renamed over `path`. On error the previous content of `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::param("path", format!("`{}` names no file", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
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

/// Writes a 2-D array (e.g. configurations × sites) as a `.npy` file, atomically.
pub fn write_npy(path: &Path, array: ArrayView2<f64>) -> Result<()> {
    use ndarray_npy::WriteNpyExt;
    let mut buf = Vec::new();
    array
        .write_npy(&mut buf)
        .map_err(|e| Error::format("npy output", e.to_string()))?;
    write_atomic(path, &buf)
}

/// Reads a 2-D f64 `.npy` file.
pub fn read_npy(path: &Path) -> Result<ndarray::Array2<f64>> {
    use ndarray_npy::ReadNpyExt;
    let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    ndarray::Array2::<f64>::read_npy(f)
        .map_err(|e| Error::format(format!("npy file {}", path.display()), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("latflow-io-{tag}-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
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
        write_npy(&p, a.view()).unwrap();
        assert_eq!(read_npy(&p).unwrap(), a);
        fs::remove_dir_all(&d).unwrap();
    }
}
