//! Loading plugin libraries: one file, or every plugin in a directory.
//!
//! Each file is opened with `lib_header_from_path(..).init_root_module()`: abi_stable's
//! `RootModule::load_from_file` caches the first module per *type* and would silently
//! hand the first plugin back for every later file.

use std::path::{Path, PathBuf};

use habitus_plugin::abi_stable::library::{lib_header_from_path, LibraryError, RootModule};
use habitus_plugin::{PluginDescriptor, PluginModRef, RResult};

use crate::plugin::{HostError, PluginInstance};

/// Why a file could not be loaded as a plugin. `Display` is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: no such file", path.display())]
    Missing { path: PathBuf },
    #[error("{}: not a loadable shared library: {reason}", path.display())]
    NotALibrary { path: PathBuf, reason: String },
    #[error("{}: not a Habitus plugin ({reason})", path.display())]
    NotAPlugin { path: PathBuf, reason: String },
    #[error("{}: built against plugin interface {found}, this host needs a compatible {expected} (rebuild the plugin against habitus-plugin {expected})", path.display())]
    IncompatibleInterface {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{}: built with an incompatible abi_stable ABI ({reason})", path.display())]
    OtherAbi { path: PathBuf, reason: String },
    #[error("{}: interface layout mismatch: {reason}", path.display())]
    LayoutMismatch { path: PathBuf, reason: String },
    #[error("{}: plugin failed to initialise: {reason}", path.display())]
    InitFailed { path: PathBuf, reason: String },
    #[error("{}: bad descriptor: {reason}", path.display())]
    BadDescriptor { path: PathBuf, reason: String },
}

/// A loaded, checked plugin library (libraries are never unloaded: abi_stable leaks them
/// on purpose, since code from them may still be referenced).
#[derive(Clone)]
pub struct PluginLibrary {
    pub path: PathBuf,
    pub descriptor: PluginDescriptor,
    module: PluginModRef,
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("path", &self.path)
            .field("name", &self.descriptor.name)
            .finish()
    }
}

