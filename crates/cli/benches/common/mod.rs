//! The benchmarks' city: generated once per size and kept.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::ProgressBar;
use sunlight_datagen::{CityConfig, generate_city};
use sunlight_domain::Table;

/// The city of `SUNLIGHT_BENCH_PERSONS` ordinary people per county (default 190000,
/// about one million disbursement rows per county) in `SUNLIGHT_BENCH_DIR` (default a
/// folder in the temporary directory), generated if it is not there yet.
pub fn bench_city() -> PathBuf {
    let persons: usize = std::env::var("SUNLIGHT_BENCH_PERSONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(190_000);
    let dir = std::env::var("SUNLIGHT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("sunlight-bench-{persons}")));
    if !dir.join(sunlight_datagen::TRUTH_FILE).exists() {
        std::fs::create_dir_all(&dir).expect("bench dir");
        let started = Instant::now();
        let report = generate_city(
            &dir,
            &CityConfig {
                persons_per_county: persons,
                seed: 2021,
            },
            &ProgressBar::new(0),
        )
        .expect("city");
        let rows = report.total(Table::Disbursements);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "generated {rows} disbursement rows in {secs:.1}s ({:.0} rows/s)",
            rows as f64 / secs
        );
    }
    dir
}
