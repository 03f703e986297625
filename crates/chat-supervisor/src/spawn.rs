//! Starting one worker process: fork + exec of this same binary's `worker` subcommand, with the
//! worker's listening socket at fd 3 and the write end of its report pipe at fd 4.
//!
//! Architecture invariant: the child runs only async-signal-safe calls between fork and exec
//! (dup2, prctl), so forking from the supervisor's runtime is sound.

use std::{
    net::TcpListener,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    path::PathBuf,
    process::Stdio,
};

use chat_worker::config::{SETTINGS_ENV, WorkerSettings};

use crate::config::LogFormat;
use nix::{
    fcntl::{FcntlArg, OFlag, fcntl},
    libc,
    sys::signal::Signal,
};

/// Where a worker finds what the supervisor hands it.
pub const LISTEN_FD: RawFd = 3;
pub const REPORT_FD: RawFd = 4;
/// Descriptors are first moved at or above this, so the dup2s onto 3 and 4 never clobber each
/// other.
const HIGH_FD: RawFd = 10;

pub struct SpawnedWorker {
    pub child: tokio::process::Child,
    /// The read end of the report pipe.
    pub reports: OwnedFd,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("could not find this program's path to start workers")]
    CurrentExe(#[source] std::io::Error),
    #[error("could not create the report pipe")]
    Pipe(#[source] nix::Error),
    #[error("could not prepare descriptors for the worker")]
    Descriptor(#[source] nix::Error),
    #[error("could not start the worker process")]
    Exec(#[source] std::io::Error),
}

pub struct WorkerCommand {
    program: PathBuf,
    settings_json: String,
    log_format: LogFormat,
}

impl WorkerCommand {
    pub fn new(settings: &WorkerSettings, log_format: LogFormat) -> Result<Self, SpawnError> {
        Ok(Self {
            program: std::env::current_exe().map_err(SpawnError::CurrentExe)?,
            settings_json: settings.to_env_json(),
            log_format,
        })
    }

    pub fn spawn(
        &self,
        id: u32,
        port: u16,
        listener: &TcpListener,
    ) -> Result<SpawnedWorker, SpawnError> {
        let (reports, report_writer) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;
        // Both stay close-on-exec in the supervisor; the child gets its own copies at 3 and 4.
        let listen_high = dup_high(listener)?;
        let report_high = dup_high(&report_writer)?;

        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(["--log-format", self.log_format.as_str()])
            .arg("worker")
            .args(["--port", &port.to_string()])
            .args(["--worker-id", &id.to_string()])
            .args(["--listen-fd", &LISTEN_FD.to_string()])
            .args(["--report-fd", &REPORT_FD.to_string()])
            .env(SETTINGS_ENV, &self.settings_json)
            // Workers have no use for the admin token: it stays with the supervisor.
            .env_remove(crate::check::ADMIN_TOKEN_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(false);
        let listen_raw = listen_high.as_raw_fd();
        let report_raw = report_high.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and calls only dup2 and
        // prctl, which are async-signal-safe; it touches no memory shared with other threads.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(listen_raw, LISTEN_FD) < 0 || libc::dup2(report_raw, REPORT_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // If the supervisor dies without stopping its workers (SIGKILL), they drain and
                // exit instead of running on unsupervised. The signal follows the thread that
                // forked: the supervisor runs one thread, so that is the whole process.
                if libc::prctl(libc::PR_SET_PDEATHSIG, Signal::SIGTERM as libc::c_ulong) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(SpawnError::Exec)?;
        // The supervisor's copies of the write end close here, so the pipe reaches end-of-file
        // exactly when the worker exits.
        drop(report_writer);
        drop(report_high);
        drop(listen_high);
        Ok(SpawnedWorker { child, reports })
    }
}

fn dup_high(fd: impl AsFd) -> Result<OwnedFd, SpawnError> {
    let new_fd = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(HIGH_FD)).map_err(SpawnError::Descriptor)?;
    // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new_fd) })
}
