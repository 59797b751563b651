//! When the TLS files deserve a new rustls configuration: the certificate watcher's
//! decisions, with no I/O and no clock.
//!
//! Each tick the actor stats the four files and hands the [`Look`] to [`Watch::looked`];
//! only when a size, a modification time or a file's presence changed does it read
//! them and hand their digests to [`Watch::read`]. Digests, not stamps, decide: a
//! `touch` or a rewrite with the same bytes changes nothing. A content set that was
//! refused once is not tried again (nor audited again) until some file changes
//! again, so a certificate written before its key is refused at one tick and put in
//! use at the tick that sees the key: the refusal is remembered by content, never
//! latched.

use std::time::SystemTime;

/// The files watched, in [`Role::ALL`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `tunnel.cert_file`: our certificate chain.
    Cert,
    /// `tunnel.key_file`: our private key.
    Key,
    /// `tunnel.ca_file`: the CA bundle.
    Ca,
    /// `security.crl_file`: revoked certificates.
    Crl,
}

impl Role {
    /// Every role, in the order of a [`Look`] and of [`Digests`].
    pub const ALL: [Role; 4] = [Role::Cert, Role::Key, Role::Ca, Role::Crl];

    /// The name in logs, audit records and `ctl certs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Cert => "cert",
            Role::Key => "key",
            Role::Ca => "ca",
            Role::Crl => "crl",
        }
    }
}

/// What a stat of one file says: enough to notice a rewrite without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// No file is configured for the role (only `crl_file` may be unset).
    Unset,
    /// Configured, but the stat failed (removed, or being replaced).
    Missing,
    /// Present with this size and modification time.
    Present {
        /// Bytes.
        len: u64,
        /// Modification time.
        modified: SystemTime,
    },
}

/// One stat of every file, in [`Role::ALL`] order.
pub type Look = [Stamp; 4];

/// SHA-256 of a file's content, in [`Role::ALL`] order; none when the file is unset
/// or could not be read.
pub type Digests = [Option<[u8; 32]>; 4];

/// What to do with the content now on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The same bytes as in use (a touch, or a change undone): nothing to do.
    Unchanged,
    /// Exactly the content refused last time: wait for the next change.
    StillRefused,
    /// New content: build a configuration from it and swap it in, or refuse it.
    Build {
        /// The files whose content differs from the one in use.
        changed: Vec<Role>,
    },
}

impl Verdict {
    /// Whether our own certificate or key changed: a client then re-handshakes, so
    /// the server sees the renewed certificate without waiting for a reconnect.
    pub fn renews_identity(&self) -> bool {
        matches!(self, Verdict::Build { changed }
            if changed.iter().any(|r| matches!(r, Role::Cert | Role::Key)))
    }
}

/// The watcher's memory: what it last saw, what is in use, what it refused.
#[derive(Debug)]
pub struct Watch {
    last: Look,
    in_use: Digests,
    refused: Option<Digests>,
}

impl Watch {
    /// A watch whose files, as stamped by `look`, hold `in_use`: the content the
    /// running configuration was built from.
    pub fn new(look: Look, in_use: Digests) -> Self {
        Self {
            last: look,
            in_use,
            refused: None,
        }
    }

    /// Records a stat of the files; true when something looks different from the
    /// last one, and the files are to be read.
    pub fn looked(&mut self, look: Look) -> bool {
        let changed = look != self.last;
        self.last = look;
        changed
    }

    /// Decides what the content now on disk deserves.
    pub fn read(&mut self, digests: &Digests) -> Verdict {
        if *digests == self.in_use {
            self.refused = None;
            return Verdict::Unchanged;
        }
        if self.refused.as_ref() == Some(digests) {
            return Verdict::StillRefused;
        }
        let changed = Role::ALL
            .iter()
            .zip(digests.iter().zip(self.in_use.iter()))
            .filter(|(_, (new, old))| new != old)
            .map(|(role, _)| *role)
            .collect();
        Verdict::Build { changed }
    }

    /// The content `digests` was built and is now in use.
    pub fn swapped(&mut self, digests: Digests) {
        self.in_use = digests;
        self.refused = None;
    }

    /// The content `digests` could not be used; the old stays in use.
    pub fn refused(&mut self, digests: Digests) {
        self.refused = Some(digests);
    }

