//! One of our services as a child process of a test: started with flags and env, killed,
//! stopped, restarted; its log is printed when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub struct Service {
    pub name: String,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// The log's own temp dir, unless the caller chose where the log goes.
    _dir: Option<tempfile::TempDir>,
}

impl Service {
    /// Starts `bin` with `args` and `env`; stderr goes to a log file.
    pub fn start(
        name: &str,
        bin: impl Into<PathBuf>,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join(format!("{name}.log"));
        let mut s = Service::start_logging_to(name, bin, args, env, log);
        s._dir = Some(dir);
        s
    }

    /// Like `start`, appending stderr to `log` (kept after the service is gone: a benchmark's
    /// work dir).
    pub fn start_logging_to(
        name: &str,
        bin: impl Into<PathBuf>,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) -> Service {
        let mut s = Service {
            name: name.to_owned(),
            bin: bin.into(),
            args,
            env,
            log,
            child: None,
            _dir: None,
        };
        s.spawn();
        s
    }

    /// Starts it again (after `kill` or `stop`), with the same flags.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub async fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        match self.terminate(Duration::from_secs(20)).await {
            Some(status) => assert!(status.success(), "{} exited with {status}", self.name),
            None => panic!("timed out after 20s waiting for {} to exit", self.name),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited `within`; the exit status of a clean exit.
    /// A benchmark's way to stop: it does not judge how the process ended.
    pub async fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().ok().flatten() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
        None
    }

    /// How the process ended, once it has exited on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// `Err` with the end of the log when the process has exited on its own.
    pub fn check_running(&mut self) -> Result<(), String> {
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        match exited {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(20)
            )),
        }
    }

    /// Resident set size (VmRSS) of the running process, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- last lines of {} ---", self.name);
            eprintln!("{}", self.log_tail(40));
        }
        self.kill();
    }
}
