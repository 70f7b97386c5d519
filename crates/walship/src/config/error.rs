//! Config errors, the places they name (`dbs[0].replicas[1]`), and finding their YAML lines.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// An error in the configuration: what is wrong, where (file, place, line), and what to do.
#[derive(Debug)]
pub struct ConfigError(Box<Details>);

/// The parts of a [`ConfigError`], boxed so that `Result`s stay small.
#[derive(Debug)]
struct Details {
    file: Option<PathBuf>,
    /// What the error is about: a place such as `dbs[0].monitor-interval`, or a whole sentence.
    subject: String,
    line: Option<usize>,
    /// What is wrong with the subject, when the subject is a place.
    detail: Option<String>,
    hint: Option<String>,
    at: Option<Pointer>,
}

/// The node an error is about, kept until the YAML line can be looked up.
#[derive(Debug)]
struct Pointer {
    place: Place,
    /// Whether the line wanted is the key's (unknown keys) rather than its value's.
    key_itself: bool,
}

impl ConfigError {
    /// An error whose message says everything, including its place if it has one.
    pub(super) fn new(message: impl Into<String>) -> Self {
        Self(Box::new(Details {
            file: None,
            subject: message.into(),
            line: None,
            detail: None,
            hint: None,
            at: None,
        }))
    }

    /// An error about the node at `place`: "dbs[0].busy-timeout (line 4): detail".
    pub(super) fn about(place: &Place, detail: impl Into<String>) -> Self {
        if place.0.is_empty() {
            return Self::new(detail);
        }
        let mut err = Self::new(place.to_string()).at(place);
        err.0.detail = Some(detail.into());
        err
    }

    /// Points the error at the value found at `place`, whose line the message will give.
    pub(super) fn at(self, place: &Place) -> Self {
        self.pointing(place, false)
    }

    /// Points the error at the key that ends `place` rather than at its value.
    pub(super) fn at_key(self, place: &Place) -> Self {
        self.pointing(place, true)
    }

    fn pointing(mut self, place: &Place, key_itself: bool) -> Self {
        self.0.at = Some(Pointer {
            place: place.clone(),
            key_itself,
        });
        self
    }