/// Only the `Error:` lines of abi_stable's multi-page layout report, each once, on one
/// line. A plugin built against another `habitus-plugin` minor fails this check on every
/// type with the same "incompatible package versions" line: that case also says what to
/// do.
fn condense(report: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for line in report.lines().map(str::trim) {
        if line.starts_with("Error:") && !lines.contains(&line) {
            lines.push(line);
        }
    }
    if lines.is_empty() {
        return report.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    let mut condensed = lines.join("; ");
    if condensed.contains("incompatible package versions") {
        condensed.push_str(&format!(
            " (built against another habitus-plugin minor: rebuild the plugin against habitus-plugin {})",
            habitus_plugin::INTERFACE_VERSION
        ));
    }
    condensed
}

fn classify(path: &Path, error: LibraryError) -> LoadError {
    let path = path.to_path_buf();
    match error {
        LibraryError::OpenError { err, .. } => LoadError::NotALibrary {
            path,
            reason: err.to_string(),
        },
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin {
            path,
            reason: "it exports no abi_stable root module".into(),
        },
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => LoadError::IncompatibleInterface {
            path,
            expected: expected_version.to_string(),
            found: actual_version.to_string(),
        },
        LibraryError::ParseVersionError(e) => LoadError::IncompatibleInterface {
            path,
            expected: habitus_plugin::INTERFACE_VERSION.into(),
            found: format!("unparsable ({e})"),
        },
        LibraryError::AbiInstability(e) => LoadError::LayoutMismatch {
            path,
            reason: condense(&e.to_string()),
        },
        LibraryError::InvalidAbiHeader(h) => LoadError::OtherAbi {
            path,
            reason: format!("abi_stable header {h:?}"),
        },
        LibraryError::InvalidCAbi { .. } => LoadError::OtherAbi {
            path,
            reason: "the C ABI of the compiler differs".into(),
        },
        LibraryError::RootModule { err, .. } => LoadError::InitFailed {
            path,
            reason: condense(&err.to_string()),
        },
        other => LoadError::LayoutMismatch {
            path,
            reason: condense(&other.to_string()),
        },
    }
}

impl PluginLibrary {
    /// Loads and checks one plugin file.
    pub fn load(path: &Path) -> Result<PluginLibrary, LoadError> {
        if !path.exists() {
            return Err(LoadError::Missing {
                path: path.to_path_buf(),
            });
        }
        // An absolute path: dlopen searches the library path for a bare relative name,
        // which would load some other file or report a misleading "No such file".
        let absolute = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let header = lib_header_from_path(&absolute).map_err(|e| classify(path, e))?;
        // Another abi_stable application's library: say so instead of a layout dump.
        let name = header.root_mod_consts().name();
        if name.as_str() != PluginModRef::NAME {
            return Err(LoadError::NotAPlugin {
                path: path.to_path_buf(),
                reason: format!("its abi_stable root module is {:?}", name.as_str()),
            });
        }
        let module = header
            .init_root_module::<PluginModRef>()
            .map_err(|e| classify(path, e))?;
        let descriptor = match (module.descriptor())() {
            RResult::ROk(d) => d,
            RResult::RErr(e) => {
                return Err(LoadError::InitFailed {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        descriptor
            .validate()
            .map_err(|reason| LoadError::BadDescriptor {
                path: path.to_path_buf(),
                reason,
            })?;
        Ok(PluginLibrary {
            path: path.to_path_buf(),
            descriptor,
            module,
        })
    }

    /// Constructs a plugin from a TOML config string (empty = the plugin's defaults).
    pub fn instantiate(&self, config: &str) -> Result<PluginInstance, HostError> {
        match (self.module.new())(config.into()) {
            RResult::ROk(inner) => Ok(PluginInstance::new(self.descriptor.clone(), inner)),
            RResult::RErr(error) => Err(HostError::Plugin {
                plugin: self.descriptor.name.to_string(),
                error,
            }),
        }
    }
}

/// True for file names that look like a shared library on this platform.
fn is_library_name(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    matches!(ext, "so" | "dylib" | "dll")
}

/// Every plugin in `dir` (files with a shared-library extension, in name order). Files
/// that fail are reported, not fatal: the host keeps going with the others. Two
/// libraries with the same plugin name: the first wins, the second is reported.
pub fn load_dir(dir: &Path) -> (Vec<PluginLibrary>, Vec<LoadError>) {
    let mut loaded: Vec<PluginLibrary> = Vec::new();
    let mut errors = Vec::new();
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_library_name(p))
            .collect(),
        Err(e) => {
            errors.push(LoadError::NotALibrary {
                path: dir.to_path_buf(),
                reason: format!("cannot read plugin directory: {e}"),
            });
            return (loaded, errors);
        }
    };
    entries.sort();
    for path in entries {
        match PluginLibrary::load(&path) {
            Ok(lib) => {
                if let Some(first) = loaded
                    .iter()
                    .find(|l| l.descriptor.name == lib.descriptor.name)
                {
                    errors.push(LoadError::BadDescriptor {
                        path: path.clone(),
                        reason: format!(
                            "plugin name {:?} already loaded from {}",
                            lib.descriptor.name.as_str(),
                            first.path.display()
                        ),
                    });
                } else {
                    loaded.push(lib);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    (loaded, errors)
}

/// Where plugins are looked for when no directory is given: next to the running
/// executable, then the system directory.
pub const SYSTEM_PLUGIN_DIR: &str = "/usr/lib/habitus/plugins";

/// The default plugin directories, in search order.
pub fn default_plugin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    dirs.push(PathBuf::from(SYSTEM_PLUGIN_DIR));
    dirs
}

/// Whether `file` may hold plugin `name`: `libNAME.so`, `NAME.so`, or
/// `libANYTHING_NAME.so` (what cargo builds for a crate `habitus-NAME` or
/// `acme-NAME`), with `-` in the name written `_` as cargo writes it.
pub fn may_hold_plugin(file: &str, name: &str) -> bool {
    let stem = name.replace('-', "_");
    file == format!("lib{stem}.so")
        || file == format!("{stem}.so")
        || (file.starts_with("lib") && file.ends_with(&format!("_{stem}.so")))
}

/// Finds the plugin named `name` in `dirs` (first directory that has it wins; in a
/// directory, `libhabitus_NAME.so` first, then the other candidates in name order).
///
/// Only files whose name may hold the plugin ([`may_hold_plugin`]) are opened, never
/// every library of a directory: opening a shared library runs its initialisers, and
/// habitusd runs as root, so a stray `.so` beside the plugins (another program's, a test
/// fixture) must not be executed just to read its descriptor. A candidate whose plugin
/// has another name is skipped and reported.
pub fn find_plugin(dirs: &[PathBuf], name: &str) -> Result<PluginLibrary, String> {
    let mut problems = Vec::new();
    let preferred = format!("libhabitus_{}.so", name.replace('-', "_"));
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut candidates: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|f| f.to_str())
                        .is_some_and(|f| may_hold_plugin(f, name))
            })
            .collect();
        candidates.sort_by_key(|p| (p.file_name() != Some(preferred.as_ref()), p.clone()));
        for path in candidates {
            match PluginLibrary::load(&path) {
                Ok(lib) if lib.descriptor.name.as_str() == name => return Ok(lib),
                Ok(lib) => problems.push(format!(
                    "{} holds plugin {:?}",
                    path.display(),
                    lib.descriptor.name.as_str()
                )),
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let stem = name.replace('-', "_");
    let mut msg = format!(
        "no {name:?} plugin found in {} (looked at lib{stem}.so, {stem}.so and lib*_{stem}.so)",
        searched.join(", ")
    );
    if !problems.is_empty() {
        msg.push_str(&format!(" (skipped: {})", problems.join("; ")));
    }
    Err(msg)
}

#[cfg(test)]
mod tests {
    use super::condense;

    #[test]
    fn layout_reports_keep_each_error_line_once_and_say_what_to_do() {
        let report = "Layout of PluginMod:\n   Error:incompatible package versions\n  details\n\
                      Layout of Event:\n   Error:incompatible package versions\n\
                      Error:field count differs\n";
        let c = condense(report);
        assert_eq!(c.matches("incompatible package versions").count(), 1, "{c}");
        assert!(c.contains("Error:field count differs"), "{c}");
        assert!(c.contains(&format!(
            "rebuild the plugin against habitus-plugin {}",
            habitus_plugin::INTERFACE_VERSION
        )));
        assert!(!c.contains('\n'));
        assert_eq!(condense("no error lines\n at all"), "no error lines at all");
    }
}
