//! The test mail server (`server.py`, aiosmtpd) as the delivery tests start it. Shared by the
//! projections and api test suites (the api suite includes this file by path).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running test mail server; killed when dropped.
pub struct SmtpServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    /// Starts one on a free port.
    pub fn start() -> Self {
        Self::start_on(None)
    }

    /// Starts one on `port` (a free port when `None`).
    pub fn start_on(port: Option<u16>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("mail");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../projections/tests/smtp/server.py");
        let mut command = Command::new("python3");
        command.arg(script).arg(&maildir);
        if let Some(port) = port {
            command.arg(port.to_string());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (aiosmtpd is installed by .ci/smtp-up)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the SMTP server printed its port, not {line:?}"));
        Self {
            child,
            port,
            maildir,
            _dir: dir,
        }
    }

    /// A free port where nothing listens (yet).
    pub fn free_port() -> u16 {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    }

    /// Every message received, as text, in arrival order.
    pub fn messages(&self) -> Vec<String> {
        self.message_files()
            .into_iter()
            .map(|path| std::fs::read_to_string(path).unwrap())
            .collect()
    }

    /// The file of every message received, in arrival order.
    pub fn message_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.maildir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.into_iter().map(|(_, path)| path).collect()
    }

    /// The Message-ID of every message received, in arrival order.
    pub fn message_ids(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter_map(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("Message-ID: "))
                    .map(|id| id.trim().to_owned())
            })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
