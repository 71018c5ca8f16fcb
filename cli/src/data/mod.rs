//! The dataset the tool's verbs share: users (with features), items (with
//! titles and attributes), and timestamped weighted interactions, in one
//! compact file written by `recsys import` (or generated), plus the
//! evaluation protocol's split ([`Split`]).

pub mod generate;
pub mod import;
mod split;

pub use split::{Protocol, Split, Stage};

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// First bytes of a dataset file.
const MAGIC: &[u8] = b"recsys-dataset 1\n";

/// One interaction: user and item numbers (indexes into [`Dataset::users`]
/// and [`Dataset::items`]), a weight (a rating, a count, 1 for a click) and
/// a time in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    pub user: u32,
    pub item: u32,
    pub weight: f32,
    pub ts: i64,
}

/// An item: its id (the catalog's item id), a title, and attributes as a
/// JSON object text (the catalog's ATTRS: WHERE, DIVERSITY, ranker features).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub title: String,
    pub attrs: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Where it came from ("MovieLens 100K at ...", "generated ...").
    pub source: String,
    /// External user ids.
    pub users: Vec<String>,
    /// Per user (same order as `users`): feature name -> value (the user
    /// hash's fields for ranking models).
    pub user_features: Vec<BTreeMap<String, String>>,
    pub items: Vec<Item>,
    pub interactions: Vec<Interaction>,
    /// Interactions weighing at least this are positives (MovieLens: 4).
    pub positive_min: f32,
}

impl Dataset {
    /// Writes the dataset file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(
            bincode::serde::encode_to_vec(self, bincode::config::standard())
                .context("encoding the dataset")?,
        );
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a dataset file written by [`Dataset::save`].
    pub fn load(path: &Path) -> Result<Dataset> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let Some(body) = bytes.strip_prefix(MAGIC) else {
            bail!(
                "{} is not a dataset file (write one with `recsys import`)",
                path.display()
            );
        };
        let (ds, _): (Dataset, usize) =
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .with_context(|| format!("{}: corrupt dataset file", path.display()))?;
        ds.check()
            .with_context(|| format!("{}: inconsistent dataset", path.display()))?;
        Ok(ds)
    }

    /// Checks that every interaction names a user and an item.
    pub fn check(&self) -> Result<()> {
        if self.user_features.len() != self.users.len() {
            bail!("user features do not match the users");
        }
        for (n, i) in self.interactions.iter().enumerate() {
            if i.user as usize >= self.users.len() || i.item as usize >= self.items.len() {
                bail!("interaction {n} names a user or item that does not exist");
            }
            if !i.weight.is_finite() {
                bail!("interaction {n} has a weight that is not a number");
            }
        }
        Ok(())
    }

    /// One line about the size.
    pub fn summary(&self) -> String {
        let positives = self
            .interactions
            .iter()
            .filter(|i| i.weight >= self.positive_min)
            .count();
        format!(
            "{} users, {} items, {} interactions ({} positives: weight >= {})",
            self.users.len(),
            self.items.len(),
            self.interactions.len(),
            positives,
            self.positive_min
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn tiny() -> Dataset {
        let i = |user, item, weight, ts| Interaction {
            user,
            item,
            weight,
            ts,
        };
        Dataset {
            source: "test".into(),
            users: vec!["a".into(), "b".into()],
            user_features: vec![BTreeMap::new(), BTreeMap::new()],
            items: (0..4)
                .map(|n| Item {
                    id: format!("i{n}"),
                    title: format!("Item {n}"),
                    attrs: "{}".into(),
                })
                .collect(),
            interactions: vec![
                i(0, 0, 5.0, 10),
                i(0, 1, 2.0, 30), // not a positive
                i(0, 2, 4.0, 20),
                i(0, 0, 4.0, 40), // again, later: now the latest
                i(1, 3, 5.0, 5),
            ],
            positive_min: 4.0,
        }
    }

    #[test]
    fn file_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.rsd");
        tiny().save(&p).unwrap();
        assert_eq!(Dataset::load(&p).unwrap(), tiny());
        std::fs::write(&p, b"nope").unwrap();
        assert!(format!("{:#}", Dataset::load(&p).unwrap_err()).contains("not a dataset file"));
        let mut bad = tiny();
        bad.interactions[0].item = 9;
        bad.save(&p).unwrap();
        assert!(format!("{:#}", Dataset::load(&p).unwrap_err()).contains("does not exist"));
    }
}
