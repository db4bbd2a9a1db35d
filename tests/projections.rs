//! The projection runner: catches up, resumes without applying anything twice, refuses a
//! stale checkpoint, rebuilds to the same rows, and replays the past into a separate file.

mod common;

use common::*;
use hpki_backoffice::projection_runner::{self, catch_up, catch_up_named, rebuild, replay_as_of};
use hpki_backoffice::store::ExpectedVersion;
use hpki_events::vocabulary::ApplicationApproved;
use hpki_events::{Event, NewEvent};
use hpki_projections::{Body, Change, Doc, Projection, Streams};

async fn approve(store: &hpki_backoffice::store::Store, i: u64) {
    let approved = NewEvent::new(Event::ApplicationApproved(ApplicationApproved {
        application_id: uuid::Uuid::nil(),
    }));
    store
        .append_to(
            &format!("application-{i}"),
            ExpectedVersion::Exact(1),
            vec![approved],
            meta(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_runner_catches_up_resumes_and_never_applies_twice() {
    for db in both().await {
        let store = open(&db, clock()).await;
        seed(&store, 1_500).await;
        assert_eq!(
            catch_up(&store, &Streams).await.unwrap(),
            1_500,
            "{}",
            db.backend
        );
        approve(&store, 7).await;
        // A new runner (as after a crash) starts from the stored checkpoint.
        let reopened = open(&db, clock()).await;
        assert_eq!(catch_up(&reopened, &Streams).await.unwrap(), 1_501);
        let docs = store
            .docs("streams", Some("application"), 5_000)
            .await
            .unwrap();
        assert_eq!(docs.len(), 1_500);
        let seven = docs.iter().find(|(k, _)| k == "application-7").unwrap();
        assert_eq!(seven.1.body["version"], 2, "{}", db.backend);
        assert_eq!(seven.1.body["last_type"], "ApplicationApproved");
    }
}

#[tokio::test]
async fn a_batch_read_after_a_stale_checkpoint_writes_nothing() {
    for db in both().await {
        let store = open(&db, clock()).await;
        seed(&store, 3).await;
        catch_up(&store, &Streams).await.unwrap();
        // A second runner that read from position 0 before the first committed.
        let stale = store.read_page(0, 3).await.unwrap();
        let changes: Vec<_> = stale
            .iter()
            .flat_map(|r| Streams.apply(&r.decode().unwrap()))
            .collect();
        let moved = store
            .apply_projection("streams", 0, 3, &changes)
            .await
            .unwrap();
        assert!(!moved, "{}", db.backend);
        assert_eq!(store.projection_checkpoint("streams").await.unwrap(), 3);
    }
}

/// On SQLite, the store's file and its read-model files pass SQLite's own check: every index
/// entry matches its row.
fn assert_sqlite_intact(db: &TestDb) {
    if db.backend == "sqlite" {
        let file = db.url.trim_start_matches("sqlite://");
        let mut files = vec![std::path::PathBuf::from(file)];
        files.extend(
            read_model_files(db)
                .iter()
                .map(|name| read_models(db).join(name)),
        );
        for file in files {
            let file = rusqlite::Connection::open(&file).unwrap();
            let check: String = file
                .query_row("PRAGMA integrity_check", [], |row| row.get(0))
                .unwrap();
            assert_eq!(check, "ok");
        }
    }
}

/// The folder of a SQLite store's read-model files.
fn read_models(db: &TestDb) -> std::path::PathBuf {
    format!("{}.read-models", db.url.trim_start_matches("sqlite://")).into()
}

/// The read-model files in that folder, by name.
fn read_model_files(db: &TestDb) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(read_models(db))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".db"))
        .collect();
    names.sort();
    names
}

