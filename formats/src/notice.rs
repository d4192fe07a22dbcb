//! What a backup or restore tells its caller as it goes (a front end prints it).

use dbvault_core::restore::Warning;

/// What a restore tells its caller as it goes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Notice {
    /// Damage that did not touch the restored bytes.
    Warning(Warning),
    /// The snapshot is damaged in parts this restore did not need (named in the text).
    DamagedElsewhere(String),
    /// A step is done, in words (`restored 15 tables into …`).
    Done(String),
}

/// Receives [`Notice`]s (from several threads).
pub type Notify<'a> = &'a (dyn Fn(Notice) + Sync);
