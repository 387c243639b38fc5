use evs_core::{EventStore, ExpectedVersion, MemoryStore, NewEvent, StreamId};
use evs_projection::{Applier, MemoryRowStore};
use serde_json::json;

use super::*;

fn event(stream: &str, id: u64, name: &str, payload: Value, timestamp_ms: i64) -> RecordedEvent {
    RecordedEvent {
        stream_id: StreamId::new(stream).unwrap(),
        event_id: id,
        name: name.into(),
        payload,
        timestamp_ms,
        id: None,
        metadata: None,
        attributes: Default::default(),
    }
}

/// 2026-12-07T10:00:00Z
const DEC_7: i64 = 1_796_637_600_000;

#[test]
fn days_are_utc_calendar_days() {
    assert_eq!(utc_day(0).as_deref(), Some("1970-01-01"));
    assert_eq!(utc_day(-1).as_deref(), Some("1969-12-31"));
    assert_eq!(utc_day(DEC_7).as_deref(), Some("2026-12-07"));
    assert_eq!(utc_day(951_782_400_000).as_deref(), Some("2000-02-29"));
    assert_eq!(utc_day(253_402_300_799_999).as_deref(), Some("9999-12-31"));
    assert_eq!(utc_day(253_402_300_800_000), None);
    assert_eq!(utc_day(i64::MIN), None);
    // every day of a few centuries against the calendar as `time` has it
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..10_000 {
        let ms = rng.i64(-62_000_000_000_000..253_000_000_000_000);
        let t =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
        let want = format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
        assert_eq!(utc_day(ms), Some(want), "{ms}");
    }
}

#[test]
fn each_order_event_names_its_rows() {
    let placed = event(
        "order-1",
        1,
        "OrderPlaced",
        json!({"customerId": "c-1", "totalCents": 500}),
        DEC_7,
    );
    let paid = event(
        "order-1",
        2,
        "OrderPaid",
        json!({"customerId": "c-1", "amountCents": 500}),
        DEC_7,
    );
    let cancelled = event(
        "order-1",
        3,
        "OrderCancelled",
        json!({"customerId": "c-1"}),
        DEC_7,
    );
    let other = event("order-1", 4, "OrderShipped", json!({}), DEC_7);
    let both = vec![
        RowKey::new(CUSTOMERS, "c-1"),
        RowKey::new(DAILY, "2026-12-07"),
    ];
    assert_eq!(Orders.keys(&placed).unwrap(), both);
    assert_eq!(Orders.keys(&paid).unwrap(), both);
    assert_eq!(
        Orders.keys(&cancelled).unwrap(),
        vec![RowKey::new(CUSTOMERS, "c-1")]
    );
    assert_eq!(Orders.keys(&other).unwrap(), Vec::<RowKey>::new());
}

#[test]
fn rows_count_and_sum() {
    let mut customer = None;
    let mut day = None;
    let c = RowKey::new(CUSTOMERS, "c-1");
    let events = [
        event(
            "order-1",
            1,
            "OrderPlaced",
            json!({"customerId": "c-1", "totalCents": 500}),
            DEC_7,
        ),
        event(
            "order-1",
            2,
            "OrderPaid",
            json!({"customerId": "c-1", "amountCents": 450}),
            DEC_7,
        ),
        event(
            "order-2",
            1,
            "OrderPlaced",
            json!({"customerId": "c-1", "totalCents": 7}),
            DEC_7,
        ),
        event(
            "order-2",
            2,
            "OrderCancelled",
            json!({"customerId": "c-1"}),
            DEC_7,
        ),
        event(
            "order-2",
            3,
            "OrderShipped",
            json!({"customerId": 5}),
            DEC_7,
        ),
    ];
    for e in &events {
        for key in Orders.keys(e).unwrap() {
            let row = if key == c { &mut customer } else { &mut day };
            Orders.apply(e, &key, row).unwrap();
        }
    }
    let want_c = Customer {
        placed: 2,
        cancelled: 1,
        paid_cents: 450,
    };
    assert_eq!(customer, Some(OrdersRow::Customer(want_c)));
    assert_eq!(
        day,
        Some(OrdersRow::Day(Daily {
            orders: 2,
            revenue_cents: 450
        }))
    );
    // a row of the other kind is refused, not overwritten
    let paid = &events[1];
    let mut wrong = Some(OrdersRow::Day(Daily::default()));
    assert_eq!(
        Orders.apply(paid, &c, &mut wrong),
        Err(Refused::WrongRow(c.clone()))
    );
    // a sum that would overflow is refused
    let mut full = Some(OrdersRow::Customer(Customer {
        paid_cents: i64::MAX,
        ..Customer::default()
    }));
    assert!(matches!(
        Orders.apply(paid, &c, &mut full),
        Err(Refused::Overflow { .. })
    ));
}

