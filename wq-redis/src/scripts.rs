//! The Lua scripts, compiled into the binary and called by SHA (loaded on
//! first use, and again after a server restart or `SCRIPT FLUSH`).
//!
//! Every per-queue script starts with `lua/lib/core.lua` (key names,
//! counts, wake-ups, the group line) and touches only keys under the
//! queue's hash tag, passed as `KEYS[1]`. The exception is `enqueue`, which
//! takes one base per queue of its batch so that a batch over several
//! queues is one atomic call: one hash slot per queue, several per call.

use std::sync::LazyLock;

use redis::Script;

/// Builds a script from files under `lua/`, behind a shebang so the server
/// refuses a writing script up front when it is out of memory rather than
/// stopping it half way.
macro_rules! script {
    ($shebang:literal; $($file:literal),+) => {
        Script::new(concat!($shebang, "\n", $(include_str!(concat!("../lua/", $file)), "\n"),+))
    };
}

/// Every script wq-redis runs.
pub(crate) struct Scripts {
    pub enqueue: Script,
    pub claim: Script,
    pub ack: Script,
    pub ack_claim: Script,
    pub extend: Script,
    pub rescue: Script,
    pub cancel: Script,
    pub retry_dead: Script,
    pub purge_dead: Script,
    pub prune: Script,
    pub promote: Script,
    pub pause: Script,
    pub next_due: Script,
    pub next_in_line: Script,
    pub position: Script,
    pub list: Script,
    pub audit: Script,
    pub session: Script,
    pub sessions: Script,
    pub admission: Script,
    pub lock_acquire: Script,
    pub lock_renew: Script,
    pub lock_release: Script,
}

impl Scripts {
    /// All of them, for loading at connect.
    pub fn all(&self) -> [&Script; 23] {
        [
            &self.enqueue,
            &self.claim,
            &self.ack,
            &self.ack_claim,
            &self.extend,
            &self.rescue,
            &self.cancel,
            &self.retry_dead,
            &self.purge_dead,
            &self.prune,
            &self.promote,
            &self.pause,
            &self.next_due,
            &self.next_in_line,
            &self.position,
            &self.list,
            &self.audit,
            &self.session,
            &self.sessions,
            &self.admission,
            &self.lock_acquire,
            &self.lock_renew,
            &self.lock_release,
        ]
    }
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: script!("#!lua"; "lib/core.lua", "enqueue.lua"),
    claim: script!("#!lua"; "lib/core.lua", "lib/claim.lua", "claim.lua"),
    ack: script!("#!lua"; "lib/core.lua", "lib/ack.lua", "ack.lua"),
    ack_claim: script!("#!lua"; "lib/core.lua", "lib/ack.lua", "lib/claim.lua", "ack_claim.lua"),
    extend: script!("#!lua"; "lib/core.lua", "extend.lua"),
    rescue: script!("#!lua"; "lib/core.lua", "rescue.lua"),
    cancel: script!("#!lua"; "lib/core.lua", "cancel.lua"),
    retry_dead: script!("#!lua"; "lib/core.lua", "lib/dead.lua", "retry_dead.lua"),
    purge_dead: script!("#!lua"; "lib/core.lua", "lib/dead.lua", "purge_dead.lua"),
    prune: script!("#!lua"; "lib/core.lua", "prune.lua"),
    promote: script!("#!lua"; "lib/core.lua", "promote.lua"),
    pause: script!("#!lua"; "lib/core.lua", "pause.lua"),
    next_due: script!("#!lua flags=no-writes"; "lib/core.lua", "lib/claim.lua", "next_due.lua"),
    next_in_line: script!("#!lua flags=no-writes"; "lib/core.lua", "next_in_line.lua"),
    position: script!("#!lua flags=no-writes"; "lib/core.lua", "position.lua"),
    list: script!("#!lua flags=no-writes"; "lib/core.lua", "list.lua"),
    audit: script!("#!lua"; "lib/core.lua", "audit.lua"),
    session: script!("#!lua"; "lib/core.lua", "session.lua"),
    sessions: script!("#!lua flags=no-writes"; "lib/core.lua", "sessions.lua"),
    admission: script!("#!lua"; "lib/core.lua", "admission.lua"),
    lock_acquire: script!("#!lua"; "lock/acquire.lua"),
    lock_renew: script!("#!lua"; "lock/renew.lua"),
    lock_release: script!("#!lua"; "lock/release.lua"),
});
