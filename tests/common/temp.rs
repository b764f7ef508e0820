//! A folder of its own for one test (a SQLite file, a config, certificates), removed when the
//! test ends, pass or fail.

use std::path::{Path, PathBuf};

pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty folder under the system's temporary folder; `name` (the test's) makes it
    /// easy to find, the process id and the time make it unique.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "actor-chat-{name}-{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The SQLite file a test's store lives in.
    pub fn db(&self) -> PathBuf {
        self.0.join("chat.db")
    }

    /// `store.url` for that file.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.db().display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
