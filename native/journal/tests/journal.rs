//! The journal against a real SQLite file: group commit, seq rules, duplicates, failures, close.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{collect, create_database, last_seq, record, stored, TempDir};
use kefu_journal::{
    AppendError, AppendRecord, Journal, JournalConfig, Outcome, RecordTexts, Role, SubmitError,
};

fn open(path: &std::path::Path) -> Journal {
    Journal::open(path, JournalConfig::default()).unwrap()
}

fn by_token(outcomes: Vec<Outcome>) -> HashMap<u64, Outcome> {
    outcomes
        .into_iter()
        .map(|outcome| (outcome.token, outcome))
        .collect()
}

#[test]
fn group_commit_writes_many_records_per_transaction_in_order() {
    let dir = TempDir::new("group");
    create_database(&dir.db(), 10);
    let journal = open(&dir.db());
    // Hold the file's write lock while submitting: the writer waits with its first batch, the rest
    // piles up and must go out in a few large transactions, not one per record.
    let lock = Arc::clone(journal.write_lock());
    lock.acquire();
    for token in 0..2000u64 {
        let conv = (token % 10) as i64 + 1;
        journal
            .submit(record(conv, &format!("m{token}"), token))
            .unwrap();
    }
    lock.release();
    let outcomes = by_token(collect(&journal, 2000));
    assert!(
        journal.commits() <= 3,
        "{} commits for 2000 records",
        journal.commits()
    );
    for conv in 1..=10i64 {
        // Seqs follow submission order within each conversation.
        let mut expected_seq = 0;
        for token in (0..2000u64).filter(|token| (token % 10) as i64 + 1 == conv) {
            expected_seq += 1;
            let appended = outcomes[&token].result.clone().unwrap();
            assert_eq!((appended.seq, appended.duplicate), (expected_seq, false));
        }
        let rows = stored(&dir.db(), conv);
        assert_eq!(rows.len(), 200);
        assert!(rows
            .iter()
            .zip(1..)
            .all(|((seq, _), expected)| *seq == expected));
        assert_eq!(last_seq(&dir.db(), conv), 200);
    }
}

#[test]
fn retried_cmid_gets_its_original_seq_and_takes_none() {
    let dir = TempDir::new("dup");
    create_database(&dir.db(), 1);
    let journal = open(&dir.db());
    journal.submit(record(1, "a", 1)).unwrap();
    let first = collect(&journal, 1).remove(0).result.unwrap();
    // The same cmid again, several times in one batch, plus a new one and another sender's "a".
    let lock = Arc::clone(journal.write_lock());
    lock.acquire();
    journal.submit(record(1, "a", 2)).unwrap();
    journal.submit(record(1, "b", 3)).unwrap();
    journal.submit(record(1, "b", 4)).unwrap();
    let same_cmid = record(1, "a", 5);
    let other_sender = AppendRecord::new(
        1,
        Role::Visitor,
        RecordTexts {
            sender_id: "a_agent",
            ..same_cmid.texts()
        },
        None,
        5,
    );
    journal.submit(other_sender).unwrap();
    lock.release();
    let outcomes = by_token(collect(&journal, 4));
    let result = |token: u64| outcomes[&token].result.clone().unwrap();
    assert_eq!((first.seq, first.duplicate), (1, false));
    assert_eq!(result(2), first.clone_with_duplicate());
    assert_eq!((result(3).seq, result(3).duplicate), (2, false));
    assert_eq!(
        (result(4).seq, result(4).duplicate, result(4).ts),
        (2, true, result(3).ts)
    );
    assert_eq!((result(5).seq, result(5).duplicate), (3, false));
    assert_eq!(stored(&dir.db(), 1).len(), 3);
    assert_eq!(last_seq(&dir.db(), 1), 3);
}

trait Duplicate {
    fn clone_with_duplicate(&self) -> Self;
}

impl Duplicate for kefu_journal::Appended {
    fn clone_with_duplicate(&self) -> Self {
        Self {
            duplicate: true,
            ..*self
        }
    }
}

