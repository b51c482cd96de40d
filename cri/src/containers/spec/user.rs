//! The process's uid, gid and supplementary groups, resolved in the image's accounts.
//!
//! Who: `run_as_username`, else `run_as_user`, else the image's `User`; `run_as_group` sets
//! the group and needs one of the first two (the CRI API says so; containerd refuses it too).
//! A name must be in the image's /etc/passwd (a group name in /etc/group); a numeric uid
//! need not be, and then its gid is 0 (containerd's `WithUserID`).
//!
//! Supplementary groups (policy Merge, the default): the primary gid itself (leaving it out
//! let a process drop it with setgroups and bypass a group's negative permissions,
//! CVE-2023-25173), the groups of /etc/group that list the user, and the request's
//! `supplemental_groups`; sorted, once each. Policy Strict leaves /etc/group out.
//! containerd 1.6 looks up /etc/group for the CRI user only (uid 0 when the image names the
//! user); this takes the user the process actually runs as, as Docker does.

use super::{sc_field, Accounts, SpecError};
use k8s_cri::v1::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};

/// Which of the image's account files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcFile {
    Passwd,
    Group,
}

impl EtcFile {
    pub fn path(self) -> &'static str {
        match self {
            EtcFile::Passwd => "/etc/passwd",
            EtcFile::Group => "/etc/group",
        }
    }
}

/// The resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// A passwd entry: name, uid, gid.
type Entry = (String, u32, u32);

fn scan_err(file: EtcFile) -> impl FnOnce(std::io::Error) -> SpecError {
    move |source| SpecError::Accounts {
        file: file.path(),
        source,
    }
}

/// The first passwd entry `pick` accepts (lines that do not parse are skipped, as runc does).
fn find_user(
    accounts: &dyn Accounts,
    pick: &dyn Fn(&str, u32) -> bool,
) -> Result<Option<Entry>, SpecError> {
    let mut found = None;
    accounts
        .scan(EtcFile::Passwd, &mut |f| {
            if f.len() < 4 {
                return false;
            }
            let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else {
                return false;
            };
            if pick(f[0], uid) {
                found = Some((f[0].to_string(), uid, gid));
            }
            found.is_some()
        })
        .map_err(scan_err(EtcFile::Passwd))?;
    Ok(found)
}

fn group_by_name(accounts: &dyn Accounts, name: &str) -> Result<Option<u32>, SpecError> {
    let mut found = None;
    accounts
        .scan(EtcFile::Group, &mut |f| {
            if f.len() >= 3 && f[0] == name {
                found = f[2].parse().ok();
            }
            found.is_some()
        })
        .map_err(scan_err(EtcFile::Group))?;
    Ok(found)
}

/// The gids of the groups whose member list names `user`.
fn member_of(accounts: &dyn Accounts, user: &str) -> Result<Vec<u32>, SpecError> {
    let mut gids = Vec::new();
    accounts
        .scan(EtcFile::Group, &mut |f| {
            if f.len() >= 4 && f[3].split(',').any(|m| m.trim() == user) {
                if let Ok(gid) = f[2].parse() {
                    gids.push(gid);
                }
            }
            false
        })
        .map_err(scan_err(EtcFile::Group))?;
    Ok(gids)
}

fn id(field: &str, value: i64) -> Result<u32, SpecError> {
    u32::try_from(value).map_err(|_| SpecError::Invalid {
        field: field.into(),
        value: value.to_string(),
        reason: "not a valid id (0..=4294967295)",
    })
}

/// The user part: a uid or a name; returns (uid, passwd gid, name) — the gid 0 and no name
/// when a numeric uid has no entry.
fn user_part(
    accounts: &dyn Accounts,
    field: &str,
    user: &str,
) -> Result<(u32, u32, Option<String>), SpecError> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(match find_user(accounts, &|_, u| u == uid)? {
            Some((name, _, gid)) => (uid, gid, Some(name)),
            None => (uid, 0, None),
        });
    }
    if user.is_empty() || user.contains(['\0', '\n']) {
        return Err(SpecError::Invalid {
            field: field.into(),
            value: user.into(),
            reason: "not a user name or uid",
        });
    }
    match find_user(accounts, &|n, _| n == user)? {
        Some((name, uid, gid)) => Ok((uid, gid, Some(name))),
        None => Err(SpecError::UnknownUser {
            field: field.into(),
            name: user.into(),
        }),
    }
}

fn group_part(accounts: &dyn Accounts, field: &str, group: &str) -> Result<u32, SpecError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    group_by_name(accounts, group)?.ok_or_else(|| SpecError::UnknownGroup {
        field: field.into(),
        name: group.into(),
    })
}

/// The process's identity from the security context and the image's `User`.
pub(super) fn resolve(
    sc: &LinuxContainerSecurityContext,
    image_user: &str,
    accounts: &dyn Accounts,
) -> Result<User, SpecError> {
    let group_field = sc_field("run_as_group");
    let requested_group = sc
        .run_as_group
        .as_ref()
        .map(|g| id(&group_field, g.value))
        .transpose()?;
    let (field, user, group) = if !sc.run_as_username.is_empty() {
        (
            sc_field("run_as_username"),
            sc.run_as_username.clone(),
            None,
        )
    } else if let Some(u) = &sc.run_as_user {
        let field = sc_field("run_as_user");
        (field.clone(), id(&field, u.value)?.to_string(), None)
    } else if let Some(g) = &sc.run_as_group {
        return Err(SpecError::GroupWithoutUser { gid: g.value });
    } else {
        let field = "the image's User".to_string();
        match image_user.split_once(':') {
            Some((u, g)) => (field, u.to_string(), Some(g.to_string())),
            None => (field, image_user.to_string(), None),
        }
    };
    let (uid, passwd_gid, name) = if user.is_empty() && group.is_none() {
        (0, 0, find_user(accounts, &|_, u| u == 0)?.map(|e| e.0))
    } else {
        user_part(accounts, &field, &user)?
    };
    let gid = match (requested_group, group) {
        (Some(gid), _) => gid,
        (None, Some(g)) => group_part(accounts, &field, &g)?,
        (None, None) => passwd_gid,
    };
    let mut additional_gids = vec![gid];
    let strict = sc.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32;
    if let (false, Some(name)) = (strict, &name) {
        additional_gids.extend(member_of(accounts, name)?);
    }
    let field = sc_field("supplemental_groups");
    for g in &sc.supplemental_groups {
        additional_gids.push(id(&field, *g)?);
    }
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}
