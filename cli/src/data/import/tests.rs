use super::*;

fn write(dir: &Path, name: &str, text: &[u8]) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn err(r: Result<Dataset>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn movielens_100k_with_latin1_titles_and_errors_with_lines() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "u.genre", b"unknown|0\nAction|1\nDrama|2\n\n");
    write(
        d.path(),
        "u.item",
        b"1|Toy Story (1995)|01-Jan-1995||url|0|1|1\n2|Caf\xe9 (1997)|x||url|0|0|1\n",
    );
    write(
        d.path(),
        "u.user",
        b"7|24|M|technician|85711\n9|53|F|other|94043\n",
    );
    write(d.path(), "u.data", b"7\t1\t5\t100\n9\t2\t3\t50\n");
    let ds = movielens(d.path()).unwrap();
    assert_eq!(ds.users, vec!["7", "9"]);
    assert_eq!(ds.items[1].title, "Café (1997)");
    let attrs: Value = serde_json::from_str(&ds.items[0].attrs).unwrap();
    assert_eq!(attrs["year"], 1995);
    assert_eq!(attrs["genres"], serde_json::json!(["Action", "Drama"]));
    assert_eq!(ds.user_features[1]["occupation"], "other");
    assert_eq!(
        ds.interactions[1],
        Interaction {
            user: 1,
            item: 1,
            weight: 3.0,
            ts: 50
        }
    );

    write(d.path(), "u.data", b"7\t1\t5\t100\n9\t2\t3\n");
    let e = err(movielens(d.path()));
    assert!(
        e.contains("u.data line 2") && e.contains("got 3 fields"),
        "{e}"
    );
    write(d.path(), "u.data", b"7\t1\t5\t100\n\n9\t3\t3\t1\n");
    let e = err(movielens(d.path()));
    assert!(
        e.contains("u.data line 3") && e.contains("item 3 is not in u.item"),
        "{e}"
    );
    write(d.path(), "u.data", b"7\t1\tfive\t100\n");
    assert!(err(movielens(d.path())).contains("line 1: rating 'five'"));
    write(d.path(), "u.user", b"7|x|M|technician|85711\n");
    assert!(err(movielens(d.path())).contains("u.user line 1: age 'x'"));
}

#[test]
fn movielens_csv_with_quoted_titles() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "movies.csv",
        b"movieId,title,genres\n1,\"American President, The (1995)\",Comedy|Drama|Romance\n2,Heat (1995),Action\n",
    );
    write(
        d.path(),
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,2.5,964981247\n",
    );
    let ds = movielens(d.path()).unwrap();
    assert_eq!(ds.items[0].title, "American President, The (1995)");
    assert_eq!(ds.interactions.len(), 2);
    assert_eq!(ds.interactions[1].weight, 2.5);
    write(
        d.path(),
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,9,3,1\n",
    );
    let e = err(movielens(d.path()));
    assert!(
        e.contains("ratings.csv line 3") && e.contains("item '9'"),
        "{e}"
    );
    write(
        d.path(),
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,1,4.0\n",
    );
    let e = err(movielens(d.path()));
    assert!(e.contains("ratings.csv line 2"), "{e}");
    let e = err(movielens(&d.path().join("nope")));
    assert!(e.contains("neither u.data"), "{e}");
}

#[test]
fn generic_csv_with_items_and_column_flags() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "events.csv",
        b"who,what,when,qty\nu1,s1,10,2\nu2,s2,11,1\nu1,s2,12,1\n",
    );
    write(
        d.path(),
        "items.csv",
        b"sku,name,price,category\ns1,Red shoe,59.5,shoes\ns2,Sock,9,socks\n",
    );
    let mut g = GenericCsv {
        interactions: d.path().join("events.csv"),
        columns: Columns {
            user: "who".into(),
            item: "what".into(),
            weight: Some("qty".into()),
            time: Some("when".into()),
        },
        items: Some(d.path().join("items.csv")),
        item_id_col: "sku".into(),
        title_col: Some("name".into()),
        positive_min: 1.0,
    };
    let ds = generic(&g).unwrap();
    assert_eq!(ds.items[0].title, "Red shoe");
    let attrs: Value = serde_json::from_str(&ds.items[0].attrs).unwrap();
    assert_eq!(attrs["price"], 59.5);
    assert_eq!(attrs["category"], "shoes");
    assert_eq!(ds.interactions[0].weight, 2.0);
    g.columns.time = Some("time".into());
    let e = err(generic(&g));
    assert!(
        e.contains("no column 'time'") && e.contains("who, what, when, qty"),
        "{e}"
    );
    g.columns.time = None;
    write(
        d.path(),
        "events.csv",
        b"who,what,when,qty\nu1,s1,10,2\nu2,s3,11,1\n",
    );
    let e = err(generic(&g));
    assert!(
        e.contains("events.csv line 3") && e.contains("item 's3'"),
        "{e}"
    );
    g.items = None;
    let ds = generic(&g).unwrap();
    assert_eq!(ds.items.len(), 2);
    assert_eq!(ds.interactions[1].ts, 3, "line order is the time order");
}
