//! `exec --cgroup`: the sub-cgroups of the container's own that an exec'd process goes to,
//! in runc's forms: `PATH` (every hierarchy) or `CONTROLLER[,CONTROLLER]:PATH`, repeated.

use super::CgroupError;
use std::path::{Component, Path, PathBuf};

/// Parsed `--cgroup` arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubCgroups {
    /// The sub-cgroup in every hierarchy (an argument without a controller).
    pub all: Option<PathBuf>,
    /// (controller, sub-cgroup), in the order given; a later one for the same controller
    /// wins, as in runc.
    pub by_controller: Vec<(String, PathBuf)>,
}

fn invalid(arg: &str, reason: &'static str) -> CgroupError {
    CgroupError::InvalidSubCgroup {
        arg: arg.to_string(),
        reason,
    }
}

/// The path below the container's cgroup: relative, without `..` (runc refuses a path that
/// leaves the container's cgroup; its check is a string prefix, this one is per component).
fn below(arg: &str, path: &str) -> Result<PathBuf, CgroupError> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(invalid(arg, "not a sub-cgroup of the container's")),
        }
    }
    Ok(out)
}

impl SubCgroups {
    /// Parses the `--cgroup` arguments, as runc: a path without a controller must be the
    /// only argument.
    pub fn parse(args: &[String]) -> Result<Self, CgroupError> {
        let mut out = SubCgroups::default();
        for arg in args {
            let parts: Vec<&str> = arg.splitn(3, ':').collect();
            match parts[..] {
                [path] if args.len() == 1 => out.all = Some(below(arg, path)?),
                [_] => return Err(invalid(arg, "missing <controller>: prefix")),
                [controllers, path] => {
                    let path = below(arg, path)?;
                    for c in controllers.split(',') {
                        if c.is_empty() {
                            return Err(invalid(arg, "empty <controller> prefix"));
                        }
                        out.by_controller.retain(|(k, _)| k != c);
                        out.by_controller.push((c.to_string(), path.clone()));
                    }
                }
                _ => return Err(invalid(arg, "more than one ':'")),
            }
        }
        Ok(out)
    }

    /// No sub-cgroup was asked for: the container's own cgroups are used.
    pub fn is_empty(&self) -> bool {
        self.all.is_none() && self.by_controller.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SubCgroups, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        SubCgroups::parse(&args).map_err(|e| e.to_string())
    }

    #[test]
    fn runcs_forms_parse() {
        assert_eq!(parse(&["sub/a"]).unwrap().all, Some(PathBuf::from("sub/a")));
        let s = parse(&["pids,memory:x", "cpu:/y", "pids:z"]).unwrap();
        assert_eq!(s.all, None);
        let pairs: Vec<(&str, &str)> = s
            .by_controller
            .iter()
            .map(|(c, p)| (c.as_str(), p.to_str().unwrap()))
            .collect();
        assert_eq!(pairs, [("memory", "x"), ("cpu", "y"), ("pids", "z")]);
        assert!(parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn bad_arguments_are_refused_naming_them() {
        for (args, reason) in [
            (&["a", "b"][..], "missing <controller>: prefix"),
            (&["a:b:c"][..], "more than one ':'"),
            (&[",pids:x"][..], "empty <controller> prefix"),
            (&["pids:../x"][..], "not a sub-cgroup"),
            (&["a/../../b"][..], "not a sub-cgroup"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(
                err.contains(reason) && err.contains("--cgroup"),
                "{args:?}: {err}"
            );
        }
    }
}
