//! The plugin host against real libraries: good plugins, broken ones, and files that are
//! not plugins at all. Every failure must be one clear line and the host must survive.

mod common;

use habitus_engine::loader::{find_plugin, load_dir, LoadError, PluginLibrary};
use habitus_engine::HostError;
use habitus_plugin::{ErrorKind, Event, EventKind, RVec};

#[test]
fn keystroke_plugin_loads_with_its_descriptor() {
    let lib =
        PluginLibrary::load(&common::library("habitus_keystroke")).expect("keystroke plugin loads");
    assert_eq!(lib.descriptor.name.as_str(), "keystroke");
    assert!(lib.descriptor.event_kinds.contains(&EventKind::KEY_DOWN));
    assert!(lib.instantiate("mode = \"fixed\"").is_ok());
    let err = lib
        .instantiate("mode = \"sideways\"")
        .err()
        .expect("bad config refused");
    assert!(
        matches!(&err, HostError::Plugin { error, .. } if error.kind == ErrorKind::INVALID_CONFIG),
        "{err}"
    );
}

#[test]
fn two_plugins_of_one_interface_load_as_themselves() {
    // RootModule::load_from_file would hand back the first plugin for the second file.
    let a = PluginLibrary::load(&common::library("habitus_keystroke")).unwrap();
    let b = PluginLibrary::load(&common::library("habitus_fixture_panics")).unwrap();
    assert_eq!(a.descriptor.name.as_str(), "keystroke");
    assert_eq!(b.descriptor.name.as_str(), "broken");
    let b = b.instantiate("").unwrap();
    assert_eq!(b.name(), "broken");
}

fn one_line(e: &LoadError) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "error must be one line: {s:?}");
    s
}

#[test]
fn missing_file_is_one_line() {
    let e = PluginLibrary::load(std::path::Path::new("/nonexistent/libnothing.so")).unwrap_err();
    assert!(matches!(e, LoadError::Missing { .. }));
    assert!(one_line(&e).contains("/nonexistent/libnothing.so: no such file"));
}

#[test]
fn a_file_that_is_not_a_library() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libtext.so");
    std::fs::write(&path, "just some text\n").unwrap();
    let e = PluginLibrary::load(&path).unwrap_err();
    assert!(matches!(e, LoadError::NotALibrary { .. }), "{e}");
    assert!(one_line(&e).contains("not a loadable shared library"));
}

#[test]
fn a_library_that_is_not_a_plugin() {
    let e = PluginLibrary::load(&common::library("habitus_fixture_not_a_plugin")).unwrap_err();
    assert!(matches!(e, LoadError::NotAPlugin { .. }), "{e}");
    assert!(one_line(&e).contains("not a Habitus plugin"));
}

/// The versioning policy (plugins/sdk/README.md, "Versioning") in action: a plugin built
/// against the previous interface release (0.0.1, a different `0.y`) is refused before
/// any of its code runs, with one line that names the file, both versions and the fix.
#[test]
fn a_plugin_built_against_an_older_interface() {
    let path = common::library("habitus_fixture_old_interface");
    let e = PluginLibrary::load(&path).unwrap_err();
    let line = one_line(&e);
    assert!(
        matches!(&e, LoadError::IncompatibleInterface { expected, found, .. }
            if expected == habitus_plugin::INTERFACE_VERSION && found == "0.0.1"),
        "{line}"
    );
    let v = habitus_plugin::INTERFACE_VERSION;
    assert_eq!(
        line,
        format!(
            "{}: built against plugin interface 0.0.1, this host needs a compatible {v} \
             (rebuild the plugin against habitus-plugin {v})",
            path.display()
        )
    );
    // The host is unaffected: a current plugin still loads after the refusal.
    assert!(PluginLibrary::load(&common::library("habitus_keystroke")).is_ok());
}

