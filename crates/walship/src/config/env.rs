//! The environment as the parser sees it, and `$VAR` expansion as Go's `os.Expand` does it.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

/// A source of environment variables; the parser reads the environment only through this.
pub trait Env {
    /// The value of the variable `name`, or `None` when it is unset.
    fn var(&self, name: &str) -> Option<String>;

    /// The value of `name` when it is set and not empty: an empty variable counts as unset.
    fn non_empty(&self, name: &str) -> Option<String> {
        self.var(name).filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The process environment, plus `PID` (the process id) as Litestream's expansion provides it.
pub fn process_env(name: &str) -> Option<String> {
    match name {
        "PID" => Some(std::process::id().to_string()),
        _ => std::env::var(name).ok(),
    }
}

/// Expands `$NAME` and `${NAME}` in `text` exactly as Go's `os.Expand`, which Litestream uses:
/// unset variables become empty, and `$` not followed by a name is kept.
pub(super) fn expand(text: &str, env: &dyn Env) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if after.is_empty() {
            // Go copies a trailing `$` as it is.
            out.push('$');
            rest = after;
            break;
        }
        let (name, width) = shell_name(after);
        match name {
            Some(name) => out.push_str(&env.var(name).unwrap_or_default()),
            // `$` followed by no name at all is kept; bad `${...}` syntax is dropped, as Go does.
            None if width == 0 => out.push('$'),
            None => {}
        }
        rest = &after[width..];
    }
    out.push_str(rest);
    out
}

/// The variable name at the start of `s` (the text after a `$`) and how many bytes it spans.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let bytes = s.as_bytes();
    if bytes[0] == b'{' {
        if bytes.len() > 2 && is_special(bytes[1]) && bytes[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match s[1..].find('}') {
            Some(0) => (None, 2),
            Some(end) => (Some(&s[1..=end]), end + 2),
            None => (None, 1),
        };
    }
    if is_special(bytes[0]) {
        return (Some(&s[..1]), 1);
    }
    let len = bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count();
    ((len > 0).then(|| &s[..len]), len)
}

/// Go's shell special variables: `$1`, `$*`, `$$` and the like name a variable of one character.
fn is_special(b: u8) -> bool {
    matches!(
        b,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

/// A path as Litestream reads one: a `sqlite://` or `sqlite3://` prefix dropped, and a leading
/// `~` or `~/` replaced by `HOME`. Relative paths stay relative (to the working directory).
pub(super) fn expand_path(text: &str, env: &dyn Env) -> Result<PathBuf, String> {
    let text = ["sqlite3://", "sqlite://"]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
        .unwrap_or(text);
    let rest = match text.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.trim_start_matches('/'),
        _ => return Ok(PathBuf::from(text)),
    };
    let home = env
        .non_empty("HOME")
        .ok_or_else(|| format!("cannot expand {text:?}: HOME is not set"))?;
    Ok(Path::new(&home).join(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [("BUCKET", "b1"), ("A_1", "x"), ("EMPTY", ""), ("1", "one")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn both_forms_and_unset_variables() {
        assert_eq!(expand("s3://$BUCKET/db", &env()), "s3://b1/db");
        assert_eq!(expand("s3://${BUCKET}x/db", &env()), "s3://b1x/db");
        assert_eq!(expand("$A_1-$MISSING-${MISSING}.", &env()), "x--.");
        assert_eq!(expand("[$EMPTY]", &env()), "[]");
    }

    #[test]
    fn dollar_edge_cases_follow_go() {
        assert_eq!(expand("cost: 5$", &env()), "cost: 5$");
        assert_eq!(expand("a $ b", &env()), "a $ b");
        assert_eq!(expand("a${}b", &env()), "ab");
        assert_eq!(expand("a${b", &env()), "ab");
        assert_eq!(expand("$1 ${1}", &env()), "one one");
        assert_eq!(expand("p$$", &env()), "p");
        assert_eq!(expand("naïve $BUCKET é", &env()), "naïve b1 é");
    }

    #[test]
    fn the_process_env_knows_its_pid() {
        assert_eq!(process_env("PID"), Some(std::process::id().to_string()));
    }

    #[test]
    fn paths_lose_sqlite_prefixes_and_expand_home() {
        let mut env = env();
        assert_eq!(
            expand_path("sqlite:///data/a.db", &env),
            Ok("/data/a.db".into())
        );
        assert_eq!(expand_path("sqlite3://rel.db", &env), Ok("rel.db".into()));
        assert_eq!(expand_path("~user/a", &env), Ok("~user/a".into()));
        assert_eq!(
            expand_path("~/a.db", &env),
            Err("cannot expand \"~/a.db\": HOME is not set".to_owned())
        );
        env.insert("HOME".into(), "/home/me".into());
        assert_eq!(expand_path("~/a.db", &env), Ok("/home/me/a.db".into()));
        assert_eq!(expand_path("~", &env), Ok("/home/me".into()));
    }
}