/// A rebuild of every projection on a SQLite file writes a new read-model file and names it
/// current. A second handle on the database (another process: `serve` beside the CLI's
/// rebuild) reads the new file from its next query, and its runner folds on from the
/// rebuild's checkpoints; the old file is gone. A rebuild while another holds the folder's
/// lock is refused and leaves nothing behind.
#[tokio::test]
async fn a_rebuild_swaps_in_a_read_model_file_that_every_handle_follows() {
    let db = sqlite();
    let store = open(&db, clock()).await;
    let other = open(&db, clock()).await;
    seed(&store, 50).await;
    catch_up(&other, &Streams).await.unwrap();
    assert_eq!(other.docs("streams", None, 100).await.unwrap().len(), 50);
    let before = read_model_files(&db);
    assert_eq!(before.len(), 1, "{before:?}");

    approve(&store, 3).await; // position 51, which no runner has folded
    let done = rebuild(&store, None, &|_| {}).await.unwrap();
    assert!(done.iter().all(|(_, position)| *position == 51), "{done:?}");
    let after = read_model_files(&db);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before, "a new file");
    assert_sqlite_intact(&db);
    // The other handle's connections held the old file; they read the new one now.
    assert_eq!(other.projection_checkpoint("streams").await.unwrap(), 51);
    let version = |docs: &[(String, Doc)], key: &str| {
        docs.iter().find(|(k, _)| k == key).unwrap().1.body["version"].clone()
    };
    let docs = other.docs("streams", None, 100).await.unwrap();
    assert_eq!(version(&docs, "application-3"), 2);
    // Its runner folds on from the rebuild's checkpoint, and the first handle sees that.
    approve(&store, 4).await;
    assert_eq!(catch_up(&other, &Streams).await.unwrap(), 52);
    let docs = store.docs("streams", None, 100).await.unwrap();
    assert_eq!(version(&docs, "application-4"), 2);
    assert_eq!(docs.len(), 50);

    let lock = std::fs::File::options()
        .write(true)
        .open(read_models(&db).join("lock"))
        .unwrap();
    lock.lock().unwrap();
    let err = rebuild(&store, None, &|_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("another rebuild is under way"), "{err}");
    assert_eq!(read_model_files(&db), after);
    drop(lock);
    rebuild(&store, None, &|_| {}).await.unwrap();
    assert_eq!(read_model_files(&db).len(), 1);
    assert_eq!(store.docs("streams", None, 100).await.unwrap(), docs);

    // What a rebuild that crashed left does not stop the next one, which removes it.
    let strays = [
        "0000-crashed.db",
        "0000-crashed.db-wal",
        "0000-crashed.db-journal",
    ];
    for stray in strays {
        std::fs::write(read_models(&db).join(stray), b"half a file").unwrap();
    }
    let third = open(&db, clock()).await;
    assert_eq!(third.docs("streams", None, 100).await.unwrap(), docs);
    rebuild(&third, None, &|_| {}).await.unwrap();
    let left: Vec<_> = std::fs::read_dir(read_models(&db))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("0000"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(read_model_files(&db).len(), 1);
    assert_eq!(store.docs("streams", None, 100).await.unwrap(), docs);
}

/// Read models are a fold of the log: their file removed while no process has it open, the
/// next start makes an empty one, and the runner folds the log into it again.
#[tokio::test]
async fn a_removed_read_model_file_is_made_again_and_folded_from_the_log() {
    let db = sqlite();
    let store = open(&db, clock()).await;
    seed(&store, 20).await;
    approve(&store, 7).await;
    catch_up(&store, &Streams).await.unwrap();
    let folded = store.docs("streams", None, 100).await.unwrap();
    drop(store);
    std::fs::remove_dir_all(read_models(&db)).unwrap();

    let store = open(&db, clock()).await;
    assert_eq!(read_model_files(&db).len(), 1);
    assert_eq!(store.projection_checkpoint("streams").await.unwrap(), 0);
    assert!(store.docs("streams", None, 100).await.unwrap().is_empty());
    assert_eq!(catch_up(&store, &Streams).await.unwrap(), 21);
    assert_eq!(store.docs("streams", None, 100).await.unwrap(), folded);
    drop(store);

    // A file that is there but cannot be read is reported, not replaced by an empty one.
    let name = read_model_files(&db).pop().unwrap();
    let file = read_models(&db).join(&name);
    std::fs::write(&file, vec![b'x'; 4096]).unwrap();
    let err = hpki_backoffice::store::Store::open(&db.url, clock())
        .await
        .err()
        .expect("an unreadable read-model file stops the open")
        .to_string();
    assert!(
        err.contains("the read models' file") && err.contains(&name),
        "{err}"
    );
    assert_eq!(read_model_files(&db), vec![name]);
}

