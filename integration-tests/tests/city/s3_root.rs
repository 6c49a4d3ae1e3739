//! A node whose data root is an S3 bucket. The S3-compatible server is moto's, from
//! Python, on a loopback port. It holds one county's files; the node answers over them
//! as it does over the same files on disk, and `sunlight import` writes into the bucket.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sunlight_datagen::node_root;
use sunlight_domain::NodeCode;

use crate::models::one_county_models_find_the_planted_hits;
use crate::support::{
    NodeProcess, ServiceProcess, TOKEN, copy_dir, printed_answer, python, shared_city, succeeds,
    sunlight_bin, sunlight_fails,
};

/// An S3-compatible server on a loopback port, killed when dropped.
struct S3Server {
    endpoint: String,
    child: Child,
}

impl S3Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new(python().with_file_name("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// The usual `AWS_*` variables of a client of this server.
    fn env(&self) -> [(&'static str, &str); 5] {
        [
            ("AWS_ENDPOINT", &self.endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "sunlight"),
            ("AWS_SECRET_ACCESS_KEY", "sunlight-secret"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
    }

    /// Makes `bucket` and copies the files under `folder` into it, under `prefix`.
    fn upload(&self, bucket: &str, prefix: &str, folder: &Path) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../integration-tests/python/s3_bucket.py");
        succeeds(
            Command::new(python())
                .arg(script)
                .args([&self.endpoint, bucket, prefix])
                .arg(folder)
                .envs(self.env()),
        );
    }

    /// A node configuration file that reaches this server.
    fn node_config(&self, dir: &Path) -> String {
        let file = dir.join("node.toml");
        std::fs::write(
            &file,
            format!(
                "[s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \
                 \"sunlight\"\nsecret_access_key = \"sunlight-secret\"\nallow_http = true\n",
                self.endpoint
            ),
        )
        .unwrap();
        file.display().to_string()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_serves_its_county_from_an_s3_bucket() {
    let city = shared_city();
    let code: NodeCode = "140215".parse().unwrap();
    let files = node_root(city.dir.path(), code);
    let s3 = S3Server::start();
    // Its payments in a file named as Hive names its files, which the node knows as
    // Parquet by its first bytes, read from the bucket.
    let hive = tempfile::tempdir().unwrap();
    copy_dir(&files, hive.path());
    let payments = hive.path().join("disbursements");
    std::fs::rename(payments.join("part-0.parquet"), payments.join("000000_0")).unwrap();
    s3.upload("city", code.as_str(), hive.path());
    let root = format!("s3://city/{code}");

    // `sunlight import` reaches the bucket through the usual AWS_* variables.
    let scratch = tempfile::tempdir().unwrap();
    let csv = scratch.path().join("payroll.csv");
    std::fs::write(
        &csv,
        "person_id,name,employer,employer_type,county_code,start_date,end_date\n\
         140215198001010015,甲,云州区教育局,GOV,140215,2010-03-01,\n\
         140215198102020024,乙,云州区医院,PUBLIC_INSTITUTION,140215,2012-07-01,2020-01-31\n",
    )
    .unwrap();
    succeeds(
        Command::new(sunlight_bin())
            .args(["import", "--data", &root, "--table", "payroll"])
            .arg(&csv)
            .envs(s3.env()),
    );

    // The node reads the bucket with its configuration file's settings, and answers as
    // a node over the same files on disk, but for the two payroll rows imported.
    let config = s3.node_config(scratch.path());
    let bucket_node =
        NodeProcess::start_with(code.as_str(), Path::new(&root), &["--config", &config]);
    let disk_node = NodeProcess::start(code.as_str(), &files);
    let missing = sunlight_fails(&[
        "node",
        "--code",
        code.as_str(),
        "--data",
        "s3://no-such-bucket/140215",
        "--config",
        &config,
        "--listen",
        "127.0.0.1:0",
        "--token",
        TOKEN,
    ]);
    assert!(
        missing.contains("failed at s3://no-such-bucket/140215/persons")
            && missing.contains("NoSuchBucket"),
        "{missing}"
    );
    for sql in [
        "SELECT subsidy_type, count(*), sum(amount), min(period), max(paid_on) \
         FROM disbursements GROUP BY 1 ORDER BY 1",
        "SELECT gender, count(*), count(death_date), min(birth_date) FROM persons \
         GROUP BY 1 ORDER BY 1",
        "SELECT level, count(*) FROM disability_certs WHERE revoked_on IS NULL \
         GROUP BY 1 ORDER BY 1",
        "SELECT count(*) FROM disbursements d JOIN persons p ON d.person_id = p.person_id \
         WHERE p.death_date < d.period",
    ] {
        assert_eq!(
            printed_answer(&bucket_node.addr, sql).await,
            printed_answer(&disk_node.addr, sql).await,
            "{sql}"
        );
    }
    let payroll = "SELECT employer_type, count(*) FROM payroll GROUP BY 1 ORDER BY 1";
    let count = |text: String| -> Vec<i64> {
        text.lines()
            .filter_map(|l| l.split('|').nth(2)?.trim().parse().ok())
            .collect()
    };
    let (from_bucket, from_disk) = (
        count(printed_answer(&bucket_node.addr, payroll).await),
        count(printed_answer(&disk_node.addr, payroll).await),
    );
    assert_eq!(from_bucket, [from_disk[0] + 1, from_disk[1] + 1]);

    // The city runs its fragments at the bucket's node as at any other.
    let coordinator =
        ServiceProcess::coordinator(&[(code.to_string(), bucket_node.addr.clone())], &[]);
    let by_type = "SELECT subsidy_type, count(*), sum(amount) FROM disbursements \
                   GROUP BY 1 ORDER BY 1";
    assert_eq!(
        printed_answer(&coordinator.addr, by_type).await,
        printed_answer(&disk_node.addr, by_type).await
    );

    // The models run at the bucket's node, which writes its hits into the bucket.
    one_county_models_find_the_planted_hits(
        &coordinator.addr,
        code,
        bucket_node,
        &city.report.truth,
    )
    .await;
}