#[test]
fn a_missing_or_ill_typed_field_is_refused() {
    let cases = [
        (
            "OrderPlaced",
            json!({"totalCents": 5}),
            "customerId",
            "is missing",
        ),
        (
            "OrderPlaced",
            json!({"customerId": "", "totalCents": 5}),
            "customerId",
            "is empty",
        ),
        (
            "OrderPlaced",
            json!({"customerId": 17, "totalCents": 5}),
            "customerId",
            "is not a string",
        ),
        (
            "OrderPlaced",
            json!({"customerId": "c"}),
            "totalCents",
            "is missing",
        ),
        (
            "OrderPlaced",
            json!({"customerId": "c", "totalCents": "5"}),
            "totalCents",
            "is not a whole number of cents",
        ),
        (
            "OrderPaid",
            json!({"customerId": "c", "amountCents": 1.5}),
            "amountCents",
            "is not a whole number of cents",
        ),
        (
            "OrderPaid",
            json!({"customerId": "c"}),
            "amountCents",
            "is missing",
        ),
        ("OrderCancelled", json!({}), "customerId", "is missing"),
        ("OrderCancelled", json!(null), "customerId", "is missing"),
    ];
    for (name, payload, field, problem) in cases {
        let e = event("order-9", 4, name, payload.clone(), DEC_7);
        let want = Refused::Field {
            name: name.into(),
            event_id: 4,
            field,
            problem,
        };
        assert_eq!(Orders.keys(&e), Err(want.clone()), "{name} {payload}");
        let mut row = None;
        assert_eq!(
            Orders.apply(&e, &RowKey::new(CUSTOMERS, "c"), &mut row),
            Err(want)
        );
    }
    let e = event(
        "order-9",
        1,
        "OrderPaid",
        json!({"customerId": "c", "amountCents": 1}),
        i64::MAX,
    );
    assert!(matches!(Orders.keys(&e), Err(Refused::Day { .. })));
}

