//! The README's first command: `engagement serve --demo`, run as a user runs it, its printed
//! dashboard link opened in a real browser (`tests/browser/demo.mjs`), which must find at-risk
//! clients and written emails within a minute.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Kills the server and drops the demo's database however the test ends.
struct Demo {
    server: std::process::Child,
    admin_url: String,
    database: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("psql")
            .args([
                &self.admin_url,
                "-qc",
                &format!("drop database if exists {} with (force)", self.database),
            ])
            .status();
    }
}

#[tokio::test]
async fn the_demo_shows_a_populated_dashboard_within_a_minute() {
    // The demo makes `<name>_demo` itself; `<name>` is never created.
    let name = format!(
        "demo_test_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let (server, _) = base.rsplit_once('/').unwrap();
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_engagement"))
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", format!("{server}/{name}"))
        .env_remove("API_TOKENS")
        .env_remove("MASTER_KEY")
        // The first start makes the master key file, as a newcomer's would.
        .env(
            "MASTER_KEY_FILE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.key")),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(&log).expect("the server's log file"),
        ))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Demo {
        server: child,
        admin_url: base.clone(),
        database: format!("{name}_demo"),
    };
    // The printed dashboard link carries the run's token. The reader keeps draining stdout
    // afterwards, as a terminal would.
    let (found, link) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let line = line.trim();
            if line.starts_with("http://") && line.contains("/?token=") {
                if let Some(found) = found.take() {
                    let _ = found.send(line.to_owned());
                }
            }
        }
    });
    let link = link.await.expect("serve --demo printed a dashboard link");

    let browser_tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_tests.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `bash .ci/browser-up` (the README's test command does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let run = tokio::process::Command::new("node")
        .arg("demo.mjs")
        .current_dir(&browser_tests)
        .env("DASHBOARD_LINK", &link)
        .env("SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test finished within 3 minutes")
        .expect("node runs");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "the demo's browser test failed ({}):\n{}\n{}\nthe server's log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    drop(demo);
}
