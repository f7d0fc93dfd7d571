//! The `ember` binary as an operator meets it: version, help, exit codes.

mod support;

use support::cli::{run as ember, stdout};

#[test]
fn version_prints_the_crate_version() {
    let expected = format!("ember {}\n", env!("CARGO_PKG_VERSION"));
    for args in [&["--version"][..], &["version"][..]] {
        let output = ember(args);
        assert!(output.status.success(), "{args:?}");
        assert_eq!(stdout(&output), expected, "{args:?}");
    }
}

#[test]
fn help_lists_commands_and_explains_one() {
    let output = ember(&["help"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("version"));
    let output = ember(&["version", "--help"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("usage: ember version"));
}

#[test]
fn unknown_commands_and_flags_exit_2_with_a_usage_line() {
    for args in [&["frobnicate"][..], &["version", "--bogus"][..], &[][..]] {
        let output = ember(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("usage: ember"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_bad_log_level_is_a_usage_error_naming_the_flag() {
    let output = ember(&["--log-level", "loud", "version"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--log-level"));
}
