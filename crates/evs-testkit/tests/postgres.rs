//! The PostgreSQL fixture: a cluster that answers, databases that are fresh
//! and apart, and nothing left behind once stopped.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use evs_testkit::postgres::Postgres;

fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

#[test]
fn fresh_databases_are_empty_and_apart() {
    let Some(pg) = Postgres::shared() else { return };
    assert!(std::ptr::eq(pg, Postgres::shared().unwrap()));
    let a = pg.fresh_database();
    let b = pg.fresh_database();
    assert_ne!(a, b);
    let name = |url: &str| url.rsplit('/').next().unwrap().to_owned();
    pg.psql(
        &name(&a),
        "create table t (n int); insert into t values (7)",
    );
    assert_eq!(pg.psql(&name(&a), "select n from t"), "7");
    assert_eq!(
        pg.psql(
            &name(&b),
            "select count(*) from pg_tables where schemaname = 'public'"
        ),
        "0"
    );
    assert_eq!(pg.psql(&name(&b), "show fsync"), "off");
}

#[test]
fn a_stopped_cluster_leaves_no_server_and_no_folder() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let port = pg.port();
    assert!(listening(port));
    let dir = pg.psql("postgres", "show data_directory");
    assert!(std::path::Path::new(&dir).exists(), "{dir}");
    pg.stop();
    assert!(!listening(port));
    assert!(!std::path::Path::new(&dir).exists(), "{dir}");
}
