//! `recsys import`: reads MovieLens 100K (`u.data`, `u.item`, `u.user`),
//! MovieLens "latest"-style CSV (`ratings.csv`, `movies.csv`) and a generic
//! interactions CSV (columns named by flags, an optional items CSV of
//! attributes) into a [`Dataset`]. Every error names the file and line.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

use super::{Dataset, Interaction, Item};

/// Assigns dense numbers to external ids in first-seen order.
#[derive(Default)]
struct Ids {
    by_name: HashMap<String, u32>,
    names: Vec<String>,
}

impl Ids {
    fn number(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.by_name.get(name) {
            return n;
        }
        let n = self.names.len() as u32;
        self.by_name.insert(name.to_string(), n);
        self.names.push(name.to_string());
        n
    }
}

/// `file line N: message`.
fn at(file: &Path, line: usize, msg: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{} line {line}: {msg}", file.display())
}

fn read_latin1(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // MovieLens 100K is ISO-8859-1: every byte is the code point.
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
    })
}

/// The non-blank lines of a `sep`-separated file (MovieLens 100K), as
/// (line number, fields); a line with fewer than `min_fields` (or, with
/// `exact`, other than `min_fields`) fields is an error naming `layout`.
fn separated(
    path: &Path,
    sep: char,
    min_fields: usize,
    exact: bool,
    layout: &str,
) -> Result<Vec<(usize, Vec<String>)>> {
    let mut out = Vec::new();
    for (n, line) in read_latin1(path)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<String> = line.split(sep).map(str::to_string).collect();
        if f.len() < min_fields || (exact && f.len() != min_fields) {
            return Err(at(
                path,
                n + 1,
                format!("expected {layout}, got {} fields", f.len()),
            ));
        }
        out.push((n + 1, f));
    }
    Ok(out)
}

/// The year in a MovieLens title, "Toy Story (1995)" -> 1995.
fn title_year(title: &str) -> Option<i64> {
    let t = title.trim_end();
    let open = t.rfind('(')?;
    let inner = t[open + 1..].strip_suffix(')')?;
    let inner = inner.split('-').next()?;
    inner.parse().ok().filter(|y| (1800..=2100).contains(y))
}

fn movie_attrs(title: &str, genres: &[String]) -> String {
    let mut m = Map::new();
    m.insert("title".into(), title.into());
    if let Some(y) = title_year(title) {
        m.insert("year".into(), y.into());
    }
    if let Some(g) = genres.first() {
        m.insert("genre".into(), g.clone().into());
    }
    m.insert(
        "genres".into(),
        Value::Array(genres.iter().cloned().map(Value::from).collect()),
    );
    Value::Object(m).to_string()
}

/// Reads a MovieLens directory: 100K (`u.data`) or latest-style CSV
/// (`ratings.csv`).
pub fn movielens(dir: &Path) -> Result<Dataset> {
    if dir.join("u.data").exists() {
        movielens_100k(dir)
    } else if dir.join("ratings.csv").exists() {
        movielens_csv(dir)
    } else {
        bail!(
            "{} has neither u.data (MovieLens 100K) nor ratings.csv (MovieLens latest)",
            dir.display()
        )
    }
}

