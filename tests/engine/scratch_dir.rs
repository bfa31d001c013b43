//! Scratch directories for tests, shared by the engine tests and the browser tests (which
//! include this file by path): `$TMPDIR/atheria-tests/<pid>/<name>`. The first call of a run
//! removes what runs that are no longer alive left there, so the files of the last run stay for
//! a look after a failure and no more accumulate.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A fresh, empty directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    static RUN_DIR: OnceLock<PathBuf> = OnceLock::new();
    let run_dir = RUN_DIR.get_or_init(|| {
        let root = std::env::temp_dir().join("atheria-tests");
        // Where there is no /proc to tell live runs from dead ones, nothing is removed.
        let entries = std::fs::read_dir(&root).into_iter().flatten().flatten();
        for entry in entries.filter(|_| Path::new("/proc/self").exists()) {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !Path::new("/proc").join(&pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        root.join(std::process::id().to_string())
    });
    let dir = run_dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