    /// Adds what the user can do about it.
    pub(super) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }

    /// Names the config file the error was found in.
    pub(super) fn in_file(mut self, path: &Path) -> Self {
        self.0.file = Some(path.to_owned());
        self
    }

    /// Finds the YAML line of the node the error points at, in the (expanded) text parsed.
    pub(super) fn locate(mut self, text: &str) -> Self {
        if let Some(pointer) = &self.0.at {
            self.0.line = line_of(text, &pointer.place.0, pointer.key_itself);
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        if let Some(file) = &d.file {
            write!(f, "{}: ", file.display())?;
        }
        f.write_str(&d.subject)?;
        if let Some(line) = d.line {
            write!(f, " (line {line})")?;
        }
        if let Some(detail) = &d.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(hint) = &d.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// One step from a node to a child: a mapping key or a sequence index; or a root that is not
/// in a file at all, such as a command-line argument.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    Arg(String),
}

/// A place in the document, such as `dbs[0].replicas[1]`; the root is the top level.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Place(Vec<Step>);

impl Place {
    /// A place outside any file, such as `replica URL "s3://b/db"`, named by `label`.
    pub(super) fn arg(label: String) -> Place {
        Place(vec![Step::Arg(label)])
    }

    /// The place of `key` inside this mapping.
    pub(super) fn key(&self, key: &str) -> Place {
        self.with(Step::Key(key.to_owned()))
    }

    /// The place of item `index` inside this sequence.
    pub(super) fn index(&self, index: usize) -> Place {
        self.with(Step::Index(index))
    }

    fn with(&self, step: Step) -> Place {
        let mut steps = self.0.clone();
        steps.push(step);
        Place(steps)
    }

    /// "at top level" or "in dbs[0]", to end a sentence about something found here.
    pub(super) fn within(&self) -> String {
        if self.0.is_empty() {
            "at top level".to_owned()
        } else {
            format!("in {self}")
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                // An argument is its own whole place: the keys standing for its parts mean
                // nothing to the user.
                Step::Arg(label) => return f.write_str(label),
                Step::Key(key) if i == 0 => f.write_str(key)?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// The marker of the error that [`Locate`] raises on reaching its target.
const FOUND: &str = "walship-config-locate-found";

/// The line of the node at `steps` (or of its key), or `None` if it cannot be found.
///
/// serde_yaml_ng's `Value` keeps no positions, but its deserializer stamps each error with the
/// position of the node being read; so the document is replayed, and an error is raised on
/// reaching the node. Only failed parses pay for this.
fn line_of(text: &str, steps: &[Step], key_itself: bool) -> Option<usize> {
    let locate = Locate { steps, key_itself };
    match locate.deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
        Err(err) if err.to_string().contains(FOUND) => err.location().map(|at| at.line()),
        _ => None,
    }
}

/// A deserializer seed that walks to a node and fails there, so the failure carries its line.
#[derive(Clone, Copy)]
struct Locate<'a> {
    steps: &'a [Step],
    key_itself: bool,
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Locate<'_> {
    /// At a scalar: found if this is the end of the path.
    fn scalar<E: de::Error>(self) -> Result<(), E> {
        if self.steps.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (want, rest) = match self.steps.split_first() {
            None => return Err(de::Error::custom(FOUND)),
            Some((Step::Key(want), rest)) => (want, rest),
            Some(_) => return Ok(()),
        };
        let seed = KeyIs {
            want,
            fail: rest.is_empty() && self.key_itself,
        };
        while let Some(hit) = map.next_key_seed(seed)? {
            if hit {
                let steps = rest;
                return map.next_value_seed(Locate { steps, ..self });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (want, rest) = match self.steps.split_first() {
            None => return Err(de::Error::custom(FOUND)),
            Some((Step::Index(want), rest)) => (*want, rest),
            Some(_) => return Ok(()),
        };
        for _ in 0..want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        let steps = rest;
        seq.next_element_seed(Locate { steps, ..self }).map(|_| ())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

/// A mapping key seed that tells whether the key is `want`, or fails on it if `fail` is set.
#[derive(Clone, Copy)]
struct KeyIs<'a> {
    want: &'a str,
    fail: bool,
}

impl KeyIs<'_> {
    fn check<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match key == self.want {
            true if self.fail => Err(E::custom(FOUND)),
            hit => Ok(hit),
        }
    }
}

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        self.check(key)
    }

    fn visit_bool<E: de::Error>(self, key: bool) -> Result<bool, E> {
        self.check(&key.to_string())
    }

    fn visit_i64<E: de::Error>(self, key: i64) -> Result<bool, E> {
        self.check(&key.to_string())
    }

    fn visit_u64<E: de::Error>(self, key: u64) -> Result<bool, E> {
        self.check(&key.to_string())
    }

    fn visit_f64<E: de::Error>(self, key: f64) -> Result<bool, E> {
        self.check(&key.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        self.check("~")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
addr: ':9090'
dbs:
  - path: /a.db
    replica:
      url: s3://b/a
  - path: /b.db
    replicas:
      - url: file:///x
      - type: s3
        bucket: b
";

    /// The line of the node at `place`, or of its key.
    fn line(place: &Place, key_itself: bool) -> Option<usize> {
        line_of(DOC, &place.0, key_itself)
    }

    #[test]
    fn places_render_like_paths() {
        let p = Place::default()
            .key("dbs")
            .index(1)
            .key("replicas")
            .index(0);
        assert_eq!(p.to_string(), "dbs[1].replicas[0]");
        assert_eq!(p.within(), "in dbs[1].replicas[0]");
        assert_eq!(Place::default().within(), "at top level");
        assert_eq!(
            Place::arg("replica URL \"x\"".into())
                .key("url")
                .to_string(),
            "replica URL \"x\""
        );
    }

    #[test]
    fn lines_of_keys_and_values() {
        let top = Place::default();
        let db1 = top.key("dbs").index(1);
        assert_eq!(line(&top.key("addr"), true), Some(1));
        assert_eq!(line(&db1, false), Some(6));
        assert_eq!(
            line(&db1.key("replicas").index(1).key("bucket"), true),
            Some(10)
        );
        assert_eq!(
            line(&top.key("dbs").index(0).key("replica").key("url"), false),
            Some(5)
        );
        assert_eq!(line(&top.key("nope"), true), None);
        assert_eq!(line(&top.key("dbs").index(7), false), None);
    }

    #[test]
    fn the_line_follows_the_place() {
        let url = Place::default()
            .key("dbs")
            .index(0)
            .key("replica")
            .key("url");
        let err = ConfigError::about(&url, "bad").hint("fix it").locate(DOC);
        assert_eq!(err.to_string(), "dbs[0].replica.url (line 5): bad; fix it");
        let err = ConfigError::about(&Place::default(), "no dbs").locate(DOC);
        assert_eq!(err.to_string(), "no dbs");
    }

    #[test]
    fn message_with_file_line_and_hint() {
        let err = ConfigError::new("unknown key \"adr\" at top level")
            .at_key(&Place::default().key("addr"))
            .hint("did you mean \"addr\"?")
            .locate(DOC)
            .in_file(Path::new("walship.yml"));
        assert_eq!(
            err.to_string(),
            "walship.yml: unknown key \"adr\" at top level (line 1); did you mean \"addr\"?"
        );
    }
}
