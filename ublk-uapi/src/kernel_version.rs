//! Linux release numbers, to say which kernel brings a command, flag or parameter.

use core::fmt;

/// A Linux `major.minor` release, e.g. `6.5`.
///
/// Ordered, so `kernel >= KernelVersion::new(6, 5)` reads naturally. Used by
/// [`Features::since`](crate::Features::since), [`CtrlOp::since`](crate::CtrlOp::since) and
/// friends to turn "the kernel dropped this flag" into an actionable message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// Major number (`6` in `6.12`).
    pub major: u16,
    /// Minor number (`12` in `6.12`).
    pub minor: u16,
}

impl KernelVersion {
    /// `major.minor`.
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    /// Parses the leading `major.minor` of a release string such as `uname -r`'s
    /// `6.12.38+deb13-amd64`; anything after the minor number is ignored.
    pub fn parse(release: &str) -> Option<Self> {
        let mut parts = release.splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor_part = parts.next()?;
        let digits = minor_part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(minor_part.len());
        let minor = minor_part[..digits].parse().ok()?;
        Some(Self { major, minor })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::KernelVersion;

    #[test]
    fn parses_uname_releases() {
        assert_eq!(
            KernelVersion::parse("6.12.38+deb13-amd64"),
            Some(KernelVersion::new(6, 12))
        );
        assert_eq!(
            KernelVersion::parse("6.1.0-31-amd64"),
            Some(KernelVersion::new(6, 1))
        );
        assert_eq!(
            KernelVersion::parse("6.16"),
            Some(KernelVersion::new(6, 16))
        );
        assert_eq!(
            KernelVersion::parse("6.16-rc3"),
            Some(KernelVersion::new(6, 16))
        );
        assert_eq!(KernelVersion::parse("6"), None);
        assert_eq!(KernelVersion::parse("x.1"), None);
        assert_eq!(KernelVersion::parse("6.rc1"), None);
    }

    #[test]
    fn orders_numerically_not_lexically() {
        assert!(KernelVersion::new(6, 12) > KernelVersion::new(6, 5));
        assert!(KernelVersion::new(7, 0) > KernelVersion::new(6, 16));
    }

    #[test]
    fn displays_major_dot_minor() {
        extern crate alloc;
        use alloc::string::ToString;
        assert_eq!(KernelVersion::new(6, 15).to_string(), "6.15");
    }
}
