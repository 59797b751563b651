//! Least privilege: once the TUN device is open and every port is bound, the daemon
//! becomes `security.user`/`group` and keeps one capability, CAP_NET_ADMIN, which
//! route changes on reload need (`ip route`, run as a child, gets it through the
//! ambient set). Everything else root could do is gone, from every thread and from
//! the bounding set, so not even an exec can get it back.
//!
//! Order matters (capabilities(7)): the bounding set is cut while we are still root
//! (it needs CAP_SETPCAP); "keep capabilities" is set so the permitted set survives
//! the uid change; groups, gid, then uid change (glibc applies them to every thread);
//! then the permitted, effective, inheritable and ambient sets are set to the one we
//! keep, on this thread, the actix thread that runs reloads and spawns `ip`. The data
//! threads lose every capability with the uid change: they need none.

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Group, Uid, User};

use crate::error::{Error, Result};

/// The capabilities kept after the drop.
pub const KEPT: &[Capability] = &[Capability::CAP_NET_ADMIN];

/// Who the daemon became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The user's name as configured, and its uid.
    pub user: String,
    /// The uid now in force.
    pub uid: u32,
    /// The gid now in force.
    pub gid: u32,
}

/// Resolves a user given by name or number.
fn user(spec: &str) -> Result<User> {
    let found = match spec.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(spec),
    };
    found
        .map_err(|e| Error::Privileges(format!("looking up user {spec}: {e}")))?
        .ok_or_else(|| Error::Privileges(format!("no user {spec}")))
}

/// Resolves a group given by name or number.
fn group(spec: &str) -> Result<Gid> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    Group::from_name(spec)
        .map_err(|e| Error::Privileges(format!("looking up group {spec}: {e}")))?
        .map(|g| g.gid)
        .ok_or_else(|| Error::Privileges(format!("no group {spec}")))
}

/// The uid and gid `user_spec` and `group_spec` name, without changing anything.
///
/// # Errors
/// `E_PRIVILEGES` when a name is unknown.
pub fn resolve(user_spec: &str, group_spec: Option<&str>) -> Result<(Uid, Gid)> {
    let target = user(user_spec)?;
    let gid = match group_spec {
        Some(g) => group(g)?,
        None => target.gid,
    };
    Ok((target.uid, gid))
}

/// Becomes `user_spec` (and `group_spec`, else the user's primary group), keeping
/// [`KEPT`] only. Already that user: only the capabilities are cut.
///
/// # Errors
/// `E_PRIVILEGES` when a name is unknown or a step is not permitted; the caller must
/// not go on, since the process may be half-way.
pub fn drop_to(user_spec: &str, group_spec: Option<&str>) -> Result<Dropped> {
    let target = user(user_spec)?;
    let gid = match group_spec {
        Some(g) => group(g)?,
        None => target.gid,
    };
    let step = |what: &str| {
        let what = what.to_string();
        move |e: caps::errors::CapsError| Error::Privileges(format!("{what}: {e}"))
    };
    let kept: CapsHashSet = KEPT.iter().copied().collect();
    if Uid::effective() != target.uid {
        for cap in caps::all().difference(&kept) {
            // A capability this kernel does not know cannot be dropped, nor used.
            if caps::has_cap(None, CapSet::Bounding, *cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, *cap).map_err(step("bounding set"))?;
            }
        }
        caps::securebits::set_keepcaps(true).map_err(step("keep capabilities"))?;
        let sys =
            |what: &'static str| move |e: nix::Error| Error::Privileges(format!("{what}: {e}"));
        nix::unistd::setgroups(&[gid]).map_err(sys("setgroups"))?;
        nix::unistd::setgid(gid).map_err(sys("setgid"))?;
        nix::unistd::setuid(target.uid).map_err(sys("setuid"))?;
        caps::securebits::set_keepcaps(false).map_err(step("keep capabilities"))?;
    }
    let held = caps::read(None, CapSet::Permitted).map_err(step("reading permitted"))?;
    let kept: CapsHashSet = kept.intersection(&held).copied().collect();
    // Effective first: it must stay within the permitted set at every step.
    caps::set(None, CapSet::Effective, &kept).map_err(step("effective set"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(step("permitted set"))?;
    caps::set(None, CapSet::Inheritable, &kept).map_err(step("inheritable set"))?;
    for cap in &kept {
        caps::raise(None, CapSet::Ambient, *cap).map_err(step("ambient set"))?;
    }
    Ok(Dropped {
        user: target.name,
        uid: Uid::effective().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve_and_unknown_ones_say_which() {
        assert_eq!(user("0").expect("uid 0 exists").name, "root");
        assert_eq!(user("root").expect("root exists").uid.as_raw(), 0);
        assert_eq!(group("0").expect("a number").as_raw(), 0);
        let err = user("no-such-user-sss").expect_err("unknown");
        assert_eq!(err.code(), crate::error::ErrorCode::Privileges);
        assert!(err.to_string().contains("no-such-user-sss"), "{err}");
        assert!(group("no-such-group-sss").is_err());
    }
}
