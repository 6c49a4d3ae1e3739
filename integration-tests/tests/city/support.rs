//! Starting real `sunlight` processes and generated cities for the tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use sunlight_datagen::{CityConfig, CityReport, generate_city, node_root};
use sunlight_domain::NodeCode;

/// Token every test node accepts, and the coordinators' bootstrap administrator token.
pub const TOKEN: &str = "integration-token";
/// The coordinator's token at every test node: fragments and model steps, no SQL.
pub const CITY_TOKEN: &str = "integration-city-token";
/// Linkage key of every test node.
pub const LINKAGE_KEY: &str = "integration-linkage-key-0123456789abcdef";
/// Secret shared by test coordinator replicas.
pub const CLUSTER_SECRET: &str = "integration-cluster-secret";

/// The `sunlight` binary under test.
pub fn sunlight_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sunlight"))
}

/// A small generated city shared by the tests of one run.
pub struct TestCity {
    pub dir: tempfile::TempDir,
    pub report: CityReport,
}

/// The shared city of a test process: 5000 ordinary people per county, seed 11.
///
/// A static is never dropped, so its folder is not removed when the process ends. It
/// lives under the target's scratch folder, named for its process, and each new one
/// first removes those of processes that have ended.
pub fn shared_city() -> &'static TestCity {
    static CITY: OnceLock<TestCity> = OnceLock::new();
    CITY.get_or_init(|| {
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shared-cities");
        std::fs::create_dir_all(&parent).expect("scratch folder");
        remove_ended(&parent);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempdir_in(&parent)
            .expect("temp dir");
        generated_city_in(dir, 5000, 11)
    })
}

