//! Ctrl-C and SIGTERM during a command that writes files: the command stops at its next
//! step and takes back what it wrote, where the signal's default would end the process
//! with a file half written or a temporary folder left behind.

use tokio::sync::watch;

use crate::{Error, Result, shutdown_signal};

/// Whether the user has interrupted the command, from the moment it is made.
#[derive(Debug, Clone)]
pub(crate) struct Interrupt(watch::Receiver<bool>);

impl Interrupt {
    /// Watches for Ctrl-C and SIGTERM in place of their default, which ends the process
    /// at once: from now on, the command must check or wait on this and end itself.
    pub(crate) fn on_signal() -> Self {
        let (interrupted, interrupt) = watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = interrupted.send(true);
        });
        Self(interrupt)
    }

    /// Fails once interrupted, saying what was `left`.
    pub(crate) fn check(&self, left: &str) -> Result<()> {
        match *self.0.borrow() {
            true => Err(interrupted(left)),
            false => Ok(()),
        }
    }

    /// Runs `work` to its end, unless interrupted first: then it fails, saying what was
    /// `left`, and `work` is dropped where it waits. Work that never waits must also
    /// [`check`](Self::check) as it goes.
    pub(crate) async fn unless<T>(
        &self,
        left: &str,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::select! {
            biased;
            interrupted = self.wait(left) => Err(interrupted),
            done = work => done,
        }
    }

    /// Resolves once interrupted, with the error saying what was `left`; never, where
    /// nothing can interrupt any more.
    async fn wait(&self, left: &str) -> Error {
        if self
            .0
            .clone()
            .wait_for(|interrupted| *interrupted)
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
        interrupted(left)
    }
}

fn interrupted(left: &str) -> Error {
    Error::Interrupted(left.to_string())
}

#[cfg(test)]
impl Interrupt {
    /// An interrupt the test sends itself.
    pub(crate) fn by_hand() -> (watch::Sender<bool>, Self) {
        let (interrupted, interrupt) = watch::channel(false);
        (interrupted, Self(interrupt))
    }
}
