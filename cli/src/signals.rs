//! Ctrl-C and `kill`: SIGINT and SIGTERM are taken by one thread, which releases the
//! repository locks and removes the temp files of this process (core's `interrupt`), says
//! so, and exits 130 or 143 as the shell expects. Without it the next command waited on the
//! lock of a process that was gone, and `data/.tmp-*` files stayed until a prune.

/// Blocks SIGINT and SIGTERM in this thread (so in every thread started after) and starts
/// the thread that waits for them. Call first, before any other thread exists. Children
/// start with the signals unblocked (the standard library resets the mask on spawn).
#[allow(unsafe_code)]
pub fn catch() {
    // SAFETY: sigset_t is a plain C struct initialised by sigemptyset before any use; the
    // pointers passed are to live locals; pthread_sigmask and sigwait only read and write
    // them.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("dbvault-signals".into())
            .spawn(move || {
                let mut sig: libc::c_int = 0;
                // SAFETY: as above.
                if libc::sigwait(&set, &mut sig) != 0 {
                    return;
                }
                let c = dbvault_core::interrupt::clean_up();
                let name = if sig == libc::SIGINT { "SIGINT" } else { "SIGTERM" };
                eprintln!(
                    "dbvault: interrupted ({name}): stopped; nothing further was written, and a snapshot not reported saved was not recorded; released {} repository lock(s), removed {} temp file(s){}",
                    c.locks,
                    c.temps,
                    if c.children > 0 {
                        format!(", stopped the command it ran ({} process group(s))", c.children)
                    } else {
                        String::new()
                    }
                );
                std::process::exit(128 + sig);
            });
        if spawned.is_err() {
            // No thread to take them: let the signals kill as before.
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}