#[tokio::test]
async fn a_rebuild_gives_the_rows_the_runner_built() {
    for db in both().await {
        let store = open(&db, clock()).await;
        seed(&store, 200).await;
        approve(&store, 3).await;
        catch_up(&store, &Streams).await.unwrap();
        let incremental = store.docs("streams", None, 1_000).await.unwrap();
        // A row the log does not explain (left by a bug, say): the rebuild must not keep it.
        let stray = Change::Put {
            key: "stray".into(),
            doc: Doc {
                list: "application".into(),
                sort_key: "stray".into(),
                body: Body::from(&serde_json::json!({ "version": 99 })),
            },
        };
        assert!(
            store
                .apply_projection("streams", 201, 201, &[stray])
                .await
                .unwrap()
        );
        assert_eq!(
            store.docs("streams", None, 1_000).await.unwrap().len(),
            incremental.len() + 1
        );
        // The only projection with documents: the store's table is emptied whole, and the
        // scratch file's rows and index entries moved in as they are.
        let done = rebuild(&store, Some("streams"), &|_| {}).await.unwrap();
        assert_eq!(done, vec![("streams", 201)]);
        assert_sqlite_intact(&db);
        assert_eq!(
            store.docs("streams", None, 1_000).await.unwrap(),
            incremental,
            "{}",
            db.backend
        );
        // Documents in Japanese, with quotes and commas in their bodies, and text that JSON and
        // PostgreSQL's COPY both escape (a quote, a backslash, a tab, a newline), copy over
        // unchanged.
        let mut awkward = application(9_999);
        if let Event::ApplicationReceived(a) = &mut awkward {
            a.address = "東京都\t文京区 \"本郷\" 1\\2\r\n3".into();
        }
        store
            .append_to(
                "application-awkward",
                ExpectedVersion::NoStream,
                vec![NewEvent::new(awkward)],
                meta(),
            )
            .await
            .unwrap();
        catch_up_named(&store, "applications").await.unwrap();
        let applications = store.docs("applications", None, 1_000).await.unwrap();
        assert!(
            applications.iter().any(|(_, doc)| doc.body["name_kanji"]
                .as_str()
                .is_some_and(|n| !n.is_ascii())),
            "{applications:?}"
        );
        assert!(
            applications
                .iter()
                .any(|(_, doc)| doc.body["address"] == "東京都\t文京区 \"本郷\" 1\\2\r\n3"),
            "{applications:?}"
        );
        // Beside another projection's documents, which stay: copied row by row.
        rebuild(&store, Some("applications"), &|_| {})
            .await
            .unwrap();
        assert_sqlite_intact(&db);
        assert_eq!(
            store.docs("applications", None, 1_000).await.unwrap(),
            applications,
            "{}",
            db.backend
        );
        assert_eq!(
            store.docs("streams", None, 1_000).await.unwrap(),
            incremental,
            "{}",
            db.backend
        );
        // Every projection at once, each list read through the work lists' index.
        for projection in hpki_projections::all() {
            catch_up(&store, projection.as_ref()).await.unwrap();
        }
        let lists = |store: hpki_backoffice::store::Store| async move {
            let mut all = Vec::new();
            for projection in hpki_projections::all() {
                let docs = store.docs(projection.name(), None, 10_000).await.unwrap();
                let names: std::collections::BTreeSet<String> =
                    docs.iter().map(|(_, doc)| doc.list.clone()).collect();
                for list in names {
                    let on_it = store
                        .docs(projection.name(), Some(&list), 10_000)
                        .await
                        .unwrap();
                    all.push((projection.name(), list, on_it));
                }
                all.push((projection.name(), String::new(), docs));
            }
            all
        };
        let before = lists(store.clone()).await;
        rebuild(&store, None, &|_| {}).await.unwrap();
        assert_sqlite_intact(&db);
        assert_eq!(lists(store.clone()).await, before, "{}", db.backend);
        let err = rebuild(&store, Some("nonsense"), &|_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no projection is named \"nonsense\" (known: streams, applications"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn replay_as_of_writes_the_past_elsewhere_and_leaves_live_models_alone() {
    for db in both().await {
        let clock = clock();
        let store = open(&db, clock.clone()).await;
        seed(&store, 10).await; // recorded at 00:00
        clock.advance(time::Duration::hours(2));
        approve(&store, 4).await; // recorded at 02:00
        catch_up(&store, &Streams).await.unwrap();
        let live = store.docs("streams", None, 100).await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("as-of.db");
        let as_of = time::macros::datetime!(2026-11-22 01:59:59.999999 UTC);
        let replay = replay_as_of(&store, as_of, &out, &|_| {}).await.unwrap();
        // Ten streams, ten applications on the work lists, ten "received" mails to send.
        assert_eq!(
            (replay.position, replay.documents),
            (10, 30),
            "{}",
            db.backend
        );

        // The replay's file is a read-model file like the live one (the fold keeps the work
        // lists' index up to date as it writes), beside the replay's own table, and every index
        // entry matches its row.
        let past = rusqlite::Connection::open(&out).unwrap();
        let schema = |conn: &rusqlite::Connection| {
            let mut statement = conn
                .prepare("SELECT type, name, sql FROM sqlite_master WHERE name <> 'replay' ORDER BY name")
                .unwrap();
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                ))
            });
            rows.unwrap().map(Result::unwrap).collect::<Vec<_>>()
        };
        let fresh =
            hpki_backoffice::store::read_model_file::create(&dir.path().join("fresh.db")).unwrap();
        assert_eq!(schema(&past), schema(&fresh));
        let check: String = past
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(check, "ok", "{}", db.backend);
        let (as_of_text, position): (String, i64) = past
            .query_row("SELECT as_of, position FROM replay", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!(
            (as_of_text.as_str(), position),
            ("2026-11-22T01:59:59.999999Z", 10)
        );
        let past = read_model_file_docs(&out, "streams");
        let four = past.iter().find(|(k, _)| k == "application-4").unwrap();
        assert_eq!(
            four.1.body["version"], 1,
            "the approval came after the instant"
        );
        assert_eq!(
            store.docs("streams", None, 100).await.unwrap(),
            live,
            "live read models changed"
        );
        let err = replay_as_of(&store, as_of, &out, &|_| {})
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists"), "{err}");
        let status = projection_runner::status(&store).await.unwrap();
        assert_eq!((status[0].position, status[0].head), (11, 11));
    }
}

