//! The event store on both backends: versions, atomicity, idempotency, immutability,
//! upcasting, and a follower that never skips an event committed late.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use hpki_backoffice::store::{AppendError, ExpectedVersion, StreamAppend};
use hpki_events::vocabulary::{ApplicationApproved, ApplicationRejected};
use hpki_events::{Event, NewEvent};

#[tokio::test]
async fn appends_read_back_in_order_with_versions_and_metadata() {
    for db in both().await {
        let clock = clock();
        let store = open(&db, clock.clone()).await;
        let first = store
            .append_to(
                "application-1",
                ExpectedVersion::NoStream,
                vec![NewEvent::new(application(1))],
                meta(),
            )
            .await
            .unwrap();
        assert_eq!(
            (first.written, first.last_position),
            (1, 1),
            "{}",
            db.backend
        );
        clock.advance(time::Duration::minutes(5));
        let approved = NewEvent::new(Event::ApplicationApproved(ApplicationApproved {
            application_id: uuid::Uuid::nil(),
        }));
        store
            .append_to(
                "application-1",
                ExpectedVersion::Exact(1),
                vec![approved.clone()],
                meta(),
            )
            .await
            .unwrap();

        let events = store.read_stream("application-1").await.unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].version, 2);
        assert_eq!(events[1].position, 2);
        assert_eq!(events[1].event, approved.event);
        assert_eq!(events[1].event_id, approved.event_id);
        assert_eq!(events[1].metadata.actor.as_str(), "staff:suzuki");
        assert_eq!(
            events[1].recorded_at,
            time::macros::datetime!(2026-11-22 00:05 UTC),
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn a_conflicting_append_fails_typed_and_writes_nothing() {
    for db in both().await {
        let store = open(&db, clock()).await;
        store
            .append_to(
                "application-1",
                ExpectedVersion::NoStream,
                vec![NewEvent::new(application(1))],
                meta(),
            )
            .await
            .unwrap();
        let err = store
            .append_to(
                "application-1",
                ExpectedVersion::NoStream,
                vec![NewEvent::new(application(1))],
                meta(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, AppendError::Conflict { actual: 1, .. }),
            "{}: {err}",
            db.backend
        );
        let err = store
            .append_to(
                "application-1",
                ExpectedVersion::Exact(5),
                vec![NewEvent::new(application(1))],
                meta(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::Conflict { .. }), "{err}");
        assert_eq!(store.count_events().await.unwrap(), 1, "{}", db.backend);
        assert_eq!(store.head().await.unwrap().position, 1);
    }
}

#[tokio::test]
async fn a_batch_across_streams_is_all_or_nothing() {
    for db in both().await {
        let store = open(&db, clock()).await;
        seed(&store, 1).await;
        let batch = vec![
            StreamAppend {
                stream: "application-7".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![NewEvent::new(application(7))],
            },
            // application-0 exists: this part conflicts, so application-7 must not be written either.
            StreamAppend {
                stream: "application-0".into(),
                expected: ExpectedVersion::NoStream,
                events: vec![NewEvent::new(application(0))],
            },
        ];
        assert!(store.append(batch, meta()).await.is_err());
        assert!(
            store.read_stream("application-7").await.unwrap().is_empty(),
            "{}",
            db.backend
        );
        assert_eq!(store.count_events().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn appending_a_stored_event_id_again_is_a_no_op() {
    for db in both().await {
        let store = open(&db, clock()).await;
        let event = NewEvent::new(application(1));
        store
            .append_to(
                "application-1",
                ExpectedVersion::NoStream,
                vec![event.clone()],
                meta(),
            )
            .await
            .unwrap();
        // A retry after a lost answer: same id, same expected version.
        let again = store
            .append_to(
                "application-1",
                ExpectedVersion::NoStream,
                vec![event.clone()],
                meta(),
            )
            .await
            .unwrap();
        assert_eq!(again.written, 0, "{}", db.backend);
        assert_eq!(store.count_events().await.unwrap(), 1);
        // Mixed with a new event, the stored id is refused rather than half-applied.
        let rejected = NewEvent::new(Event::ApplicationRejected(ApplicationRejected {
            application_id: uuid::Uuid::nil(),
            reason: "x".into(),
        }));
        let err = store
            .append_to(
                "application-1",
                ExpectedVersion::Any,
                vec![event.clone(), rejected],
                meta(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, AppendError::PartlyStored(id) if id == event.event_id),
            "{err}"
        );
        assert_eq!(store.count_events().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn bad_stream_names_and_empty_appends_are_refused() {
    let db = sqlite();
    let store = open(&db, clock()).await;
    let err = store
        .append_to(
            "Application 1",
            ExpectedVersion::Any,
            vec![NewEvent::new(application(1))],
            meta(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::BadStream(_)), "{err}");
    let err = store
        .append_to("application-1", ExpectedVersion::Any, vec![], meta())
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Empty), "{err}");
}

#[tokio::test]
async fn the_log_refuses_update_and_delete() {
    use hpki_backoffice::store::Db;
    for db in both().await {
        let store = open(&db, clock()).await;
        seed(&store, 2).await;
        hpki_backoffice::audit::checkpoint(&store, &audit_key(), &*clock())
            .await
            .unwrap();
        let mut refused = vec![
            "UPDATE events SET stream = 'x'",
            "DELETE FROM events",
            "UPDATE checkpoints SET position = 7",
            "DELETE FROM checkpoints",
        ];
        if let Db::Postgres(_) = store.db() {
            refused.push("TRUNCATE events");
        }
        for sql in refused {
            let result = match store.db() {
                Db::Sqlite(s) => sqlx::query(sql).execute(&s.pool).await.map(|_| ()),
                Db::Postgres(p) => sqlx::query(sql).execute(&p.pool).await.map(|_| ()),
            };
            let err = result.unwrap_err().to_string();
            assert!(err.contains("append-only"), "{}: {sql}: {err}", db.backend);
        }
        assert_eq!(store.count_events().await.unwrap(), 2);
    }
}

/// Many writers (as separate store handles, like separate processes) append single events while
/// a follower reads `position > last`: it must see every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_sees_every_event_once_in_order_under_concurrent_writers() {
    for db in both().await {
        const WRITERS: u64 = 16;
        const EACH: u64 = 60;
        let mut handles = Vec::new();
        let mut tasks = Vec::new();
        for w in 0..4 {
            handles.push(open(&db, clock()).await);
            let _ = w;
        }
        for writer in 0..WRITERS {
            let store = handles[(writer % 4) as usize].clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..EACH {
                    let stream = format!("application-{writer}-{i}");
                    store
                        .append_to(
                            &stream,
                            ExpectedVersion::NoStream,
                            vec![NewEvent::new(application(i))],
                            meta(),
                        )
                        .await
                        .unwrap();
                }
            }));
        }
        let follower = open(&db, clock()).await;
        let total = (WRITERS * EACH) as i64;
        let mut seen = HashSet::new();
        let mut last = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while last < total {
            assert!(
                std::time::Instant::now() < deadline,
                "{}: follower stuck at {last}",
                db.backend
            );
            let page = follower.read_page(last, 37).await.unwrap();
            for row in page {
                assert_eq!(
                    row.position,
                    last + 1,
                    "{}: skipped or repeated after {last}",
                    db.backend
                );
                assert!(
                    seen.insert(row.event_id),
                    "{}: event seen twice",
                    db.backend
                );
                last = row.position;
            }
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert!(
            follower.read_page(last, 10).await.unwrap().is_empty(),
            "{}",
            db.backend
        );
        assert_eq!(seen.len() as i64, total);
    }
}

/// Batches large enough to be encoded on other threads while the store reads (64 events or
/// more; in two halves from 128), and a single event encoded in place, stored with the bytes
/// `Body::encode` writes: also when the clock stands behind the log's last recorded time, where
/// the events take that time and are encoded again, and when a group holds a refused request
/// between two accepted ones (each request gets its own encoded events, not its neighbour's).
#[tokio::test]
async fn events_encoded_ahead_are_stored_as_their_bodies_encode() {
    for db in both().await {
        let clock = clock();
        let store = open(&db, clock.clone()).await;
        let batch = |round: u64| -> Vec<StreamAppend> {
            (0..150)
                .map(|i| StreamAppend {
                    stream: format!("application-{}", i % 100),
                    expected: ExpectedVersion::Any,
                    events: vec![NewEvent::new(application(round * 150 + i))],
                })
                .collect()
        };
        store.append(batch(0), meta()).await.unwrap();
        // Three requests sent together, so the writer takes them as one group of 160 events
        // (encoded in two halves), the middle one refused.
        let request = |expected: ExpectedVersion, events: u64| {
            let appends = vec![StreamAppend {
                stream: "application-7".into(),
                expected,
                events: (0..events)
                    .map(|i| NewEvent::new(application(1_000 + i)))
                    .collect(),
            }];
            store.append(appends, meta())
        };
        let (first, refused, last) = tokio::join!(
            request(ExpectedVersion::Exact(2), 30),
            request(ExpectedVersion::Exact(99), 60),
            request(ExpectedVersion::Exact(32), 70),
        );
        assert_eq!(first.unwrap().written, 30, "{}", db.backend);
        assert!(
            matches!(refused, Err(AppendError::Conflict { actual: 32, .. })),
            "{}: {refused:?}",
            db.backend
        );
        assert_eq!(last.unwrap().written, 70, "{}", db.backend);

        // An hour behind the log: every later event is stamped with the log's last time.
        clock.set(time::macros::datetime!(2026-11-21 23:00 UTC));
        store.append(batch(1), meta()).await.unwrap();
        store
            .append_to(
                "application-0",
                ExpectedVersion::Exact(4),
                vec![NewEvent::new(application(999))],
                meta(),
            )
            .await
            .unwrap();
        let rows = store.read_page(0, 1_000).await.unwrap();
        assert_eq!(rows.len(), 401, "{}", db.backend);
        for (n, row) in rows.iter().enumerate() {
            let body = hpki_events::Body::decode(&row.body).unwrap();
            assert_eq!(
                body.encode().unwrap(),
                row.body,
                "{} position {}",
                db.backend,
                n + 1
            );
            assert_eq!((body.position, row.position), (n as i64 + 1, n as i64 + 1));
            assert_eq!(body.version, row.version);
            assert_eq!(body.event_id, row.event_id, "{}", db.backend);
            assert_eq!(
                body.recorded_at, "2026-11-22T00:00:00.000000Z",
                "{}",
                db.backend
            );
        }
        // The group took positions 151 to 250; application-0 holds positions 1, 101, 251, 351
        // and the single event's, 401.
        assert_eq!(rows[150].stream, "application-7", "{}", db.backend);
        assert_eq!(rows[150].version, 3, "{}", db.backend);
        assert_eq!(rows[249].version, 102, "{}", db.backend);
        assert_eq!(rows[250].version, 3, "{}", db.backend);
        assert_eq!(rows[400].version, 5, "{}", db.backend);
        let summary = hpki_backoffice::audit::verify(&store, &audit_key().public(), &|_| {})
            .await
            .unwrap();
        assert_eq!(summary.events, 401, "{}", db.backend);
    }
}

/// Two stores on one database (two processes of the back office) appending to the same streams
/// in turn. Each store remembers the versions its last commit left; once the other store has
/// appended, those are stale, and the next append must read them again: the versions continue
/// without a gap or a clash, and an expected version is checked against the true one.
#[tokio::test]
async fn two_stores_appending_to_the_same_streams_in_turn_see_each_others_versions() {
    for db in both().await {
        let one = open(&db, clock()).await;
        let other = open(&db, clock()).await;
        let streams = ["application-1", "application-2"];
        let append = |store: &hpki_backoffice::store::Store, expected: i64, n: u64| {
            let appends = streams
                .iter()
                .map(|stream| StreamAppend {
                    stream: (*stream).to_owned(),
                    expected: ExpectedVersion::Exact(expected),
                    events: vec![NewEvent::new(application(n))],
                })
                .collect();
            let store = store.clone();
            async move { store.append(appends, meta()).await }
        };
        // Both streams begin at version 1 (expected 0: the streams do not exist yet).
        append(&one, 0, 0).await.unwrap();
        for turn in 1..=4i64 {
            let (mover, stale) = if turn % 2 == 1 {
                (&other, &one)
            } else {
                (&one, &other)
            };
            append(mover, turn, turn as u64).await.unwrap_or_else(|e| {
                panic!("{}: turn {turn}: {e}", db.backend);
            });
            // The store that did not move still remembers version `turn` from its own last
            // append (or none); the stream is at `turn + 1` now.
            let err = append(stale, turn, 100).await.unwrap_err();
            assert!(
                matches!(err, AppendError::Conflict { actual, .. } if actual == turn + 1),
                "{}: turn {turn}: {err}",
                db.backend
            );
        }
        for stream in streams {
            let versions: Vec<i64> = one
                .read_stream(stream)
                .await
                .unwrap()
                .iter()
                .map(|e| e.version)
                .collect();
            assert_eq!(versions, vec![1, 2, 3, 4, 5], "{}: {stream}", db.backend);
        }
        assert_eq!(one.count_events().await.unwrap(), 10, "{}", db.backend);
    }
}

/// The schemas PostgreSQL tests make are dropped by a later run once an hour old, and only
/// those: the `test` database does not fill up run after run.
#[tokio::test]
async fn stale_test_schemas_are_dropped_and_fresh_ones_kept() {
    let conn = sqlx::postgres::PgPool::connect(&postgres_server())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {}: {e}", postgres_server()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let stale = format!("t_{}_{id}", now - 3601);
    let fresh = format!("t_{}_{id}", now - 60);
    let other = format!("kept_{id}");
    for schema in [&stale, &fresh, &other] {
        let create = format!("CREATE SCHEMA {schema}; CREATE TABLE {schema}.x (y int)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&conn)
            .await
            .unwrap();
    }
    drop_stale_schemas(&conn, now).await;
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname IN ($1, $2, $3) ORDER BY 1",
    )
    .bind(&stale)
    .bind(&fresh)
    .bind(&other)
    .fetch_all(&conn)
    .await
    .unwrap();
    for schema in [&fresh, &other] {
        let drop = format!("DROP SCHEMA {schema} CASCADE");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&conn)
            .await
            .unwrap();
    }
    assert_eq!(left, vec![other.clone(), fresh.clone()]);
}