#[test]
fn panicking_plugin_is_contained() {
    let lib = PluginLibrary::load(&common::library("habitus_fixture_panics")).unwrap();
    let err = lib
        .instantiate("panic-in-new")
        .err()
        .expect("constructor panic reported");
    assert!(
        matches!(&err, HostError::Plugin { error, .. } if error.kind == ErrorKind::PANICKED),
        "{err}"
    );
    let plugin = lib.instantiate("panic").unwrap();
    let window: Vec<Event> = vec![Event::at(EventKind::WHEEL, 1, 0.0, 1.0)];
    let windows: Vec<RVec<Event>> = vec![window.clone().into()];
    for err in [
        plugin.enroll(&[], &windows).err(),
        plugin.score(b"x", &window).err().map(|e| match e {
            HostError::Plugin { .. } => e,
            other => panic!("expected a plugin error, got {other}"),
        }),
    ] {
        let err = err.expect("panic reported as an error");
        assert!(err.to_string().contains("panics on purpose"), "{err}");
    }
    // Still alive, and a healthy instance of the same library works.
    let healthy = lib.instantiate("").unwrap();
    assert_eq!(healthy.score(b"p", &window).unwrap().llr, 1.0);
}

#[test]
fn invalid_scores_are_refused() {
    let lib = PluginLibrary::load(&common::library("habitus_fixture_panics")).unwrap();
    let plugin = lib.instantiate("nan").unwrap();
    let e = plugin
        .score(b"p", &[Event::at(EventKind::WHEEL, 1, 0.0, 1.0)])
        .unwrap_err();
    assert!(matches!(e, HostError::InvalidScore { .. }), "{e}");
}

#[test]
fn a_directory_of_good_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "habitus_keystroke",
        "habitus_fixture_panics",
        "habitus_fixture_old_interface",
        "habitus_fixture_not_a_plugin",
    ] {
        std::fs::copy(
            common::library(name),
            dir.path().join(format!("lib{name}.so")),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("libgarbage.so"), [0u8; 64]).unwrap();
    std::fs::write(dir.path().join("README.txt"), "not considered").unwrap();
    let (loaded, errors) = load_dir(dir.path());
    let mut names: Vec<&str> = loaded.iter().map(|l| l.descriptor.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["broken", "keystroke"]);
    assert_eq!(errors.len(), 3, "{errors:?}");
    for e in &errors {
        let line = one_line(e);
        assert!(
            line.starts_with(dir.path().to_str().unwrap()),
            "names the file: {line}"
        );
    }
}

/// Finding a plugin by name opens only the files named for it: another library in the
/// directory (here a plugin under a stray name) is never loaded, so its initialisers
/// never run in the host (habitusd is root). Checked in this process's own mappings.
#[test]
fn find_plugin_opens_only_the_files_named_for_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::library("habitus_keystroke"),
        dir.path().join("libhabitus_keystroke.so"),
    )
    .unwrap();
    let stray = dir.path().join("libstray_beside_the_plugins.so");
    std::fs::copy(common::library("habitus_fixture_panics"), &stray).unwrap();
    let dirs = [dir.path().to_path_buf()];
    let lib = find_plugin(&dirs, "keystroke").expect("found by its file name");
    assert_eq!(lib.descriptor.name.as_str(), "keystroke");
    let Err(err) = find_plugin(&dirs, "broken") else {
        panic!("found, though no file carries its name");
    };
    assert!(
        err.contains("looked at libbroken.so, broken.so and lib*_broken.so"),
        "{err}"
    );
    // A vendor's file name (`libacme_NAME.so`) is a candidate too.
    std::fs::rename(
        dir.path().join("libhabitus_keystroke.so"),
        dir.path().join("libacme_keystroke.so"),
    )
    .unwrap();
    assert!(find_plugin(&dirs, "keystroke").is_ok());
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        !maps.contains(stray.to_str().unwrap()),
        "the stray library was loaded"
    );
}