/// A replay reads the log in pages of 5,000 events (`store::PAGE`) and stops inside the third,
/// at the first event after the instant: everything before it is folded, once, and nothing after.
#[tokio::test]
async fn a_replay_over_several_pages_stops_inside_one() {
    assert_eq!(hpki_backoffice::store::PAGE, 5_000, "the test's arithmetic");
    for db in both().await {
        let clock = clock();
        let store = open(&db, clock.clone()).await;
        seed(&store, 10_600).await; // positions 1..=10,600, recorded at 00:00
        clock.advance(time::Duration::hours(2));
        for i in 0..100 {
            approve(&store, i).await; // positions 10,601..=10,700, recorded at 02:00
        }
        let dir = tempfile::tempdir().unwrap();

        let before = dir.path().join("before.db");
        let as_of = time::macros::datetime!(2026-11-22 01:00 UTC);
        let replay = replay_as_of(&store, as_of, &before, &|_| {}).await.unwrap();
        // A stream row, an application and a "received" mail for each application.
        assert_eq!(
            (replay.position, replay.documents),
            (10_600, 31_800),
            "{}",
            db.backend
        );
        assert_eq!(approved(&before), (10_600, 0), "{}", db.backend);

        let after = dir.path().join("after.db");
        let as_of = time::macros::datetime!(2026-11-22 03:00 UTC);
        let replay = replay_as_of(&store, as_of, &after, &|_| {}).await.unwrap();
        assert_eq!(replay.position, 10_700, "{}", db.backend);
        assert_eq!(approved(&after), (10_600, 100), "{}", db.backend);
    }
}

