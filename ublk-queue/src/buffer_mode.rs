//! The buffer modes a device can be created in, as the kernel names them by feature.

use std::fmt;

use ublk_uapi::{Features, KernelVersion};

/// How request data moves between the kernel and the server; fixed when the device is created.
/// The crate documentation's "Inside a queue" says how each works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BufferMode {
    /// The best mode the kernel and the target allow: automatic registration, else zero copy
    /// for targets that keep no data in memory ([`Target::needs_memory`]) and are no faster
    /// with it there ([`Target::prefers_memory`]), else copy.
    ///
    /// [`Target::needs_memory`]: crate::Target::needs_memory
    /// [`Target::prefers_memory`]: crate::Target::prefers_memory
    #[default]
    Auto,
    /// The kernel copies each request's data to and from a buffer per tag in server memory.
    Copy,
    /// `USER_COPY` (Linux 6.5): the server copies the data through `/dev/ublkcN` itself.
    UserCopy,
    /// `SUPPORT_ZERO_COPY` (Linux 6.15): the request's pages are registered in the queue ring's
    /// buffer table for the target's own I/O; no copy.
    ZeroCopy,
    /// `AUTO_BUF_REG` (Linux 6.16): as zero copy, with the kernel registering the pages itself.
    AutoRegister,
    /// `NEED_GET_DATA`: as copy, but a WRITE's buffer is named only when the kernel asks, so
    /// idle tags hold none.
    NeedGetData,
}

impl BufferMode {
    /// Every mode but [`Auto`](BufferMode::Auto), from the one every kernel has.
    pub const ALL: [BufferMode; 5] = [
        BufferMode::Copy,
        BufferMode::NeedGetData,
        BufferMode::UserCopy,
        BufferMode::ZeroCopy,
        BufferMode::AutoRegister,
    ];

    /// The mode's name, as `ublk` spells it.
    pub fn name(self) -> &'static str {
        match self {
            BufferMode::Auto => "auto",
            BufferMode::Copy => "copy",
            BufferMode::UserCopy => "user-copy",
            BufferMode::ZeroCopy => "zero-copy",
            BufferMode::AutoRegister => "auto-register",
            BufferMode::NeedGetData => "need-get-data",
        }
    }

    /// The device features the mode needs from the kernel. Automatic registration asks for zero
    /// copy too: requests the kernel could not register are registered by hand.
    pub fn features(self) -> Features {
        match self {
            BufferMode::Auto | BufferMode::Copy => Features::empty(),
            BufferMode::UserCopy => Features::USER_COPY,
            BufferMode::ZeroCopy => Features::SUPPORT_ZERO_COPY,
            BufferMode::AutoRegister => Features::AUTO_BUF_REG | Features::SUPPORT_ZERO_COPY,
            BufferMode::NeedGetData => Features::NEED_GET_DATA,
        }
    }

    /// The mode of a device with `features` (as created: never [`Auto`](BufferMode::Auto)).
    pub fn of(features: Features) -> BufferMode {
        if features.contains(Features::AUTO_BUF_REG) {
            BufferMode::AutoRegister
        } else if features.contains(Features::SUPPORT_ZERO_COPY) {
            BufferMode::ZeroCopy
        } else if features.contains(Features::USER_COPY) {
            BufferMode::UserCopy
        } else if features.contains(Features::NEED_GET_DATA) {
            BufferMode::NeedGetData
        } else {
            BufferMode::Copy
        }
    }

    /// The oldest Linux release that has the mode.
    pub fn since(self) -> KernelVersion {
        match self {
            BufferMode::Auto | BufferMode::Copy | BufferMode::NeedGetData => {
                KernelVersion::new(6, 0)
            }
            BufferMode::UserCopy => KernelVersion::new(6, 5),
            BufferMode::ZeroCopy => KernelVersion::new(6, 15),
            BufferMode::AutoRegister => KernelVersion::new(6, 16),
        }
    }

    /// Whether request data stays in the kernel's pages (targets must handle
    /// [`DataPlace::Fixed`](crate::DataPlace::Fixed)).
    pub fn keeps_data_in_kernel(self) -> bool {
        matches!(self, BufferMode::ZeroCopy | BufferMode::AutoRegister)
    }

    /// [`Auto`](BufferMode::Auto) made concrete: the best mode a kernel offering `supported`
    /// has for a target that does (`needs_memory`) or does not need the data in memory.
    pub fn resolve(self, supported: Features, needs_memory: bool) -> BufferMode {
        if self != BufferMode::Auto {
            return self;
        }
        let best = [BufferMode::AutoRegister, BufferMode::ZeroCopy]
            .into_iter()
            .find(|m| !needs_memory && supported.contains(m.features()));
        best.unwrap_or(BufferMode::Copy)
    }
}

impl fmt::Display for BufferMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_is_found_again_in_its_features() {
        for mode in BufferMode::ALL {
            assert_eq!(BufferMode::of(mode.features()), mode, "{mode}");
        }
        // What newer kernels set on every device changes nothing.
        let granted = Features::PER_IO_DAEMON | Features::CMD_IOCTL_ENCODE;
        assert_eq!(BufferMode::of(granted), BufferMode::Copy);
    }

    #[test]
    fn auto_takes_the_best_the_kernel_and_the_target_allow() {
        let linux_7 = Features::all();
        let linux_6_12 = Features::USER_COPY | Features::NEED_GET_DATA;
        let auto = BufferMode::Auto;
        assert_eq!(auto.resolve(linux_7, false), BufferMode::AutoRegister);
        assert_eq!(auto.resolve(linux_7, true), BufferMode::Copy);
        assert_eq!(auto.resolve(linux_6_12, false), BufferMode::Copy);
        let linux_6_15 = linux_6_12 | Features::SUPPORT_ZERO_COPY;
        assert_eq!(auto.resolve(linux_6_15, false), BufferMode::ZeroCopy);
        assert_eq!(
            BufferMode::UserCopy.resolve(Features::empty(), false),
            BufferMode::UserCopy,
            "a mode asked for is kept (ADD_DEV says whether the kernel has it)"
        );
    }
}