#[test]
fn the_dump_line_is_stable() {
    let c = OrdersRow::Customer(Customer {
        placed: 3,
        cancelled: 1,
        paid_cents: 4200,
    });
    let d = OrdersRow::Day(Daily {
        orders: 9,
        revenue_cents: 123_400,
    });
    assert_eq!(
        dump_line(&RowKey::new(CUSTOMERS, "c-17"), &c),
        r#"{"model":"customers","key":"c-17","placed":3,"cancelled":1,"paidCents":4200}"#
    );
    assert_eq!(
        dump_line(&RowKey::new(DAILY, "2026-12-07"), &d),
        r#"{"model":"daily","key":"2026-12-07","orders":9,"revenueCents":123400}"#
    );
    // rows read back as the kind they were
    let back: OrdersRow =
        serde_json::from_str(r#"{"placed":3,"cancelled":1,"paidCents":4200}"#).unwrap();
    assert_eq!(back, c);
    let back: OrdersRow = serde_json::from_str(r#"{"orders":9,"revenueCents":123400}"#).unwrap();
    assert_eq!(back, d);
}

#[test]
fn read_models_are_named_by_scheme() {
    use std::path::PathBuf;
    assert_eq!("memory:".parse(), Ok(ReadModel::Memory));
    assert_eq!("dynamodb:t".parse(), Ok(ReadModel::DynamoDb("t".into())));
    assert_eq!(
        "sqlite:./x.db".parse(),
        Ok(ReadModel::Sqlite(PathBuf::from("./x.db")))
    );
    for url in ["postgres://u@h:5432/db", "postgresql://h/db"] {
        assert_eq!(url.parse(), Ok(ReadModel::Postgres(url.into())), "{url}");
        let prefixed = format!("postgres:{url}");
        assert_eq!(prefixed.parse(), Ok(ReadModel::Postgres(url.into())));
    }
    assert_eq!(
        "postgres:host=h dbname=d".parse(),
        Ok(ReadModel::Postgres("host=h dbname=d".into()))
    );
    for (text, want) in [
        ("dynamodb:", ReadModelError::Missing("dynamodb:", "TABLE")),
        ("t", ReadModelError::NoScheme("t".into())),
        ("s3:x", ReadModelError::UnknownScheme("s3".into())),
        ("sqlite:", ReadModelError::Missing("sqlite:", "FILE")),
        ("postgres:", ReadModelError::Missing("postgres:", "URL")),
        ("memory:x", ReadModelError::MemoryWithName("x".into())),
    ] {
        assert_eq!(text.parse::<ReadModel>(), Err(want), "{text}");
    }
}

#[test]
fn a_read_model_is_shown_without_its_password() {
    let model: ReadModel = "postgres://evs:s3cret@db.internal:5432/orders"
        .parse()
        .unwrap();
    let shown = model.to_string();
    assert_eq!(shown, "postgres:postgres://evs:***@db.internal:5432/orders");
    let plain: ReadModel = "postgres://evs@h/db".parse().unwrap();
    assert_eq!(plain.to_string(), "postgres:postgres://evs@h/db");
}

async fn table_with(events: &[(&str, &str, Value)]) -> MemoryStore {
    let table = MemoryStore::new();
    for (stream, name, payload) in events {
        table
            .append(
                &StreamId::new(*stream).unwrap(),
                ExpectedVersion::Any,
                &[NewEvent::new(*name, payload.clone())],
            )
            .await
            .unwrap();
    }
    table
}

fn rows(store: &MemoryRowStore<OrdersRow>) -> Vec<String> {
    store
        .snapshot()
        .iter()
        .map(|(k, r)| dump_line(k, r))
        .collect()
}

#[tokio::test]
async fn a_refused_event_parks_its_stream_and_the_others_go_on() {
    let table = table_with(&[
        (
            "order-1",
            "OrderPlaced",
            json!({"customerId": "c-1", "totalCents": 5}),
        ),
        (
            "order-2",
            "OrderPlaced",
            json!({"customerId": 7, "totalCents": 5}),
        ),
        (
            "order-2",
            "OrderPaid",
            json!({"customerId": "c-2", "amountCents": 5}),
        ),
        (
            "order-1",
            "OrderPaid",
            json!({"customerId": "c-1", "amountCents": 5}),
        ),
        ("order-3", "Note", json!("anything")),
    ])
    .await;
    let (records, _) = table.changes(0, usize::MAX);
    let store = MemoryRowStore::new();
    let mut applier = Applier::new(Orders, store.clone());
    let text = json!({ "Records": records }).to_string();
    assert_eq!(invocation(&text), Invocation::Stream);
    let report = handle_stream(&mut applier, &text, 0).await.unwrap();
    assert_eq!(report.response(), json!({ "batchItemFailures": [] }));
    assert_eq!(report.batch.parked().count(), 1);
    let parked = store.ledger();
    assert_eq!(
        parked["order-2"].parked.as_ref().map(|p| p.event_id),
        Some(1)
    );
    assert_eq!(
        parked["order-3"].version, 1,
        "an ignored event still advances its stream"
    );
    assert_eq!(parked["order-1"].version, 2);
    let day = utc_day(evs_core::now_ms()).unwrap();
    assert_eq!(
        rows(&store),
        vec![
            r#"{"model":"customers","key":"c-1","placed":1,"cancelled":0,"paidCents":5}"#
                .to_owned(),
            format!(r#"{{"model":"daily","key":"{day}","orders":1,"revenueCents":5}}"#),
        ]
    );
}
