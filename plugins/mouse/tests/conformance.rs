//! The SDK's conformance kit, in process: the same checks `habitus plugin check` runs on
//! the built library.

use habitus_mouse::Mouse;
use habitus_plugin::conformance::{check, Options};

#[test]
fn conforms_to_the_plugin_contract() {
    // Not strict: the time budget is a warning, and debug builds are slow.
    check::<Mouse>(&Options::default()).assert_passed(false);
}
