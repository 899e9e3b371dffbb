//! A scratch directory removed when dropped (the `tempfile` crate is only a
//! dev-dependency; the demo and the step-up evaluation need one at run time).

use std::path::PathBuf;

pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    /// A fresh directory under the system temp dir, named after `prefix`, the process
    /// and the time (0700, as it may hold a profile store and secrets).
    pub fn new(prefix: &str) -> std::io::Result<ScratchDir> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
