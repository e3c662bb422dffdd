//! Unit tests' scratch directories: one per test, under the system's temporary directory,
//! named by the module, the test and this process, and removed when dropped.

use std::path::PathBuf;

/// A directory of a test's own, removed with everything in it when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `portrace-MODULE-TAG-PID`, created empty (whatever an earlier run left is removed).
    pub fn new(module: &str, tag: &str) -> TempDir {
        let dir = TempDir::absent(module, tag);
        std::fs::create_dir_all(&dir.0).expect("a test's temporary directory");
        dir
    }

    /// The same path, left for the code under test to create.
    pub fn absent(module: &str, tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("portrace-{module}-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