/// A projection's documents in a read-model file (a replay's), by key.
fn read_model_file_docs(path: &std::path::Path, projection: &str) -> Vec<(String, Doc)> {
    hpki_backoffice::store::spill::docs(path, projection).unwrap()
}

/// Streams in a replay's file, and how many of them are at version 2 (approved).
fn approved(path: &std::path::Path) -> (usize, usize) {
    let streams: Vec<_> = read_model_file_docs(path, "streams")
        .into_iter()
        .filter(|(_, doc)| doc.list == "application")
        .collect();
    let twice = streams.iter().filter(|(_, d)| d.body["version"] == 2);
    (streams.len(), twice.count())
}

/// An in-memory SQLite store lives in its pool's connections: the rebuild attaches its scratch
/// file to one of them and must leave it (and the database) as it found it.
#[tokio::test]
async fn a_rebuild_of_an_in_memory_store_keeps_the_store() {
    let store = hpki_backoffice::store::Store::open("sqlite::memory:", clock())
        .await
        .unwrap();
    seed(&store, 20).await;
    catch_up(&store, &Streams).await.unwrap();
    let incremental = store.docs("streams", None, 100).await.unwrap();
    assert_eq!(incremental.len(), 20);
    for _ in 0..2 {
        let done = rebuild(&store, None, &|_| {}).await.unwrap();
        assert!(done.iter().all(|(_, position)| *position == 20), "{done:?}");
        assert_eq!(store.docs("streams", None, 100).await.unwrap(), incremental);
        assert_eq!(store.head().await.unwrap().position, 20);
    }
    // The store still takes appends afterwards.
    store
        .append_to(
            "application-extra",
            ExpectedVersion::NoStream,
            vec![NewEvent::new(application(99))],
            meta(),
        )
        .await
        .unwrap();
    assert_eq!(store.head().await.unwrap().position, 21);
}

/// On PostgreSQL a rebuild fills a new table for each projection and swaps it in for the
/// projection's partition of `read_models` (migrations/postgres/0008): again and again, with
/// nothing left behind, and for a projection that has no partition yet (one newer than the
/// migrations, whose documents sat in the default partition) as well.
#[tokio::test]
async fn a_postgres_rebuild_swaps_in_a_partition_each_time() {
    let db = postgres().await;
    let store = open(&db, clock()).await;
    let hpki_backoffice::store::Db::Postgres(pg) = store.db() else {
        unreachable!("a PostgreSQL store")
    };
    let sql = |statement: &'static str| sqlx::raw_sql(statement).execute(&pg.pool);
    let partitions = || {
        sqlx::query_scalar::<_, String>(
            "SELECT c.relname::text || ':' || pg_get_expr(c.relpartbound, c.oid)
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'read_models'::regclass ORDER BY 1",
        )
        .fetch_all(&pg.pool)
    };
    seed(&store, 50).await;
    approve(&store, 3).await;
    catch_up(&store, &Streams).await.unwrap();
    catch_up_named(&store, "applications").await.unwrap();
    let streams = store.docs("streams", None, 1_000).await.unwrap();
    let applications = store.docs("applications", None, 1_000).await.unwrap();
    assert_eq!((streams.len(), applications.len()), (50, 50));
    // Each partition's indexes are the parent's, attached, under the partition's names, and
    // lead with a column that varies within a partition (migration 0009).
    let indexes = || {
        sqlx::query_scalar::<_, String>(
            "SELECT c.relname::text || ' ' || substring(pg_get_indexdef(c.oid) from 'USING .*$')
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent IN ('read_models_pkey'::regclass, 'read_models_by_list'::regclass)
               AND c.relname::text ~ '^read_models_(applications|streams)_' ORDER BY 1",
        )
        .fetch_all(&pg.pool)
    };
    let attached = [
        "read_models_applications_by_list USING btree (list, sort_key)",
        "read_models_applications_pkey USING btree (key, projection)",
        "read_models_streams_by_list USING btree (list, sort_key)",
        "read_models_streams_pkey USING btree (key, projection)",
    ];
    assert_eq!(indexes().await.unwrap(), attached, "as migrated");
    let before = partitions().await.unwrap();
    assert_eq!(before.len(), 10, "{before:?}");
    assert!(before.contains(&"read_models_streams:FOR VALUES IN ('streams')".to_owned()));

    // As if `streams` were newer than the migrations: its documents in the default partition.
    sql(
        "ALTER TABLE read_models DETACH PARTITION read_models_streams;
         DROP TABLE read_models_streams;",
    )
    .await
    .unwrap();
    // Its checkpoint moved back to 0, so that the runner writes them all again.
    assert!(store.apply_projection("streams", 51, 0, &[]).await.unwrap());
    catch_up(&store, &Streams).await.unwrap();
    let in_default: i64 =
        sqlx::query_scalar("SELECT count(*) FROM read_models_default WHERE projection = 'streams'")
            .fetch_one(&pg.pool)
            .await
            .unwrap();
    assert_eq!(in_default, 50);

    for round in 0..2 {
        let done = rebuild(&store, None, &|_| {}).await.unwrap();
        assert!(done.iter().all(|(_, p)| *p == 51), "{done:?}");
        assert_eq!(store.docs("streams", None, 1_000).await.unwrap(), streams);
        assert_eq!(
            store.docs("applications", None, 1_000).await.unwrap(),
            applications,
            "round {round}"
        );
        assert_eq!(partitions().await.unwrap(), before, "round {round}");
        let left: Vec<String> = sqlx::query_scalar(
            "SELECT relname::text FROM pg_class
             WHERE relnamespace = current_schema()::regnamespace AND relname LIKE '%rebuilt%'
             UNION ALL SELECT key FROM read_models_default",
        )
        .fetch_all(&pg.pool)
        .await
        .unwrap();
        assert!(left.is_empty(), "round {round}: {left:?}");
        assert_eq!(indexes().await.unwrap(), attached, "round {round}");
    }
    // The runner goes on writing into the swapped-in tables.
    approve(&store, 4).await;
    catch_up(&store, &Streams).await.unwrap();
    let four = store.docs("streams", None, 1_000).await.unwrap();
    let four = four.iter().find(|(k, _)| k == "application-4").unwrap();
    assert_eq!(four.1.body["version"], 2);
}

