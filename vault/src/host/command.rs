//! Running a command line on this host without a shell, and showing it as an operator would type it.

use std::borrow::Cow;
use std::io;
use std::process::{Command, Output, Stdio};

use crate::error::{Error, Result};

/// Run a command line without a shell, stdin closed, capturing its output.
pub fn run_captured(argv: &[String]) -> Result<Output> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::usage("empty command"));
    };
    Command::new(program).args(args).stdin(Stdio::null()).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::io(format!("cannot run `{}`: {program} was not found", shell_join(argv))).hint("install it or check PATH")
        } else {
            Error::io(format!("cannot run `{}`", shell_join(argv))).with_source(e)
        }
    })
}

/// Run a command line and fail unless it exits 0; the error shows the command, its exit status and
/// the last lines of its stderr.
pub fn run_checked(argv: &[String]) -> Result<Output> {
    let output = run_captured(argv)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::io(format!(
            "`{}` failed ({}){}",
            shell_join(argv),
            output.status,
            stderr_tail(&output)
        )))
    }
}

/// `: <last lines of stderr>`, or nothing if it was empty.
pub fn stderr_tail(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    if tail.is_empty() { String::new() } else { format!(": {tail}") }
}

/// A command line as an operator would type it: words quoted for a POSIX shell where needed.
pub fn shell_join<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter().map(|w| shell_quote(w.as_ref())).collect::<Vec<_>>().join(" ")
}

/// One word quoted for a POSIX shell, only when it needs it.
pub fn shell_quote(word: &str) -> Cow<'_, str> {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | '+' | ',' | '@' | '%');
    if !word.is_empty() && word.chars().all(safe) {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

/// Owned argument vector from string literals.
pub fn argv<S: AsRef<str>>(words: &[S]) -> Vec<String> {
    words.iter().map(|w| w.as_ref().to_string()).collect()
}

/// The first file called `name` in a directory of `PATH`.
pub fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(
            shell_join(&["systemctl", "restart", "atomic-openshift-node"]),
            "systemctl restart atomic-openshift-node"
        );
        assert_eq!(
            shell_join(&["yum", "install", "-y", "foo-1:2.0-3.el7.x86_64"]),
            "yum install -y foo-1:2.0-3.el7.x86_64"
        );
        assert_eq!(shell_join(&["sh", "-c", "it's"]), r"sh -c 'it'\''s'");
        assert_eq!(shell_join(&["apt-get", "bash=1.0~rc1", ""]), "apt-get 'bash=1.0~rc1' ''");
    }

    #[test]
    fn a_failing_command_names_itself_its_status_and_stderr() {
        let e = run_checked(&argv(&["sh", "-c", "echo one >&2; echo two >&2; exit 4"])).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("exit status: 4") && text.contains("one / two"), "{text}");
        let e = run_captured(&argv(&["/nonexistent/vault-test-command"])).unwrap_err();
        assert!(e.to_string().contains("was not found"), "{e}");
        assert!(run_checked(&argv(&["true"])).is_ok());
    }
}