#[test]
fn unknown_conversation_fails_alone() {
    let dir = TempDir::new("unknown");
    create_database(&dir.db(), 2);
    let journal = open(&dir.db());
    let lock = Arc::clone(journal.write_lock());
    lock.acquire();
    for token in 0..10u64 {
        let conv = if token == 4 {
            999
        } else {
            (token % 2) as i64 + 1
        };
        journal
            .submit(record(conv, &format!("m{token}"), token))
            .unwrap();
    }
    lock.release();
    let outcomes = by_token(collect(&journal, 10));
    assert_eq!(outcomes[&4].result, Err(AppendError::NotFound));
    assert!((0..10)
        .filter(|token| *token != 4)
        .all(|token| outcomes[&token].result.is_ok()));
    assert_eq!(stored(&dir.db(), 1).len() + stored(&dir.db(), 2).len(), 9);
}

#[test]
fn closed_conversation_refuses_new_messages_but_answers_retries() {
    let dir = TempDir::new("closed");
    create_database(&dir.db(), 1);
    let journal = open(&dir.db());
    journal.submit(record(1, "before", 1)).unwrap();
    collect(&journal, 1);
    rusqlite::Connection::open(dir.db())
        .unwrap()
        .execute("UPDATE conversations SET state = 'closed' WHERE id = 1", [])
        .unwrap();
    journal.submit(record(1, "after", 2)).unwrap();
    journal.submit(record(1, "before", 3)).unwrap();
    let outcomes = by_token(collect(&journal, 2));
    assert_eq!(outcomes[&2].result, Err(AppendError::Conflict));
    let retry = outcomes[&3].result.clone().unwrap();
    assert_eq!((retry.seq, retry.duplicate), (1, true));
    assert_eq!(stored(&dir.db(), 1), vec![(1, "before".to_owned())]);
}

#[test]
fn in_flight_limit_refuses_instead_of_buffering_and_close_refuses_all() {
    let dir = TempDir::new("full");
    create_database(&dir.db(), 1);
    let config = JournalConfig {
        max_pending: 4,
        ..JournalConfig::default()
    };
    let journal = Journal::open(&dir.db(), config).unwrap();
    let lock = Arc::clone(journal.write_lock());
    lock.acquire();
    for token in 0..4 {
        journal
            .submit(record(1, &format!("m{token}"), token))
            .unwrap();
    }
    assert!(
        matches!(journal.submit(record(1, "m4", 4)), Err(SubmitError::Full(r)) if r.cmid() == "m4")
    );
    lock.release();
    let outcomes = collect(&journal, 4);
    assert!(outcomes.iter().all(|outcome| outcome.result.is_ok()));
    journal.close();
    assert!(matches!(
        journal.submit(record(1, "m5", 5)),
        Err(SubmitError::Closed(_))
    ));
}

#[test]
fn close_writes_what_was_submitted() {
    let dir = TempDir::new("close");
    create_database(&dir.db(), 1);
    let journal = open(&dir.db());
    for token in 0..500 {
        journal
            .submit(record(1, &format!("m{token}"), token))
            .unwrap();
    }
    journal.close();
    let mut outcomes = Vec::new();
    journal.drain_completions(&mut outcomes);
    assert_eq!(outcomes.len(), 500);
    assert_eq!(stored(&dir.db(), 1).len(), 500);
}