fn movielens_100k(dir: &Path) -> Result<Dataset> {
    let genre_file = dir.join("u.genre");
    let mut genre_names: BTreeMap<usize, String> = BTreeMap::new();
    if genre_file.exists() {
        for (line, f) in separated(&genre_file, '|', 2, true, "name|number")? {
            let idx = f[1]
                .trim()
                .parse()
                .map_err(|_| at(&genre_file, line, format!("bad genre number '{}'", f[1])))?;
            genre_names.insert(idx, f[0].clone());
        }
    }
    let item_file = dir.join("u.item");
    let mut items = Ids::default();
    let mut item_rows = Vec::new();
    let layout = "id|title|date|video date|url|genre flags...";
    for (line, f) in separated(&item_file, '|', 6, false, layout)? {
        let genres: Vec<String> = f[5..]
            .iter()
            .enumerate()
            .filter(|(_, flag)| flag.trim() == "1")
            .map(|(g, _)| {
                genre_names
                    .get(&g)
                    .cloned()
                    .unwrap_or_else(|| format!("genre{g}"))
            })
            .collect();
        if items.by_name.contains_key(&f[0]) {
            return Err(at(&item_file, line, format!("item {} repeated", f[0])));
        }
        items.number(&f[0]);
        item_rows.push(Item {
            id: f[0].clone(),
            title: f[1].clone(),
            attrs: movie_attrs(&f[1], &genres),
        });
    }
    let user_file = dir.join("u.user");
    let mut users = Ids::default();
    let mut features = Vec::new();
    if user_file.exists() {
        let layout = "id|age|gender|occupation|zip";
        for (line, f) in separated(&user_file, '|', 5, true, layout)? {
            if f[1].parse::<u32>().is_err() {
                return Err(at(
                    &user_file,
                    line,
                    format!("age '{}' is not a number", f[1]),
                ));
            }
            users.number(&f[0]);
            features.push(BTreeMap::from([
                ("age".to_string(), f[1].clone()),
                ("gender".to_string(), f[2].clone()),
                ("occupation".to_string(), f[3].clone()),
            ]));
        }
    }
    let data_file = dir.join("u.data");
    let mut interactions = Vec::new();
    let layout = "user<TAB>item<TAB>rating<TAB>timestamp";
    for (line, f) in separated(&data_file, '\t', 4, true, layout)? {
        let item = *items
            .by_name
            .get(&f[1])
            .ok_or_else(|| at(&data_file, line, format!("item {} is not in u.item", f[1])))?;
        let user = users.number(&f[0]);
        let weight: f32 = f[2]
            .parse()
            .ok()
            .filter(|w: &f32| w.is_finite())
            .ok_or_else(|| {
                at(
                    &data_file,
                    line,
                    format!("rating '{}' is not a number", f[2]),
                )
            })?;
        let ts: i64 = f[3].parse().map_err(|_| {
            at(
                &data_file,
                line,
                format!("timestamp '{}' is not an integer", f[3]),
            )
        })?;
        interactions.push(Interaction {
            user,
            item,
            weight,
            ts,
        });
    }
    features.resize(users.names.len(), BTreeMap::new());
    Ok(Dataset {
        source: format!("MovieLens 100K ({})", dir.display()),
        users: users.names,
        user_features: features,
        items: item_rows,
        interactions,
        positive_min: 4.0,
    })
}

/// A CSV reader over `path` with a header.
fn csv_reader(path: &Path) -> Result<csv::Reader<std::fs::File>> {
    csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .with_context(|| format!("reading {}", path.display()))
}

