//! Starting real `sunlight` processes and generated cities for the tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use sunlight_datagen::{CityConfig, CityReport, generate_city};

/// Token every test node accepts.
pub const TOKEN: &str = "integration-token";

/// The `sunlight` binary under test.
pub fn sunlight_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sunlight"))
}

/// A small generated city shared by the tests of one run.
pub struct TestCity {
    pub dir: tempfile::TempDir,
    pub report: CityReport,
}

/// The shared city: 300 ordinary people per county, seed 11.
pub fn shared_city() -> &'static TestCity {
    static CITY: OnceLock<TestCity> = OnceLock::new();
    CITY.get_or_init(|| generated_city(300, 11))
}

/// Generates a city into a new temporary folder.
pub fn generated_city(persons_per_county: usize, seed: u64) -> TestCity {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = CityConfig {
        persons_per_county,
        seed,
    };
    let report =
        generate_city(dir.path(), &config, &ProgressBar::hidden()).expect("city generated");
    TestCity { dir, report }
}

/// A `sunlight node` process, stopped with SIGTERM when dropped.
pub struct NodeProcess {
    pub addr: String,
    /// Lines the node printed before it started listening.
    pub banner: Vec<String>,
    child: Child,
}

impl NodeProcess {
    /// Starts `sunlight node` on a free loopback port and waits until it listens.
    pub fn start(code: &str, data: &Path) -> Self {
        let mut child = Command::new(sunlight_bin())
            .args([
                "node",
                "--code",
                code,
                "--listen",
                "127.0.0.1:0",
                "--token",
                TOKEN,
                "--data",
            ])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sunlight node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut banner = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {code} did not start; it printed {banner:?}");
            };
            if let Some((_, addr)) = line.split_once(" listening on ") {
                return Self {
                    addr: addr.trim().to_string(),
                    banner,
                    child,
                };
            }
            banner.push(line);
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
        self.signal_term();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn signal_term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
