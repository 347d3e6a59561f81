//! The document store conformance cases. Each takes a fresh, empty store and panics on a
//! violation. A store's test file calls [`doc_conformance_suite!`](crate::doc_conformance_suite)
//! with an async factory that returns a fresh `Arc<dyn DocStore>`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use ledger::docs::{
    newest_first_id, Doc, DocError, DocKind, DocStore, MAX_DOCS_PER_LIST, MAX_DOC_BYTES,
    MAX_DOC_ID_LEN,
};
use ledger::{AccountId, LedgerError, StoreError};

use crate::cases::{account_id, at};

const ALL_KINDS: [DocKind; 4] =
    [DocKind::Profile, DocKind::Payment, DocKind::Idempotency, DocKind::Audit];

async fn create(store: &dyn DocStore, account: &AccountId, kind: DocKind, id: &str, body: &str) {
    let version = store.put_doc(account, kind, id, body, None).await.expect("create document");
    assert_eq!(version, 1, "a new document starts at version 1");
}

async fn get(store: &dyn DocStore, account: &AccountId, kind: DocKind, id: &str) -> Option<Doc> {
    store.get_doc(account, kind, id).await.expect("get document")
}

/// Every document of every kind of `account`, read through the list API one whole page at a
/// time: what "nothing changed" is checked against.
async fn everything(store: &dyn DocStore, account: &AccountId) -> Vec<(DocKind, Doc)> {
    let mut out = Vec::new();
    for kind in ALL_KINDS {
        for doc in list_all(store, account, kind, MAX_DOCS_PER_LIST).await {
            out.push((kind, doc));
        }
    }
    out
}

/// Page through one kind with `limit`, checking each page's bounds on the way.
async fn list_all(
    store: &dyn DocStore,
    account: &AccountId,
    kind: DocKind,
    limit: u32,
) -> Vec<Doc> {
    let mut out: Vec<Doc> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let page = store.list_docs(account, kind, after.as_deref(), limit).await.expect("list");
        assert!(page.len() <= limit as usize, "a page holds at most `limit` documents");
        if let (Some(after), Some(first)) = (&after, page.first()) {
            assert!(first.id.as_str() > after.as_str(), "a page starts after `after`");
        }
        let full = page.len() == limit as usize;
        out.extend(page);
        match (full, out.last()) {
            (true, Some(last)) => after = Some(last.id.clone()),
            _ => return out,
        }
    }
    panic!("listing {kind:?} never ended");
}

fn ids(docs: &[Doc]) -> Vec<&str> {
    docs.iter().map(|doc| doc.id.as_str()).collect()
}

fn counter_body(count: u64) -> String {
    serde_json::json!({ "counter": count, "note": "read-modify-write" }).to_string()
}

fn counter_of(doc: &Doc) -> u64 {
    let body: serde_json::Value = serde_json::from_str(&doc.body).expect("bodies stay JSON");
    body["counter"].as_u64().expect("the counter is a number")
}

pub async fn a_created_document_reads_back_at_version_one(store: Arc<dyn DocStore>) {
    let account = account_id("docs-create");
    assert_eq!(get(&*store, &account, DocKind::Profile, "profile").await, None);

    // Bodies come back byte for byte, whatever they hold.
    let body = r#"{"name":"Zoë's Café ☎","contacts":[{"email":"a@example.com"}],"n":1.50}"#;
    create(&*store, &account, DocKind::Profile, "profile", body).await;
    let doc = get(&*store, &account, DocKind::Profile, "profile").await.expect("created");
    assert_eq!(doc, Doc { id: "profile".into(), version: 1, body: body.into() });
    assert_eq!(everything(&*store, &account).await, vec![(DocKind::Profile, doc)]);
}

