//! A PostgreSQL cluster of a test's own (`initdb` in a temporary directory, on a free port),
//! for tests that stop, restart or break the server: the shared server on DATABASE_URL is
//! never touched. Uses the installed PostgreSQL's binaries; as root, they run as `postgres`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running cluster; stopped and removed when dropped.
pub struct Cluster {
    pub port: u16,
    dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
}

/// The newest installed PostgreSQL's binaries.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's binaries under /usr/lib/postgresql (.ci/postgres-up installs them)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().expect("an installed PostgreSQL with initdb")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Cluster {
    /// Creates and starts a cluster with trust authentication on 127.0.0.1.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// A cluster not yet created, in a directory of its own.
    fn empty() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("engagement-cluster-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        Self {
            port: free_port(),
            dir,
            data,
            bin,
        }
    }

    /// Appends `lines` to the cluster's `postgresql.conf` (later lines win).
    fn configure(&self, lines: &str) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut file, lines.as_bytes()).unwrap();
    }

    /// A hot standby of `primary` (`pg_basebackup -R`: streaming replication), on a port of
    /// its own, with `conf` added to its settings, started.
    pub fn standby_of(primary: &Cluster, conf: &str) -> Self {
        let standby = Self::empty();
        let data = standby.data.to_str().unwrap().to_owned();
        standby.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        standby.configure(&format!(
            "port = {}\nunix_socket_directories = '{}'\n{conf}\n",
            standby.port,
            standby.dir.path().display()
        ));
        standby.up();
        standby
    }

    /// Creates and starts a cluster like [`Cluster::start`], with `conf` added to its
    /// settings.
    pub fn start_with(conf: &str) -> Self {
        let cluster = Self::empty();
        let data = cluster.data.to_str().unwrap().to_owned();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\n\
             max_connections = 100\nshared_buffers = 32MB\n",
            cluster.port,
            cluster.dir.path().display()
        );
        cluster.configure(&format!("{settings}{conf}\n"));
        cluster.up();
        cluster
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// What the server has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let data = self.data.to_str().unwrap().to_owned();
        let log = self.log().to_str().unwrap().to_owned();
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
        );
        self.wait_ready(Duration::from_secs(30));
    }

    /// Stops the server the way a restart does (`-m fast`: sessions are terminated).
    pub fn down(&self) {
        let data = self.data.to_str().unwrap().to_owned();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    /// Stops the server the way a crash does (`-m immediate`: no shutdown checkpoint; what
    /// was committed but not yet on disk is lost, and the next start recovers from the WAL).
    #[allow(dead_code)]
    pub fn crash(&self) {
        let data = self.data.to_str().unwrap().to_owned();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    fn wait_ready(&self, within: Duration) {
        let start = Instant::now();
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(start.elapsed() < within, "the cluster did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A URL of database `name` on this cluster (the service creates it when missing).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap_or_default().to_owned();
        let path = self.bin.join("pg_ctl");
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}