    /// A reload put the files of `look`, holding `in_use`, into use by itself.
    pub fn rebase(&mut self, look: Look, in_use: Digests) {
        *self = Self::new(look, in_use);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn stamp(len: u64, secs: u64) -> Stamp {
        Stamp::Present {
            len,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    fn look(secs: [u64; 3]) -> Look {
        [
            stamp(100, secs[0]),
            stamp(200, secs[1]),
            stamp(300, secs[2]),
            Stamp::Unset,
        ]
    }

    fn digests(cert: u8, key: u8, ca: u8) -> Digests {
        [Some([cert; 32]), Some([key; 32]), Some([ca; 32]), None]
    }

    #[test]
    fn an_unchanged_stat_reads_nothing() {
        let mut w = Watch::new(look([1, 1, 1]), digests(1, 1, 1));
        assert!(!w.looked(look([1, 1, 1])));
        assert!(!w.looked(look([1, 1, 1])));
    }

    #[test]
    fn a_touch_is_read_but_changes_nothing() {
        let mut w = Watch::new(look([1, 1, 1]), digests(1, 1, 1));
        assert!(w.looked(look([2, 1, 1])));
        assert_eq!(w.read(&digests(1, 1, 1)), Verdict::Unchanged);
        assert!(!w.looked(look([2, 1, 1])), "the new stamp is remembered");
    }

    #[test]
    fn new_content_names_the_changed_files() {
        let mut w = Watch::new(look([1, 1, 1]), digests(1, 1, 1));
        assert!(w.looked(look([2, 2, 1])));
        let v = w.read(&digests(2, 2, 1));
        assert_eq!(
            v,
            Verdict::Build {
                changed: vec![Role::Cert, Role::Key]
            }
        );
        assert!(v.renews_identity());
        w.swapped(digests(2, 2, 1));
        assert_eq!(w.read(&digests(2, 2, 1)), Verdict::Unchanged);
    }

    #[test]
    fn a_new_ca_alone_does_not_renew_our_identity() {
        let mut w = Watch::new(look([1, 1, 1]), digests(1, 1, 1));
        let v = w.read(&digests(1, 1, 2));
        assert_eq!(
            v,
            Verdict::Build {
                changed: vec![Role::Ca]
            }
        );
        assert!(!v.renews_identity());
    }

    #[test]
    fn a_removed_file_is_news_and_its_return_too() {
        let mut w = Watch::new(look([1, 1, 1]), digests(1, 1, 1));
        let mut gone = look([1, 1, 1]);
        gone[0] = Stamp::Missing;
        assert!(w.looked(gone));
        let unreadable = [None, Some([1; 32]), Some([1; 32]), None];
        assert_eq!(
            w.read(&unreadable),
            Verdict::Build {
                changed: vec![Role::Cert]
            }
        );
        w.refused(unreadable);
        assert!(w.looked(look([5, 1, 1])));
        assert_eq!(w.read(&digests(1, 1, 1)), Verdict::Unchanged);
    }

    #[test]
    fn a_refused_content_waits_for_the_next_change_then_is_retried() {
        // The certificate is written first: it does not match the old key.
        let mut w = Watch::new(look([1, 1, 1]), digests(1, 1, 1));
        assert!(w.looked(look([2, 1, 1])));
        let half = digests(2, 1, 1);
        assert!(matches!(w.read(&half), Verdict::Build { .. }));
        w.refused(half);
        // Nothing new on disk: not tried (nor audited) again.
        assert_eq!(w.read(&half), Verdict::StillRefused);
        assert!(!w.looked(look([2, 1, 1])));
        // The key arrives: the pair is tried at once, not latched as refused.
        assert!(w.looked(look([2, 2, 1])));
        let whole = digests(2, 2, 1);
        assert_eq!(
            w.read(&whole),
            Verdict::Build {
                changed: vec![Role::Cert, Role::Key]
            }
        );
        w.swapped(whole);
        assert_eq!(w.read(&whole), Verdict::Unchanged);
    }

    #[test]
    fn undoing_a_refused_change_clears_the_refusal() {
        let mut w = Watch::new(look([1, 1, 1]), digests(1, 1, 1));
        w.refused(digests(9, 1, 1));
        assert_eq!(w.read(&digests(1, 1, 1)), Verdict::Unchanged);
        // The same broken content written again is news again.
        assert!(matches!(w.read(&digests(9, 1, 1)), Verdict::Build { .. }));
    }

    #[test]
    fn a_rebase_takes_the_reloaded_files_as_in_use() {
        let mut w = Watch::new(look([1, 1, 1]), digests(1, 1, 1));
        w.refused(digests(3, 1, 1));
        w.rebase(look([4, 4, 4]), digests(4, 4, 4));
        assert!(!w.looked(look([4, 4, 4])));
        assert_eq!(w.read(&digests(4, 4, 4)), Verdict::Unchanged);
        assert!(matches!(w.read(&digests(3, 1, 1)), Verdict::Build { .. }));
    }
}