#[test]
fn failed_commit_acks_nothing_stores_nothing_and_recovers() {
    let dir = TempDir::new("fault");
    create_database(&dir.db(), 1);
    let journal = open(&dir.db());
    journal.set_commit_fault(true);
    for token in 0..20 {
        journal
            .submit(record(1, &format!("m{token}"), token))
            .unwrap();
    }
    let failed = collect(&journal, 20);
    assert!(failed
        .iter()
        .all(|outcome| matches!(outcome.result, Err(AppendError::Unavailable(_)))));
    assert!(stored(&dir.db(), 1).is_empty());
    assert_eq!(last_seq(&dir.db(), 1), 0);
    journal.set_commit_fault(false);
    for token in 0..20 {
        journal
            .submit(record(1, &format!("m{token}"), token))
            .unwrap();
    }
    let retried = collect(&journal, 20);
    let mut seqs: Vec<i64> = retried
        .iter()
        .map(|outcome| outcome.result.clone().unwrap().seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
}

#[test]
fn disk_full_fails_only_what_did_not_fit() {
    let dir = TempDir::new("diskfull");
    create_database(&dir.db(), 1);
    let journal = open(&dir.db());
    let pages: i64 = rusqlite::Connection::open(dir.db())
        .unwrap()
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .unwrap();
    journal.limit_pages(pages + 3);
    let lock = Arc::clone(journal.write_lock());
    lock.acquire();
    for token in 0..60 {
        let cmid = format!("m{token}");
        let text = "x".repeat(2000);
        let small = record(1, &cmid, token);
        let big = RecordTexts {
            text: &text,
            ..small.texts()
        };
        journal
            .submit(AppendRecord::new(1, Role::Visitor, big, None, token))
            .unwrap();
    }
    lock.release();
    let outcomes = by_token(collect(&journal, 60));
    let acked: HashMap<String, i64> = outcomes
        .values()
        .filter_map(|outcome| {
            let seq = outcome.result.as_ref().ok()?.seq;
            Some((format!("m{}", outcome.token), seq))
        })
        .collect();
    assert!(
        !acked.is_empty() && acked.len() < 60,
        "{} acked: {:?}",
        acked.len(),
        outcomes
            .values()
            .map(|outcome| &outcome.result)
            .collect::<Vec<_>>()
    );
    assert!(outcomes.values().all(|outcome| match &outcome.result {
        Ok(_) => true,
        Err(AppendError::Unavailable(_)) => true,
        Err(other) => panic!("unexpected {other:?}"),
    }));
    let rows = stored(&dir.db(), 1);
    let rows_by_cmid: HashMap<String, i64> = rows
        .iter()
        .map(|(seq, cmid)| (cmid.clone(), *seq))
        .collect();
    assert_eq!(rows_by_cmid, acked);
    assert!(rows
        .iter()
        .zip(1..)
        .all(|((seq, _), expected)| *seq == expected));
}

#[test]
fn each_consumer_gets_its_own_outcomes() {
    let dir = TempDir::new("sinks");
    create_database(&dir.db(), 1);
    let journal = open(&dir.db());
    let other = journal.new_completions().unwrap();
    journal.submit(record(1, "mine", 1)).unwrap();
    journal.submit_to(record(1, "theirs", 2), &other).unwrap();
    let mine = collect(&journal, 1);
    assert_eq!(
        mine.iter().map(|outcome| outcome.token).collect::<Vec<_>>(),
        vec![1]
    );
    let mut theirs = Vec::new();
    while theirs.is_empty() {
        other.drain(&mut theirs);
        std::thread::yield_now();
    }
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].token, 2);
}

#[test]
fn concurrent_producers_never_lose_a_wake_up() {
    // Producers pause now and then so the writer keeps falling asleep between records: a lost
    // wake-up would leave records unwritten and `collect` would time out.
    let dir = TempDir::new("wakeups");
    create_database(&dir.db(), 4);
    let journal = Arc::new(open(&dir.db()));
    let producers: Vec<_> = (0..4u64)
        .map(|producer| {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                for n in 0..500u64 {
                    let token = producer * 1000 + n;
                    journal
                        .submit(record(producer as i64 + 1, &format!("m{token}"), token))
                        .unwrap();
                    if n % 50 == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    let outcomes = collect(&journal, 2000);
    assert!(outcomes.iter().all(|outcome| outcome.result.is_ok()));
    for conv in 1..=4 {
        // One producer per conversation: its records keep their order.
        let cmids: Vec<String> = stored(&dir.db(), conv)
            .into_iter()
            .map(|(_, cmid)| cmid)
            .collect();
        let expected: Vec<String> = (0..500u64)
            .map(|n| format!("m{}", (conv as u64 - 1) * 1000 + n))
            .collect();
        assert_eq!(cmids, expected);
    }
}

#[test]
fn batch_stats_report_each_committed_batch_once_and_no_failed_one() {
    let dir = TempDir::new("stats");
    create_database(&dir.db(), 2);
    let journal = open(&dir.db());
    for token in 0..50u64 {
        journal
            .submit(record(1, &format!("m{token}"), token))
            .unwrap();
    }
    collect(&journal, 50);
    journal.set_commit_fault(true);
    journal.submit(record(2, "lost", 99)).unwrap();
    assert!(collect(&journal, 1)[0].result.is_err());
    // The writer records its statistics before publishing the batch's outcomes.
    let mut stats = Vec::new();
    journal.take_batch_stats(&mut stats);
    assert_eq!(stats.iter().map(|stat| stat.records).sum::<usize>(), 50);
    assert!(stats.iter().all(|stat| stat.commit_seconds >= 0.0));
    let mut again = Vec::new();
    journal.take_batch_stats(&mut again);
    assert!(again.is_empty());
    assert!(journal.writer_cpu() > std::time::Duration::ZERO);
}