/// A list's documents are read by seeking the list in the work-list index, on both backends,
/// not by reading the projection's documents up to it (docs/event-log.md, "Read models"). On
/// PostgreSQL with the plan made for any parameters, as a prepared statement comes to use.
#[tokio::test]
async fn a_list_is_read_by_seeking_it_in_the_index() {
    use hpki_backoffice::store::docs_statements as statements;
    let dir = tempfile::tempdir().unwrap();
    let file = hpki_backoffice::store::read_model_file::create(&dir.path().join("m.db")).unwrap();
    let plan = |statement: &str, params: &[&dyn rusqlite::ToSql]| {
        let mut explain = file
            .prepare(&format!("EXPLAIN QUERY PLAN {statement}"))
            .unwrap();
        let details = explain
            .query_map(params, |row| row.get::<_, String>(3))
            .unwrap();
        details.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    };
    let of_list = plan(statements::SQLITE_OF_LIST, &[&"outbox", &"mail:sent", &50]);
    assert!(of_list.contains("(projection=? AND list=?)"), "{of_list}");
    assert!(!of_list.contains("TEMP B-TREE"), "{of_list}");
    let all = plan(statements::SQLITE, &[&"outbox", &50]);
    assert!(
        all.contains("(projection=?)") && !all.contains("TEMP B-TREE"),
        "{all}"
    );

    let db = postgres().await;
    let store = open(&db, clock()).await;
    let hpki_backoffice::store::Db::Postgres(pg) = store.db() else {
        unreachable!("a PostgreSQL store")
    };
    let mut conn = pg.pool.acquire().await.unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PREPARE of_list AS {}",
        statements::POSTGRES_OF_LIST
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let plan: Vec<String> =
        sqlx::query_scalar("EXPLAIN EXECUTE of_list('outbox', 'mail:sent', 50)")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Cond: (list = $2)"), "{plan}");
    sqlx::raw_sql("DEALLOCATE of_list; RESET plan_cache_mode")
        .execute(&mut *conn)
        .await
        .unwrap();
}
