//! Runs the closed-loop driver against an existing database (made by kefu.storage.sqlite, holding
//! open conversations), for profiling the journal without Python:
//!
//!     cargo run --release -p kefu-journal --example closed_loop -- DB APPENDERS SECONDS [FULL|NORMAL [MAX_BATCH]]

use std::path::Path;
use std::time::Duration;

use kefu_journal::closed_loop::closed_loop;
use kefu_journal::{Journal, JournalConfig, Synchronous};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: closed_loop DB APPENDERS SECONDS [FULL|NORMAL [MAX_BATCH]]");
        std::process::exit(2);
    }
    let path = Path::new(&args[1]);
    let appenders: usize = args[2].parse().expect("APPENDERS");
    let seconds: f64 = args[3].parse().expect("SECONDS");
    let synchronous = match args.get(4).map(String::as_str) {
        Some("NORMAL") => Synchronous::Normal,
        _ => Synchronous::Full,
    };
    let conversations: Vec<(i64, String)> = {
        let conn = rusqlite::Connection::open(path).expect("open");
        let mut statement = conn
            .prepare("SELECT id, visitor_id FROM conversations WHERE state != 'closed' ORDER BY id")
            .expect("conversations");
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let config = JournalConfig {
        max_batch: args
            .get(5)
            .map_or(kefu_journal::DEFAULT_MAX_BATCH, |batch| {
                batch.parse().expect("MAX_BATCH")
            }),
        synchronous,
        ..JournalConfig::default()
    };
    let journal = Journal::open(path, config).expect("journal");
    // Like SqliteStorage's checkpointer thread: the WAL is copied back off the writer's thread.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checkpointer = std::env::var_os("NO_CHECKPOINTER").is_none().then(|| {
        let (path, stop) = (path.to_owned(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(path).expect("checkpointer");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        })
    });
    let report = closed_loop(
        &journal,
        &conversations,
        appenders,
        Duration::from_millis(500),
        Duration::from_secs_f64(seconds),
    )
    .expect("run");
    let mut stats = Vec::new();
    journal.take_batch_stats(&mut stats);
    let commit_seconds: f64 = stats.iter().map(|stat| stat.commit_seconds).sum();
    let records: usize = stats.iter().map(|stat| stat.records).sum();
    println!(
        "batches {} (whole run) mean {:.0} records, COMMIT (with fsync) {:.2} ms mean",
        stats.len(),
        records as f64 / stats.len().max(1) as f64,
        commit_seconds / stats.len().max(1) as f64 * 1e3
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(checkpointer) = checkpointer {
        checkpointer.join().expect("checkpointer");
    }
    println!(
        "appenders {appenders} acked/s {:.0} p50 {:.2} ms p99 {:.2} ms cpu {:.2} us/msg writer {:.2} us/msg batches {} failed {}",
        report.acked as f64 / report.seconds,
        report.latency_quantile_ns(0.5) as f64 / 1e6,
        report.latency_quantile_ns(0.99) as f64 / 1e6,
        report.cpu_seconds / report.acked.max(1) as f64 * 1e6,
        report.writer_cpu_seconds / report.acked.max(1) as f64 * 1e6,
        report.batches,
        report.failed,
    );
}
