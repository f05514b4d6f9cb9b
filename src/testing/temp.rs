//! Scratch folders for tests that write files: fresh when made, removed when dropped.

use std::path::{Path, PathBuf};

/// A fresh empty folder `name` under the system's temporary folder (whatever an earlier
/// run left there is removed first), used as the [`Path`] it is and removed with its files
/// when dropped, unless the thread is panicking (a failing test's files are kept to look
/// at). Put the process id in `name` so that runs side by side do not share it.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Makes the folder; panics when it cannot (it is for tests).
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot make {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_dir_is_fresh_and_removed_on_drop() {
        let name = format!("latflow-tempdir-{}", std::process::id());
        let path = {
            let dir = TempDir::new(&name);
            std::fs::write(dir.join("a.txt"), "a").unwrap();
            let again = dir.to_path_buf();
            drop(dir);
            again
        };
        assert!(!path.exists());
        let dir = TempDir::new(&name);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let dir = TempDir::new(&name);
        assert_eq!(std::fs::read_dir(&*dir).unwrap().count(), 0, "not fresh");
    }
}