/// The position of column `name` in the header.
fn column(path: &Path, headers: &csv::StringRecord, name: &str) -> Result<usize> {
    headers
        .iter()
        .position(|h| h.trim() == name)
        .ok_or_else(|| {
            anyhow!(
                "{}: no column '{name}' (columns: {})",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
}

/// The line a CSV record started on (1-based, the header is line 1).
fn line_of(rec: &csv::StringRecord) -> usize {
    rec.position().map_or(0, |p| p.line() as usize)
}

fn csv_record(path: &Path, r: csv::Result<csv::StringRecord>) -> Result<csv::StringRecord> {
    r.map_err(|e| {
        let line = e.position().map_or(0, |p| p.line() as usize);
        at(path, line, e)
    })
}

fn movielens_csv(dir: &Path) -> Result<Dataset> {
    let movies_file = dir.join("movies.csv");
    let mut items = Ids::default();
    let mut item_rows = Vec::new();
    if movies_file.exists() {
        let mut rd = csv_reader(&movies_file)?;
        let headers = rd.headers()?.clone();
        let (id_col, title_col, genres_col) = (
            column(&movies_file, &headers, "movieId")?,
            column(&movies_file, &headers, "title")?,
            column(&movies_file, &headers, "genres")?,
        );
        for r in rd.records() {
            let rec = csv_record(&movies_file, r)?;
            let id = &rec[id_col];
            if items.by_name.contains_key(id) {
                return Err(at(
                    &movies_file,
                    line_of(&rec),
                    format!("movie {id} repeated"),
                ));
            }
            let genres: Vec<String> = rec[genres_col]
                .split('|')
                .filter(|g| !g.is_empty() && *g != "(no genres listed)")
                .map(str::to_string)
                .collect();
            items.number(id);
            item_rows.push(Item {
                id: id.to_string(),
                title: rec[title_col].to_string(),
                attrs: movie_attrs(&rec[title_col], &genres),
            });
        }
    }
    let known_items = !item_rows.is_empty();
    let cols = Columns {
        user: "userId".into(),
        item: "movieId".into(),
        weight: Some("rating".into()),
        time: Some("timestamp".into()),
    };
    let mut users = Ids::default();
    let interactions = read_interactions(
        &dir.join("ratings.csv"),
        &cols,
        &mut users,
        &mut items,
        known_items,
    )?;
    for id in &items.names[item_rows.len()..] {
        item_rows.push(Item {
            id: id.clone(),
            title: id.clone(),
            attrs: "{}".into(),
        });
    }
    Ok(Dataset {
        source: format!("MovieLens CSV ({})", dir.display()),
        user_features: vec![BTreeMap::new(); users.names.len()],
        users: users.names,
        items: item_rows,
        interactions,
        positive_min: 4.0,
    })
}

/// Which columns of an interactions CSV hold what.
#[derive(Debug, Clone)]
pub struct Columns {
    pub user: String,
    pub item: String,
    /// Missing: every interaction weighs 1.
    pub weight: Option<String>,
    /// Missing: the line order is the time order.
    pub time: Option<String>,
}

/// Reads interactions; with `known_items`, an item not in `items` is an
/// error, else it is added.
fn read_interactions(
    path: &Path,
    cols: &Columns,
    users: &mut Ids,
    items: &mut Ids,
    known_items: bool,
) -> Result<Vec<Interaction>> {
    let mut rd = csv_reader(path)?;
    let headers = rd.headers()?.clone();
    let user_col = column(path, &headers, &cols.user)?;
    let item_col = column(path, &headers, &cols.item)?;
    let weight_col = cols
        .weight
        .as_deref()
        .map(|c| column(path, &headers, c))
        .transpose()?;
    let time_col = cols
        .time
        .as_deref()
        .map(|c| column(path, &headers, c))
        .transpose()?;
    let mut out = Vec::new();
    for r in rd.records() {
        let rec = csv_record(path, r)?;
        let line = line_of(&rec);
        let (u, i) = (rec[user_col].trim(), rec[item_col].trim());
        if u.is_empty() || i.is_empty() {
            return Err(at(path, line, "empty user or item id"));
        }
        let item = if known_items {
            *items
                .by_name
                .get(i)
                .ok_or_else(|| at(path, line, format!("item '{i}' is not in the items file")))?
        } else {
            items.number(i)
        };
        let weight = match weight_col {
            Some(c) => rec[c]
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|w| w.is_finite())
                .ok_or_else(|| at(path, line, format!("weight '{}' is not a number", &rec[c])))?,
            None => 1.0,
        };
        let ts = match time_col {
            Some(c) => {
                let t = rec[c].trim();
                t.parse::<i64>()
                    .ok()
                    .or_else(|| {
                        t.parse::<f64>()
                            .ok()
                            .filter(|f| f.is_finite())
                            .map(|f| f as i64)
                    })
                    .ok_or_else(|| {
                        at(path, line, format!("time '{t}' is not a number of seconds"))
                    })?
            }
            None => line as i64,
        };
        out.push(Interaction {
            user: users.number(u),
            item,
            weight,
            ts,
        });
    }
    if out.is_empty() {
        bail!("{}: no interactions", path.display());
    }
    Ok(out)
}

/// A generic interactions CSV and, optionally, an items CSV whose other
/// columns become attributes (numbers stay numbers).
pub struct GenericCsv {
    pub interactions: PathBuf,
    pub columns: Columns,
    pub items: Option<PathBuf>,
    pub item_id_col: String,
    pub title_col: Option<String>,
    pub positive_min: f32,
}

pub fn generic(g: &GenericCsv) -> Result<Dataset> {
    let mut items = Ids::default();
    let mut item_rows = Vec::new();
    if let Some(path) = &g.items {
        let mut rd = csv_reader(path)?;
        let headers = rd.headers()?.clone();
        let id_col = column(path, &headers, &g.item_id_col)?;
        let title_col = g
            .title_col
            .as_deref()
            .map(|c| column(path, &headers, c))
            .transpose()?;
        for r in rd.records() {
            let rec = csv_record(path, r)?;
            let id = rec[id_col].trim();
            if id.is_empty() {
                return Err(at(path, line_of(&rec), "empty item id"));
            }
            if items.by_name.contains_key(id) {
                return Err(at(path, line_of(&rec), format!("item '{id}' repeated")));
            }
            let mut attrs = Map::new();
            for (c, (name, value)) in headers.iter().zip(rec.iter()).enumerate() {
                if c == id_col || value.is_empty() {
                    continue;
                }
                let v = match value.trim().parse::<f64>() {
                    Ok(x) if x.is_finite() => Value::from(x),
                    _ => Value::from(value),
                };
                attrs.insert(name.trim().to_string(), v);
            }
            items.number(id);
            item_rows.push(Item {
                id: id.to_string(),
                title: title_col.map_or(id, |c| &rec[c]).to_string(),
                attrs: Value::Object(attrs).to_string(),
            });
        }
    }
    let known = g.items.is_some();
    let mut users = Ids::default();
    let interactions =
        read_interactions(&g.interactions, &g.columns, &mut users, &mut items, known)?;
    for id in &items.names[item_rows.len()..] {
        item_rows.push(Item {
            id: id.clone(),
            title: id.clone(),
            attrs: "{}".into(),
        });
    }
    Ok(Dataset {
        source: format!("CSV ({})", g.interactions.display()),
        user_features: vec![BTreeMap::new(); users.names.len()],
        users: users.names,
        items: item_rows,
        interactions,
        positive_min: g.positive_min,
    })
}

#[cfg(test)]
mod tests;