pub async fn creating_an_existing_document_conflicts_and_keeps_the_first(store: Arc<dyn DocStore>) {
    let account = account_id("docs-twice");
    create(&*store, &account, DocKind::Idempotency, "key-1", r#"{"first":true}"#).await;
    let again = store.put_doc(&account, DocKind::Idempotency, "key-1", "{}", None).await;
    assert!(matches!(again, Err(DocError::Conflict)), "got {again:?}");
    let doc = get(&*store, &account, DocKind::Idempotency, "key-1").await.expect("kept");
    assert_eq!((doc.version, doc.body.as_str()), (1, r#"{"first":true}"#));
}

pub async fn replacing_at_the_stored_version_bumps_it_and_a_stale_version_conflicts(
    store: Arc<dyn DocStore>,
) {
    let account = account_id("docs-replace");
    let kind = DocKind::Profile;
    create(&*store, &account, kind, "profile", r#"{"v":1}"#).await;
    let second = store.put_doc(&account, kind, "profile", r#"{"v":2}"#, Some(1)).await;
    assert_eq!(second.expect("replace at the stored version"), 2);
    let third = store.put_doc(&account, kind, "profile", r#"{"v":3}"#, Some(2)).await;
    assert_eq!(third.expect("replace at the stored version"), 3);
    let current = get(&*store, &account, kind, "profile").await.expect("exists");
    assert_eq!((current.version, current.body.as_str()), (3, r#"{"v":3}"#));

    let before = everything(&*store, &account).await;
    for stale in [Some(0), Some(1), Some(2), Some(4), Some(u64::MAX), None] {
        let result = store.put_doc(&account, kind, "profile", r#"{"v":"stale"}"#, stale).await;
        assert!(matches!(result, Err(DocError::Conflict)), "expected {stale:?}: {result:?}");
    }
    // Replacing a document that does not exist is a conflict too, and creates nothing.
    let missing = store.put_doc(&account, kind, "nobody", "{}", Some(1)).await;
    assert!(matches!(missing, Err(DocError::Conflict)), "got {missing:?}");
    assert_eq!(everything(&*store, &account).await, before, "nothing changed");
}

pub async fn deleting_at_a_stale_version_conflicts_and_keeps_the_document(
    store: Arc<dyn DocStore>,
) {
    let account = account_id("docs-stale-delete");
    let kind = DocKind::Payment;
    create(&*store, &account, kind, "pay-1", r#"{"status":"pending"}"#).await;
    store.put_doc(&account, kind, "pay-1", r#"{"status":"paid"}"#, Some(1)).await.unwrap();
    let before = everything(&*store, &account).await;
    for stale in [0, 1, 3, u64::MAX] {
        let result = store.delete_doc(&account, kind, "pay-1", stale).await;
        assert!(matches!(result, Err(DocError::Conflict)), "expected {stale}: {result:?}");
    }
    let missing = store.delete_doc(&account, kind, "pay-2", 1).await;
    assert!(matches!(missing, Err(DocError::Conflict)), "deleting nothing is a conflict");
    assert_eq!(everything(&*store, &account).await, before, "nothing changed");
}

pub async fn a_deleted_document_reads_as_absent_and_can_be_created_again(store: Arc<dyn DocStore>) {
    let account = account_id("docs-delete");
    let kind = DocKind::Idempotency;
    create(&*store, &account, kind, "key-1", r#"{"response":200}"#).await;
    create(&*store, &account, kind, "key-2", r#"{"response":201}"#).await;
    store.put_doc(&account, kind, "key-1", r#"{"response":202}"#, Some(1)).await.unwrap();
    store.delete_doc(&account, kind, "key-1", 2).await.expect("delete at the stored version");

    assert_eq!(get(&*store, &account, kind, "key-1").await, None);
    let listed = list_all(&*store, &account, kind, 10).await;
    assert_eq!(ids(&listed), vec!["key-2"], "a deleted document is not listed");
    let again = store.delete_doc(&account, kind, "key-1", 2).await;
    assert!(matches!(again, Err(DocError::Conflict)), "a second delete finds nothing");

    create(&*store, &account, kind, "key-1", r#"{"response":203}"#).await;
    let recreated = get(&*store, &account, kind, "key-1").await.expect("recreated");
    assert_eq!((recreated.version, recreated.body.as_str()), (1, r#"{"response":203}"#));
}

/// 57 ids (some holding the stores' key separators), created in random order, listed with
/// several page sizes and starting points: ascending, each id exactly once.
pub async fn listing_pages_ascending_returns_every_id_exactly_once(store: Arc<dyn DocStore>) {
    let account = account_id("docs-list");
    let kind = DocKind::Payment;
    let mut expected: Vec<String> = (0..50).map(|i| format!("pay-{i:03}")).collect();
    expected.extend(["A", "Z#S#1", "a#D#payment", "pay-", "pay-000#x", "~", "!"].map(String::from));
    let mut shuffled = expected.clone();
    shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(3));
    for id in &shuffled {
        create(&*store, &account, kind, id, &format!(r#"{{"id":"{id}"}}"#)).await;
    }
    expected.sort();
    let distinct: BTreeSet<&String> = expected.iter().collect();
    assert_eq!(distinct.len(), expected.len());

    for limit in [1, 2, 7, 56, 57, 58, MAX_DOCS_PER_LIST] {
        let listed = list_all(&*store, &account, kind, limit).await;
        assert_eq!(ids(&listed), expected, "limit {limit}");
        for doc in &listed {
            assert_eq!(doc.version, 1);
            assert_eq!(doc.body, format!(r#"{{"id":"{}"}}"#, doc.id), "bodies follow their ids");
        }
    }
    // `after` need not be a stored id: the page starts at the next id above it.
    for (after, first) in [("pay-0095", "pay-010"), ("pay-049", "~"), ("!", "A"), ("0", "A")] {
        let page = store.list_docs(&account, kind, Some(after), 3).await.unwrap();
        assert_eq!(page.first().map(|doc| doc.id.as_str()), Some(first), "after {after}");
    }
    let past_the_end = store.list_docs(&account, kind, Some("~"), 5).await.unwrap();
    assert!(past_the_end.is_empty(), "nothing sorts after the last id");
    let empty = store.list_docs(&account, DocKind::Audit, None, 5).await.unwrap();
    assert!(empty.is_empty(), "a kind without documents lists nothing");
}

/// 24 documents of the largest size (1.5 MB, more than one DynamoDB query reads) come back in
/// one page: a short page would read as the end of the list.
pub async fn a_page_of_the_largest_documents_comes_back_whole(store: Arc<dyn DocStore>) {
    const COUNT: u32 = 24;
    let account = account_id("docs-heavy");
    let kind = DocKind::Payment;
    let body = |i: u32| format!(r#"{{"i":{i:02},"pad":"{}"}}"#, "x".repeat(MAX_DOC_BYTES - 17));
    assert_eq!(body(0).len(), MAX_DOC_BYTES);
    for i in 0..COUNT {
        create(&*store, &account, kind, &format!("heavy-{i:02}"), &body(i)).await;
    }
    let page = store.list_docs(&account, kind, None, COUNT).await.unwrap();
    assert_eq!(page.len(), COUNT as usize, "the page is full");
    for (i, doc) in (0..COUNT).zip(&page) {
        assert_eq!(
            (doc.id.as_str(), doc.body.as_str()),
            (format!("heavy-{i:02}").as_str(), body(i).as_str())
        );
    }
    let rest = store.list_docs(&account, kind, Some("heavy-05"), COUNT).await.unwrap();
    assert_eq!(rest.len(), COUNT as usize - 6);
    assert_eq!(rest.first().map(|doc| doc.id.as_str()), Some("heavy-06"));
}

pub async fn newest_first_ids_list_newest_first(store: Arc<dyn DocStore>) {
    let account = account_id("docs-newest");
    let kind = DocKind::Audit;
    // Times spread over years, a few to the same microsecond (the tiebreak orders those).
    let mut stamps: Vec<(i64, &str)> = vec![
        (0, "a"),
        (1, "a"),
        (59, "b"),
        (3_600, "a"),
        (86_400, "a"),
        (86_400, "b"),
        (86_400 * 400, "z"),
        (86_400 * 3_650, "m"),
        (-86_400 * 365 * 30, "old"),
    ];
    let mut shuffled = stamps.clone();
    shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(5));
    for (seconds, tiebreak) in &shuffled {
        let id = newest_first_id(at(*seconds), tiebreak);
        create(&*store, &account, kind, &id, &format!(r#"{{"at":{seconds}}}"#)).await;
    }
    // Newest first; at the same time, the tiebreak ascending.
    stamps.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let expected: Vec<String> =
        stamps.iter().map(|(seconds, tiebreak)| newest_first_id(at(*seconds), tiebreak)).collect();
    for limit in [1, 4, MAX_DOCS_PER_LIST] {
        let listed = list_all(&*store, &account, kind, limit).await;
        assert_eq!(ids(&listed), expected, "limit {limit}");
        let times: Vec<String> = listed.iter().map(|doc| doc.body.clone()).collect();
        let expected_times: Vec<String> =
            stamps.iter().map(|(seconds, _)| format!(r#"{{"at":{seconds}}}"#)).collect();
        assert_eq!(times, expected_times);
    }
}

pub async fn documents_are_isolated_by_kind_and_account(store: Arc<dyn DocStore>) {
    let alice = account_id("alice");
    let bob = account_id("bob");
    // A prefix of another account id must not leak either (key prefixes, range scans).
    let alice2 = account_id("alice2");
    for account in [&alice, &bob, &alice2] {
        for kind in ALL_KINDS {
            let body = format!(r#"{{"owner":"{account}","kind":"{}"}}"#, kind.as_str());
            create(&*store, account, kind, "shared-id", &body).await;
            create(&*store, account, kind, &format!("only-{account}"), &body).await;
        }
    }
    store
        .put_doc(&alice, DocKind::Payment, "shared-id", r#"{"changed":true}"#, Some(1))
        .await
        .unwrap();
    store.delete_doc(&bob, DocKind::Audit, "shared-id", 1).await.unwrap();

    for account in [&alice, &bob, &alice2] {
        for kind in ALL_KINDS {
            let listed = list_all(&*store, account, kind, MAX_DOCS_PER_LIST).await;
            let only = format!("only-{account}");
            let shared_deleted = *account == bob && kind == DocKind::Audit;
            let expected: Vec<&str> =
                if shared_deleted { vec![only.as_str()] } else { vec![only.as_str(), "shared-id"] };
            assert_eq!(ids(&listed), expected, "{account} {kind:?}");
            let body = format!(r#"{{"owner":"{account}","kind":"{}"}}"#, kind.as_str());
            for doc in &listed {
                if *account == alice && kind == DocKind::Payment && doc.id == "shared-id" {
                    assert_eq!((doc.version, doc.body.as_str()), (2, r#"{"changed":true}"#));
                } else {
                    assert_eq!((doc.version, doc.body.as_str()), (1, body.as_str()));
                }
            }
        }
    }
    assert_eq!(get(&*store, &account_id("carol"), DocKind::Profile, "shared-id").await, None);
}

/// 8 tasks each add 1 to a counter in one document 25 times, by read-modify-write with the
/// version as the condition, retrying on conflict: no increment is lost or applied twice.
pub async fn concurrent_replacers_lose_no_update(store: Arc<dyn DocStore>) {
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 25;
    /// Attempts one task may spend in all, conflicts included: generous, but a bound.
    const MAX_ATTEMPTS_PER_TASK: u32 = 20_000;
    let account = account_id("docs-race");
    let kind = DocKind::Profile;
    create(&*store, &account, kind, "profile", &counter_body(0)).await;

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let account = account.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(task);
            let mut done = 0;
            let mut conflicts = 0;
            for _ in 0..MAX_ATTEMPTS_PER_TASK {
                if done == INCREMENTS {
                    return conflicts;
                }
                let current = get(&*store, &account, kind, "profile").await.expect("exists");
                let next = counter_body(counter_of(&current) + 1);
                // Let the other tasks run between the read and the write, as real work would.
                tokio::task::yield_now().await;
                match store.put_doc(&account, kind, "profile", &next, Some(current.version)).await {
                    Ok(version) => {
                        assert_eq!(version, current.version + 1);
                        done += 1;
                    }
                    Err(DocError::Conflict) => {
                        conflicts += 1;
                        let pause = Duration::from_micros(rng.random_range(0..2_000));
                        tokio::time::sleep(pause).await;
                    }
                    // Only a conflict is known to have changed nothing; anything else might
                    // have landed, so retrying it could count twice.
                    Err(error) => panic!("replace failed: {error}"),
                }
            }
            panic!("task {task} made {done} of {INCREMENTS} increments within its attempts");
        }));
    }
    for task in tasks {
        task.await.expect("task panicked");
    }
    let doc = get(&*store, &account, kind, "profile").await.expect("exists");
    assert_eq!(counter_of(&doc), TASKS * INCREMENTS, "every increment landed exactly once");
    assert_eq!(doc.version, 1 + TASKS * INCREMENTS, "one version per replacement");
}

pub async fn too_large_bodies_are_rejected_and_change_nothing(store: Arc<dyn DocStore>) {
    let account = account_id("docs-large");
    let kind = DocKind::Payment;
    // Exactly the limit is fine; the limit counts bytes, not characters.
    let at_limit = format!(r#"{{"pad":"{}"}}"#, "x".repeat(MAX_DOC_BYTES - 10));
    assert_eq!(at_limit.len(), MAX_DOC_BYTES);
    create(&*store, &account, kind, "big", &at_limit).await;
    assert_eq!(get(&*store, &account, kind, "big").await.expect("stored").body, at_limit);

    let one_over = format!(r#"{{"pad":"{}"}}"#, "x".repeat(MAX_DOC_BYTES - 9));
    // 'é' is two bytes: fewer characters than the limit, more bytes.
    let multibyte = format!(r#"{{"pad":"{}"}}"#, "é".repeat(MAX_DOC_BYTES / 2));
    assert!(multibyte.chars().count() < MAX_DOC_BYTES);
    let before = everything(&*store, &account).await;
    for body in [&one_over, &multibyte] {
        for (id, expected) in [("new", None), ("big", Some(1)), ("big", None)] {
            let result = store.put_doc(&account, kind, id, body, expected).await;
            match result {
                Err(DocError::TooLarge(size)) => assert_eq!(size, body.len()),
                other => panic!("a {}-byte body: {other:?}", body.len()),
            }
        }
    }
    assert_eq!(everything(&*store, &account).await, before, "nothing changed");
}

pub async fn bad_list_limits_are_rejected(store: Arc<dyn DocStore>) {
    let account = account_id("docs-limits");
    create(&*store, &account, DocKind::Audit, "entry-1", "{}").await;
    for limit in [0, MAX_DOCS_PER_LIST + 1, u32::MAX] {
        for after in [None, Some("entry-0")] {
            let result = store.list_docs(&account, DocKind::Audit, after, limit).await;
            assert!(
                matches!(
                    result,
                    Err(StoreError::Rejected(LedgerError::BadPageSize { max: MAX_DOCS_PER_LIST }))
                ),
                "limit {limit}: {result:?}"
            );
        }
    }
    let whole = store.list_docs(&account, DocKind::Audit, None, MAX_DOCS_PER_LIST).await.unwrap();
    assert_eq!(ids(&whole), vec!["entry-1"]);
    let one = store.list_docs(&account, DocKind::Audit, None, 1).await.unwrap();
    assert_eq!(ids(&one), vec!["entry-1"]);
}

fn rejected<T>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Rejected(LedgerError::BadDocumentId)))
}

fn rejected_doc<T>(result: &Result<T, DocError>) -> bool {
    matches!(result, Err(DocError::Store(StoreError::Rejected(LedgerError::BadDocumentId))))
}

pub async fn bad_document_ids_are_rejected_and_change_nothing(store: Arc<dyn DocStore>) {
    let account = account_id("docs-ids");
    let kind = DocKind::Idempotency;
    // The longest id and every printable ASCII character are fine.
    let longest = "k".repeat(MAX_DOC_ID_LEN);
    let printable: String = (b'!'..=b'~').map(char::from).collect();
    for id in [longest.as_str(), printable.as_str(), "#", "a#D#audit"] {
        create(&*store, &account, kind, id, "{}").await;
        assert_eq!(get(&*store, &account, kind, id).await.expect("stored").id, id);
    }
    let before = everything(&*store, &account).await;

    let too_long = "k".repeat(MAX_DOC_ID_LEN + 1);
    let bad_ids = [
        "",
        " ",
        "has space",
        "tab\t",
        "new\nline",
        "nul\0",
        "del\x7f",
        "café",
        "☎",
        too_long.as_str(),
    ];
    for id in bad_ids {
        assert!(rejected(&store.get_doc(&account, kind, id).await), "get {id:?}");
        assert!(rejected_doc(&store.put_doc(&account, kind, id, "{}", None).await), "{id:?}");
        assert!(rejected_doc(&store.put_doc(&account, kind, id, "{}", Some(1)).await), "{id:?}");
        assert!(rejected_doc(&store.delete_doc(&account, kind, id, 1).await), "delete {id:?}");
        assert!(rejected(&store.list_docs(&account, kind, Some(id), 10).await), "after {id:?}");
    }
    // The id is checked before the body: a bad id with a too-large body is still a bad id.
    let huge = "x".repeat(MAX_DOC_BYTES + 1);
    assert!(rejected_doc(&store.put_doc(&account, kind, "bad id", &huge, None).await));
    assert_eq!(everything(&*store, &account).await, before, "nothing changed");
}

/// Generate one `#[tokio::test]` per document conformance case for a store.
///
/// `$factory` is a path to `async fn() -> Arc<dyn DocStore>` returning a fresh, empty store.
#[macro_export]
macro_rules! doc_conformance_suite {
    ($factory:path) => {
        $crate::doc_conformance_suite!(@case $factory,
            a_created_document_reads_back_at_version_one,
            creating_an_existing_document_conflicts_and_keeps_the_first,
            replacing_at_the_stored_version_bumps_it_and_a_stale_version_conflicts,
            deleting_at_a_stale_version_conflicts_and_keeps_the_document,
            a_deleted_document_reads_as_absent_and_can_be_created_again,
            listing_pages_ascending_returns_every_id_exactly_once,
            newest_first_ids_list_newest_first,
            a_page_of_the_largest_documents_comes_back_whole,
            documents_are_isolated_by_kind_and_account,
            concurrent_replacers_lose_no_update,
            too_large_bodies_are_rejected_and_change_nothing,
            bad_list_limits_are_rejected,
            bad_document_ids_are_rejected_and_change_nothing,
        );
    };
    (@case $factory:path, $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $crate::docs::$name($factory().await).await;
            }
        )+
    };
}