/// Removes the folders under `parent` named for processes that have ended.
fn remove_ended(parent: &Path) {
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some((pid, _)) = name.to_str().and_then(|n| n.split_once('-')) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            // Another process may be removing it too.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Generates a city into a new temporary folder.
pub fn generated_city(persons_per_county: usize, seed: u64) -> TestCity {
    generated_city_in(
        tempfile::tempdir().expect("temp dir"),
        persons_per_county,
        seed,
    )
}

/// Generates a city into `dir`, which it keeps.
fn generated_city_in(dir: tempfile::TempDir, persons_per_county: usize, seed: u64) -> TestCity {
    let config = CityConfig {
        persons_per_county,
        seed,
    };
    let report =
        generate_city(dir.path(), &config, &ProgressBar::hidden()).expect("city generated");
    TestCity { dir, report }
}

/// A `sunlight` service process (node or coordinator), killed when dropped.
pub struct ServiceProcess {
    pub addr: String,
    /// Lines the service printed before it started listening.
    pub banner: Vec<String>,
    child: Child,
    /// A coordinator replica's metadata directory, removed with the process.
    data: Option<tempfile::TempDir>,
}

/// A node process.
pub type NodeProcess = ServiceProcess;

impl ServiceProcess {
    /// Starts `sunlight node` on a free loopback port and waits until it listens.
    pub fn start(code: &str, data: &Path) -> Self {
        Self::start_with(code, data, &[])
    }

    /// Like [`ServiceProcess::start`], with `extra` flags for the node.
    pub fn start_with(code: &str, data: &Path, extra: &[&str]) -> Self {
        Self::start_listening(code, data, "127.0.0.1:0", extra)
    }

    /// Like [`ServiceProcess::start_with`], listening on `listen`.
    pub fn start_listening(code: &str, data: &Path, listen: &str, extra: &[&str]) -> Self {
        let keyed = [&["--linkage-key", LINKAGE_KEY][..], extra].concat();
        Self::start_node(code, data, listen, &keyed)
    }

    /// Like [`ServiceProcess::start`], without a linkage key: identifiers cannot leave
    /// the node, not even as tokens.
    pub fn start_keyless(code: &str, data: &Path) -> Self {
        Self::start_node(code, data, "127.0.0.1:0", &[])
    }

    fn start_node(code: &str, data: &Path, listen: &str, extra: &[&str]) -> Self {
        let data = data.display().to_string();
        let mut args = vec![
            "node",
            "--code",
            code,
            "--listen",
            listen,
            "--token",
            TOKEN,
            "--data",
            &data,
            "--city-token",
            CITY_TOKEN,
        ];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    /// Starts a one-replica coordinator group over `nodes` (code, address) with the
    /// shared test token as its administrator.
    pub fn coordinator(nodes: &[(String, String)], extra: &[&str]) -> Self {
        let mut args: Vec<String> = ["--init", "--node-token", CITY_TOKEN]
            .map(String::from)
            .to_vec();
        for (code, addr) in nodes {
            args.push("--node".into());
            args.push(format!("{code}={addr}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let data = tempfile::tempdir().expect("temp dir");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::replica(1, data, "127.0.0.1:0", &args)
    }

    /// Starts coordinator replica `id` on `listen` over the metadata in `data`; `extra`
    /// says how it joins (`--init`, `--join ADDR` or nothing for a restart).
    pub fn replica(id: u64, data: tempfile::TempDir, listen: &str, extra: &[&str]) -> Self {
        let id = id.to_string();
        let dir = data.path().display().to_string();
        let mut args = vec![
            "coordinator",
            "--listen",
            listen,
            "--token",
            TOKEN,
            "--replica-id",
            &id,
            "--data",
            &dir,
            "--cluster-secret",
            CLUSTER_SECRET,
        ];
        args.extend_from_slice(extra);
        let mut process = Self::spawn(&args);
        process.data = Some(data);
        process
    }

    /// Kills the process at once (SIGKILL) and hands back its metadata directory.
    /// The process's ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(mut self) -> Option<tempfile::TempDir> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.data.take()
    }

    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(sunlight_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sunlight starts");
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
                panic!(
                    "`sunlight {}` did not start; it printed {banner:?}",
                    args.join(" ")
                );
            };
            if let Some((_, addr)) = line.split_once(" listening on ") {
                return Self {
                    addr: addr.trim().to_string(),
                    banner,
                    child,
                    data: None,
                };
            }
            banner.push(line);
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Eleven node processes over a generated city and a coordinator over them.
pub struct RunningCity {
    pub nodes: Vec<(NodeCode, ServiceProcess)>,
    pub coordinator: ServiceProcess,
}

/// Starts every node of `city` and a coordinator; `extra` goes to the coordinator.
pub fn start_city(city: &Path, extra: &[&str]) -> RunningCity {
    let nodes: Vec<(NodeCode, ServiceProcess)> = NodeCode::all()
        .map(|code| {
            (
                code,
                ServiceProcess::start(code.as_str(), &node_root(city, code)),
            )
        })
        .collect();
    let addrs: Vec<(String, String)> = nodes
        .iter()
        .map(|(c, p)| (c.to_string(), p.addr.clone()))
        .collect();
    let coordinator = ServiceProcess::coordinator(&addrs, extra);
    RunningCity { nodes, coordinator }
}

/// `sql`'s answer at `addr`, asked with the shared test token, as a printed table.
pub async fn printed_answer(addr: &str, sql: &str) -> String {
    let mut client = sunlight_client::SqlClient::connect(addr, TOKEN)
        .await
        .unwrap();
    let result = client.query(sql).await.unwrap();
    arrow::util::pretty::pretty_format_batches(&result.batches)
        .unwrap()
        .to_string()
}

/// Copies the folder `from`, with everything under it, to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The rows of the Parquet file at `path`.
pub fn parquet_batches(path: &Path) -> Vec<arrow::record_batch::RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Writes `batches`, one schema, as the Parquet file at `path`, with `properties`.
pub fn write_parquet(
    path: &Path,
    batches: &[arrow::record_batch::RecordBatch],
    properties: Option<parquet::file::properties::WriterProperties>,
) {
    let file = std::fs::File::create(path).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), properties).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
}

/// What the tests install into their Python: an outside Flight SQL client, and an
/// S3-compatible server.
const PYTHON_PACKAGES: &[&str] = &[
    "adbc-driver-flightsql",
    "pyarrow",
    "moto[server]",
    "flightsql-dbapi",
    "pandas",
];

/// A Python with [`PYTHON_PACKAGES`], in a virtual environment made once per target
/// folder. Test processes take turns under a file lock; the marker file lists what was
/// installed, so that a package added to the list is installed too.
pub fn python() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = dir.join("adbc-venv");
    let python = venv.join("bin/python");
    let lock = std::fs::File::create(dir.join("adbc-venv.lock")).unwrap();
    lock.lock().unwrap();
    let marker = venv.join(".installed");
    let wanted = PYTHON_PACKAGES.join("\n");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(made.success(), "python3 -m venv failed");
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(PYTHON_PACKAGES)
            .status()
            .expect("pip runs");
        assert!(
            installed.success(),
            "pip install {PYTHON_PACKAGES:?} failed"
        );
        std::fs::write(&marker, wanted).unwrap();
    }
    python
}

/// Runs `command`; returns its standard output, or panics with the command and both
/// streams.
pub fn succeeds(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{command:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs the CLI; returns its standard output, or panics with both streams.
pub fn sunlight(args: &[&str]) -> String {
    succeeds(Command::new(sunlight_bin()).args(args))
}

/// Runs `sunlight admin` with `args` against `coordinators` as `token`'s user.
pub fn admin(coordinators: &str, token: &str, args: &[&str]) -> String {
    let mut all = vec!["admin", "--coordinator", coordinators, "--token", token];
    all.extend_from_slice(args);
    sunlight(&all)
}

/// Runs the CLI expecting failure; returns its standard error.
pub fn sunlight_fails(args: &[&str]) -> String {
    let out = Command::new(sunlight_bin())
        .args(args)
        .output()
        .expect("sunlight runs");
    assert!(
        !out.status.success(),
        "`sunlight {}` should fail",
        args.join(" ")
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A TCP relay in front of a service that keeps every byte the service sends back.
pub struct Tap {
    pub addr: String,
    pub sent_back: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

/// Relays connections on a new loopback port to `target`, recording its answers.
pub async fn tap(target: &str) -> Tap {
    slow_tap(target, std::time::Duration::ZERO).await
}

/// A [`tap`] that holds every answer of `target` for `delay` before passing it on.
pub async fn slow_tap(target: &str, delay: std::time::Duration) -> Tap {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let sent_back = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (target, record) = (target.to_string(), sent_back.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            let record = record.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                while let Ok(n) = server_read.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    record.lock().unwrap().extend_from_slice(&buffer[..n]);
                    tokio::time::sleep(delay).await;
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Tap { addr, sent_back }
}

/// Adds a user through `sunlight admin user add` as the bootstrap administrator; `extra`
/// adds flags such as `--node` or `--valid-for`. Returns the token it printed.
pub fn new_user(coordinators: &str, name: &str, role: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "admin",
        "--coordinator",
        coordinators,
        "--token",
        TOKEN,
        "user",
        "add",
        "--name",
        name,
        "--role",
        role,
    ];
    args.extend_from_slice(extra);
    let out = sunlight(&args);
    out.lines()
        .find_map(|l| {
            l.split_once("store it now): ")
                .map(|(_, t)| t.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no token printed: {out}"))
}

/// A coordinator that reaches `nodes` (code, address) only through taps, which record
/// every byte the nodes send back.
pub struct Tapped {
    pub coordinator: ServiceProcess,
    taps: Vec<Tap>,
}

impl Tapped {
    pub async fn start<'a>(nodes: impl IntoIterator<Item = (String, &'a str)>) -> Self {
        let mut taps = Vec::new();
        let mut addrs = Vec::new();
        for (code, addr) in nodes {
            let tap = tap(addr).await;
            addrs.push((code, tap.addr.clone()));
            taps.push(tap);
        }
        Self {
            coordinator: ServiceProcess::coordinator(&addrs, &[]),
            taps,
        }
    }

    /// Runs a linkage of disbursements on person, subsidy type and period.
    pub fn link_disbursements(&self) {
        sunlight(&[
            "linkage",
            "run",
            "--coordinator",
            &self.coordinator.addr,
            "--token",
            TOKEN,
            "--table",
            "disbursements",
            "--key",
            "person_id,subsidy_type,period",
        ]);
    }

    /// Everything the nodes sent so far.
    pub fn wire(&self) -> Vec<u8> {
        self.taps
            .iter()
            .flat_map(|t| t.sent_back.lock().unwrap().clone())
            .collect()
    }
}
