//! Module options from the PAM configuration line (`socket=... timeout_ms=... debug`).
//!
//! Parsing is strict: an unknown or unparsable option is reported, and the module then
//! returns `PAM_IGNORE` (the stack asks for the strong factor) instead of guessing what
//! the administrator meant. A repeated option takes its last value.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Allowed range of `timeout_ms=`.
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=10_000;
/// Allowed range of `max_age_s=` (one second to one day).
pub const MAX_AGE_S_RANGE: std::ops::RangeInclusive<u64> = 1..=86_400;

pub const DEFAULT_TIMEOUT_MS: u64 = 300;
pub const DEFAULT_MIN_TRUST: f64 = 95.0;
pub const DEFAULT_MAX_AGE_S: u64 = 120;

/// The parsed options of one module line.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// habitusd's socket.
    pub socket: PathBuf,
    /// One deadline for connect, write and read together.
    pub timeout: Duration,
    /// Lowest trust (0–100) that still counts as trusted.
    pub min_trust: f64,
    /// Oldest evidence and verdict accepted, in seconds.
    pub max_age_s: u64,
    /// Services the module acts for; `None`: all.
    pub services: Option<Vec<String>>,
    /// Log every step of the decision.
    pub debug: bool,
    /// Never talk to the user through the conversation function.
    pub quiet: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            socket: PathBuf::from(habitus_protocol::DEFAULT_SOCKET),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            min_trust: DEFAULT_MIN_TRUST,
            max_age_s: DEFAULT_MAX_AGE_S,
            services: None,
            debug: false,
            quiet: false,
        }
    }
}

impl Options {
    /// Whether the module should act for `service` (`services=` unset means every one).
    pub fn covers_service(&self, service: &[u8]) -> bool {
        match &self.services {
            None => true,
            Some(list) => list.iter().any(|s| s.as_bytes() == service),
        }
    }
}

/// An option the module could not accept. The fix is always in the PAM configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionError {
    /// Not an option this module knows (a typo, or an option of another module).
    Unknown(String),
    /// A known option with a value out of range or of the wrong form.
    Invalid {
        option: String,
        value: String,
        expected: &'static str,
    },
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::Unknown(arg) => write!(f, "unknown option {arg:?}"),
            OptionError::Invalid {
                option,
                value,
                expected,
            } => write!(f, "option {option}={value:?}: expected {expected}"),
        }
    }
}

/// Everything read from the arguments: the options (defaults where an argument was
/// refused, so `debug` and `quiet` still apply) and every refused argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub options: Options,
    pub errors: Vec<OptionError>,
}

/// Parses the module arguments (`argv` of `pam_sm_*`) as raw bytes.
pub fn parse<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Parsed {
    let mut options = Options::default();
    let mut errors = Vec::new();
    for raw in args {
        let Ok(arg) = std::str::from_utf8(raw) else {
            errors.push(OptionError::Unknown(
                String::from_utf8_lossy(raw).into_owned(),
            ));
            continue;
        };
        if let Err(e) = apply(&mut options, arg) {
            errors.push(e);
        }
    }
    Parsed { options, errors }
}

