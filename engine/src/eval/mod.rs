//! Benchmark protocols, run through loaded plugins over the ABI (the real path).

pub mod aalto;
pub mod balabit;
pub mod continuous;
pub mod fixed_text;
pub mod metrics;
pub mod report;
pub mod touchalytics;

pub use report::{DetectorResult, EvalReport};

/// Why an evaluation could not run. Always names the file (and line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {message}")]
    Data { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Plugin(#[from] crate::HostError),
    #[error("{0}")]
    Protocol(String),
}

/// Progress of a long evaluation: `(done, total)` after each unit of work.
pub trait Progress: Sync {
    fn start(&self, _label: &str, _total: usize) {}
    fn advance(&self) {}
    fn finish(&self) {}
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {}

/// Runs `f(i)` for `i in 0..n` on up to `threads` threads, results in index order.
pub(crate) fn parallel_map<T: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1).min(n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let v = f(i);
                out.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(v);
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|v| v.expect("every index is computed"))
        .collect()
}

/// Threads for evaluations: the machine's parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
