//! What a files capture takes from the host: a profile and/or extra path patterns, exclusions and the
//! root the host's `/` is at. One struct serves `vaultctl backup files`' flags, `vaultd`'s
//! `[[job]]` entries and the library, so both front ends check and expand it the same way.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::source::profile::{PathPattern, Profile};

/// A files capture's selection, as written by the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesSelection {
    /// A profile: master, node, etcd (built in), a name in the profile directories, or a .toml path.
    pub profile: Option<String>,
    /// Extra absolute path patterns to capture.
    pub paths: Vec<String>,
    /// Patterns to leave out.
    pub exclude: Vec<String>,
    /// Read the host's files under this directory (`/` normally).
    pub root: PathBuf,
}

impl Default for FilesSelection {
    fn default() -> Self {
        FilesSelection {
            profile: None,
            paths: Vec::new(),
            exclude: Vec::new(),
            root: PathBuf::from("/"),
        }
    }
}

/// Which field of a [`FilesSelection`] a problem is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectionField {
    Profile,
    Path(usize),
    Exclude(usize),
    Root,
}

/// A selection expanded on this host.
pub struct Resolved {
    pub profile: Option<Profile>,
    /// Existing in-host paths to capture.
    pub paths: Vec<PathBuf>,
    /// Patterns (of the profile or `paths`) that matched nothing here.
    pub missing: Vec<String>,
    /// Whether the host path is excluded (by `exclude` or the profile).
    pub excluded: Box<dyn Fn(&Path) -> bool + Send + Sync>,
}

impl FilesSelection {
    /// Every problem that can be found without reading the captured files: the profile loads, each
    /// pattern parses, something is selected at all. `check_root` also checks that `root` is a
    /// directory on this host.
    pub fn problems(&self, profile_dirs: &[PathBuf], check_root: bool) -> Vec<(SelectionField, Error)> {
        let mut out = Vec::new();
        if let Some(p) = &self.profile
            && let Err(e) = Profile::load(p, profile_dirs)
        {
            out.push((SelectionField::Profile, e));
        }
        for (i, p) in self.paths.iter().enumerate() {
            if let Err(e) = PathPattern::new(p) {
                out.push((SelectionField::Path(i), e));
            }
        }
        for (i, p) in self.exclude.iter().enumerate() {
            if let Err(e) = PathPattern::new(p) {
                out.push((SelectionField::Exclude(i), e));
            }
        }
        if self.profile.is_none() && self.paths.is_empty() {
            out.push((
                SelectionField::Profile,
                Error::usage("nothing to capture: no profile and no paths").hint("set a profile (master, node, etcd) or paths"),
            ));
        }
        if check_root && !self.root.is_dir() {
            out.push((
                SelectionField::Root,
                Error::usage(format!("capture root {} is not a directory", self.root.display())),
            ));
        }
        out
    }

    /// Load the profile and expand every pattern under `root`.
    pub fn resolve(&self, profile_dirs: &[PathBuf]) -> Result<Resolved> {
        if let Some((_, e)) = self.problems(profile_dirs, false).into_iter().next() {
            return Err(e);
        }
        let profile = self.profile.as_deref().map(|p| Profile::load(p, profile_dirs)).transpose()?;
        let mut paths = Vec::new();
        let mut missing = Vec::new();
        if let Some(p) = &profile {
            let (found, gone) = p.expand(&self.root)?;
            paths.extend(found);
            missing.extend(gone);
        }
        for text in &self.paths {
            let found = PathPattern::new(text)?.expand(&self.root)?;
            if found.is_empty() {
                missing.push(text.clone());
            }
            paths.extend(found);
        }
        let excludes = self.exclude.iter().map(|e| PathPattern::new(e)).collect::<Result<Vec<_>>>()?;
        let for_exclude = profile.clone();
        Ok(Resolved {
            profile,
            paths,
            missing,
            excluded: Box::new(move |p| excludes.iter().any(|e| e.matches(p)) || for_exclude.as_ref().is_some_and(|pr| pr.is_excluded(p))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_all_reported_with_their_field() {
        let s = FilesSelection {
            profile: Some("mastr".into()),
            paths: vec!["/etc/origin".into(), "relative".into()],
            exclude: vec!["/a/**b".into()],
            root: PathBuf::from("/nonexistent-root-for-test"),
        };
        let fields: Vec<_> = s.problems(&[], true).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            vec![
                SelectionField::Profile,
                SelectionField::Path(1),
                SelectionField::Exclude(0),
                SelectionField::Root
            ]
        );
        assert!(
            FilesSelection::default()
                .problems(&[], true)
                .iter()
                .any(|(f, _)| *f == SelectionField::Profile)
        );
    }

    #[test]
    fn resolve_expands_paths_and_excludes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/a")).unwrap();
        let s = FilesSelection {
            profile: None,
            paths: vec!["/etc/a".into(), "/etc/missing".into()],
            exclude: vec!["/etc/a/*.bak".into()],
            root: dir.path().to_path_buf(),
        };
        let r = s.resolve(&[]).unwrap();
        assert_eq!(r.paths, vec![PathBuf::from("/etc/a")]);
        assert_eq!(r.missing, vec!["/etc/missing".to_string()]);
        assert!((r.excluded)(Path::new("/etc/a/x.bak")));
        assert!(!(r.excluded)(Path::new("/etc/a/x")));
    }
}