fn apply(options: &mut Options, arg: &str) -> Result<(), OptionError> {
    match arg {
        "debug" => options.debug = true,
        "quiet" => options.quiet = true,
        _ => {
            let Some((name, value)) = arg.split_once('=') else {
                return Err(OptionError::Unknown(arg.to_owned()));
            };
            let invalid = |expected| OptionError::Invalid {
                option: name.to_owned(),
                value: value.to_owned(),
                expected,
            };
            match name {
                "socket" => {
                    // Relative paths would depend on the calling program's directory.
                    if !value.starts_with('/') || value.len() > 107 {
                        return Err(invalid("an absolute path of at most 107 bytes"));
                    }
                    options.socket = PathBuf::from(value);
                }
                "timeout_ms" => {
                    let ms = value
                        .parse::<u64>()
                        .ok()
                        .filter(|ms| TIMEOUT_MS_RANGE.contains(ms))
                        .ok_or_else(|| invalid("an integer from 1 to 10000"))?;
                    options.timeout = Duration::from_millis(ms);
                }
                "min_trust" => {
                    options.min_trust = value
                        .parse::<f64>()
                        .ok()
                        .filter(|t| t.is_finite() && (0.0..=100.0).contains(t))
                        .ok_or_else(|| invalid("a number from 0 to 100"))?;
                }
                "max_age_s" => {
                    options.max_age_s = value
                        .parse::<u64>()
                        .ok()
                        .filter(|s| MAX_AGE_S_RANGE.contains(s))
                        .ok_or_else(|| invalid("an integer from 1 to 86400"))?;
                }
                "services" => {
                    let list: Vec<String> = value.split(',').map(str::to_owned).collect();
                    if list.iter().any(|s| s.is_empty()) {
                        return Err(invalid("a comma-separated list of service names"));
                    }
                    options.services = Some(list);
                }
                _ => return Err(OptionError::Unknown(arg.to_owned())),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Parsed {
        parse(args.iter().map(|a| a.as_bytes()))
    }

    #[test]
    fn defaults_without_arguments() {
        let parsed = parse_strs(&[]);
        assert!(parsed.errors.is_empty());
        let o = parsed.options;
        assert_eq!(o.socket, PathBuf::from("/run/habitus/habitusd.sock"));
        assert_eq!(o.timeout, Duration::from_millis(300));
        assert_eq!(o.min_trust, 95.0);
        assert_eq!(o.max_age_s, 120);
        assert_eq!(o.services, None);
        assert!(!o.debug && !o.quiet);
        assert!(o.covers_service(b"sudo"));
    }

    #[test]
    fn every_option_is_read() {
        let parsed = parse_strs(&[
            "socket=/tmp/h.sock",
            "timeout_ms=50",
            "min_trust=80.5",
            "max_age_s=30",
            "services=sudo,login",
            "debug",
            "quiet",
        ]);
        assert_eq!(parsed.errors, vec![]);
        let o = parsed.options;
        assert_eq!(o.socket, PathBuf::from("/tmp/h.sock"));
        assert_eq!(o.timeout, Duration::from_millis(50));
        assert_eq!(o.min_trust, 80.5);
        assert_eq!(o.max_age_s, 30);
        assert_eq!(o.services, Some(vec!["sudo".into(), "login".into()]));
        assert!(o.debug && o.quiet);
        assert!(o.covers_service(b"login"));
        assert!(!o.covers_service(b"su"));
        assert!(!o.covers_service(b"sud"));
    }

    #[test]
    fn last_duplicate_wins() {
        let o = parse_strs(&["timeout_ms=10", "timeout_ms=20", "services=a", "services=b"]);
        assert!(o.errors.is_empty());
        assert_eq!(o.options.timeout, Duration::from_millis(20));
        assert_eq!(o.options.services, Some(vec!["b".into()]));
    }

    #[test]
    fn bounds_are_inclusive() {
        for ok in [
            "timeout_ms=1",
            "timeout_ms=10000",
            "min_trust=0",
            "min_trust=100",
            "max_age_s=1",
            "max_age_s=86400",
        ] {
            assert!(parse_strs(&[ok]).errors.is_empty(), "{ok}");
        }
    }

    #[test]
    fn unparsable_values_are_refused_and_keep_the_default() {
        for bad in [
            "timeout_ms=abc",
            "timeout_ms=0",
            "timeout_ms=10001",
            "timeout_ms=-5",
            "timeout_ms=",
            "min_trust=NaN",
            "min_trust=inf",
            "min_trust=100.1",
            "min_trust=-1",
            "min_trust=high",
            "max_age_s=0",
            "max_age_s=86401",
            "max_age_s=1.5",
            "socket=relative/path",
            "socket=",
            "services=",
            "services=sudo,,login",
        ] {
            let parsed = parse_strs(&[bad]);
            assert_eq!(parsed.errors.len(), 1, "{bad}");
            assert!(
                matches!(parsed.errors[0], OptionError::Invalid { .. }),
                "{bad}: {:?}",
                parsed.errors
            );
            assert_eq!(parsed.options, Options::default(), "{bad}");
        }
        let long = format!("socket=/{}", "x".repeat(200));
        assert_eq!(parse_strs(&[&long]).errors.len(), 1);
    }

    #[test]
    fn unknown_options_are_refused_but_known_flags_still_apply() {
        let parsed = parse_strs(&[
            "quiet",
            "nullok",
            "debug=1",
            "Timeout_ms=5",
            "try_first_pass",
        ]);
        assert_eq!(
            parsed.errors,
            vec![
                OptionError::Unknown("nullok".into()),
                OptionError::Unknown("debug=1".into()),
                OptionError::Unknown("Timeout_ms=5".into()),
                OptionError::Unknown("try_first_pass".into()),
            ]
        );
        assert!(parsed.options.quiet);
        let non_utf8 = parse([&b"socket=/tmp/\xff"[..]]);
        assert_eq!(non_utf8.errors.len(), 1);
    }

    #[test]
    fn errors_say_what_was_expected() {
        let parsed = parse_strs(&["timeout_ms=abc"]);
        assert_eq!(
            parsed.errors[0].to_string(),
            "option timeout_ms=\"abc\": expected an integer from 1 to 10000"
        );
        assert_eq!(
            OptionError::Unknown("x".into()).to_string(),
            "unknown option \"x\""
        );
    }
}
