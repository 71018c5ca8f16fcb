//! A realistic generated shop, for the demo and for tests on a fresh machine
//! (which has no MovieLens): categories with power-law popularity, brands,
//! prices and titles; users with features and two interests, who shop in
//! sessions of one interest at a time and rate what they buy. The structure
//! is planted, so a good recommender must beat popularity by a clear margin.

use std::collections::BTreeMap;

use recsys::rng::SplitMix;
use serde_json::json;

use super::{Dataset, Interaction, Item};

/// Categories: (name, nouns, typical price).
const CATEGORIES: [(&str, [&str; 4], f64); 12] = [
    (
        "running",
        ["Running Shoe", "Trail Shoe", "Race Vest", "Tempo Short"],
        90.0,
    ),
    (
        "hiking",
        ["Hiking Boot", "Trekking Pole", "Day Pack", "Rain Shell"],
        120.0,
    ),
    (
        "kitchen",
        ["Chef Knife", "Dutch Oven", "Cutting Board", "Skillet"],
        60.0,
    ),
    (
        "coffee",
        [
            "Espresso Blend",
            "Pour-Over Kettle",
            "Burr Grinder",
            "Milk Jug",
        ],
        35.0,
    ),
    (
        "scifi",
        [
            "Starship Novel",
            "Space Opera",
            "Robot Stories",
            "Time Saga",
        ],
        15.0,
    ),
    (
        "crime",
        [
            "Detective Novel",
            "Noir Thriller",
            "Heist Story",
            "Cold Case",
        ],
        14.0,
    ),
    (
        "boardgames",
        ["Strategy Game", "Party Game", "Card Game", "Co-op Game"],
        40.0,
    ),
    (
        "audio",
        ["Headphones", "Earbuds", "Speaker", "Turntable"],
        150.0,
    ),
    (
        "photo",
        ["Camera Body", "Prime Lens", "Tripod", "Camera Bag"],
        400.0,
    ),
    ("yoga", ["Yoga Mat", "Yoga Block", "Strap", "Bolster"], 30.0),
    (
        "garden",
        ["Pruner", "Seed Kit", "Planter", "Watering Can"],
        25.0,
    ),
    (
        "baby",
        ["Stroller", "Baby Carrier", "Play Mat", "Bottle Set"],
        70.0,
    ),
];
const ADJECTIVES: [&str; 16] = [
    "Classic", "Pro", "Lite", "Urban", "Alpine", "Everyday", "Compact", "Deluxe", "Eco", "Swift",
    "Quiet", "Bold", "Nordic", "Studio", "Vintage", "Prime",
];
const BRANDS: [&str; 10] = [
    "Acme",
    "Northwind",
    "Kestrel",
    "Orbit",
    "Maple",
    "Tundra",
    "Lumen",
    "Vela",
    "Corvid",
    "Juniper",
];
const OCCUPATIONS: [&str; 8] = [
    "engineer", "teacher", "student", "artist", "nurse", "writer", "sales", "retired",
];

/// Sizes of the generated shop.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub users: usize,
    pub items: usize,
    /// Mean interactions per user.
    pub per_user: usize,
    pub seed: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            users: 3000,
            items: 4000,
            per_user: 40,
            seed: 42,
        }
    }
}

/// Picks an index with probability proportional to the weights whose
/// running sums are `cum`.
fn pick(rng: &mut SplitMix, cum: &[f64]) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    let x = rng.uniform() * total;
    cum.partition_point(|&c| c <= x).min(cum.len() - 1)
}

pub fn shop(shape: Shape) -> Dataset {
    let mut rng = SplitMix::new(shape.seed);
    let n_cat = CATEGORIES.len();
    // Items: category round-robin, popularity Zipf(0.9) over a random order.
    let mut rank: Vec<usize> = (0..shape.items).collect();
    for i in (1..rank.len()).rev() {
        rank.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut items = Vec::with_capacity(shape.items);
    let mut by_cat: Vec<Vec<usize>> = vec![Vec::new(); n_cat];
    let mut popularity = Vec::with_capacity(shape.items);
    for (i, &r) in rank.iter().enumerate() {
        let cat = i % n_cat;
        let (name, nouns, price) = CATEGORIES[cat];
        let noun = nouns[rng.below(4) as usize];
        let adj = ADJECTIVES[rng.below(ADJECTIVES.len() as u64) as usize];
        let brand = BRANDS[rng.below(BRANDS.len() as u64) as usize];
        let price = (price * (0.35 * rng.normal()).exp() * 100.0).round() / 100.0;
        let title = format!("{brand} {adj} {noun}");
        let attrs = json!({
            "title": title,
            "category": name,
            "brand": brand,
            "price": price,
            "in_stock": rng.uniform() > 0.08,
        });
        items.push(Item {
            id: format!("sku:{i}"),
            title,
            attrs: attrs.to_string(),
        });
        by_cat[cat].push(i);
        popularity.push(1.0 / ((r + 1) as f64).powf(0.9));
    }
    let cum_by_cat: Vec<Vec<f64>> = by_cat
        .iter()
        .map(|members| {
            members
                .iter()
                .scan(0.0, |s, &i| {
                    *s += popularity[i];
                    Some(*s)
                })
                .collect()
        })
        .collect();
    let cum_all: Vec<f64> = popularity
        .iter()
        .scan(0.0, |s, p| {
            *s += p;
            Some(*s)
        })
        .collect();

    let mut users = Vec::with_capacity(shape.users);
    let mut features = Vec::with_capacity(shape.users);
    let mut interactions = Vec::new();
    let start = 1_700_000_000i64;
    for u in 0..shape.users {
        users.push(format!("u{u}"));
        let main = rng.below(n_cat as u64) as usize;
        let second = (main + 1 + rng.below(n_cat as u64 - 1) as usize) % n_cat;
        let age = 18 + rng.below(55);
        features.push(BTreeMap::from([
            ("age".to_string(), age.to_string()),
            (
                "gender".to_string(),
                if rng.uniform() < 0.5 { "F" } else { "M" }.to_string(),
            ),
            (
                "occupation".to_string(),
                OCCUPATIONS[rng.below(OCCUPATIONS.len() as u64) as usize].to_string(),
            ),
        ]));
        // Lognormal activity, at least 3 interactions.
        let n = ((shape.per_user as f64) * (0.8 * rng.normal() - 0.32).exp()).round() as usize;
        let n = n.clamp(3, shape.per_user * 8);
        let mut ts = start + rng.below(30 * 86_400) as i64;
        let mut left = n;
        while left > 0 {
            // A session: 2..6 items of one interest.
            let interest = if rng.uniform() < 0.65 { main } else { second };
            let len = (2 + rng.below(5) as usize).min(left);
            for _ in 0..len {
                ts += 60 + rng.below(600) as i64;
                let (item, liked) = if rng.uniform() < 0.9 {
                    (
                        by_cat[interest][pick(&mut rng, &cum_by_cat[interest])],
                        true,
                    )
                } else {
                    (pick(&mut rng, &cum_all), false)
                };
                let rating = if liked && rng.uniform() < 0.85 {
                    4 + rng.below(2)
                } else {
                    1 + rng.below(3)
                };
                interactions.push(Interaction {
                    user: u as u32,
                    item: item as u32,
                    weight: rating as f32,
                    ts,
                });
            }
            left -= len;
            ts += 86_400 + rng.below(5 * 86_400) as i64;
        }
    }
    Dataset {
        source: format!(
            "generated shop ({} users, {} items, seed {})",
            shape.users, shape.items, shape.seed
        ),
        users,
        user_features: features,
        items,
        interactions,
        positive_min: 4.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_valid_and_power_law() {
        let shape = Shape {
            users: 300,
            items: 500,
            per_user: 20,
            seed: 7,
        };
        let a = shop(shape);
        assert_eq!(a, shop(shape));
        a.check().unwrap();
        let mut counts = vec![0usize; a.items.len()];
        for i in &a.interactions {
            counts[i.item as usize] += 1;
        }
        counts.sort_unstable_by(|x, y| y.cmp(x));
        let top: usize = counts[..a.items.len() / 10].iter().sum();
        assert!(
            top * 100 / a.interactions.len() > 35,
            "the top 10% of items take a large share: {top}"
        );
        let attrs: serde_json::Value = serde_json::from_str(&a.items[0].attrs).unwrap();
        assert!(attrs["price"].as_f64().unwrap() > 0.0 && attrs["category"].is_string());
    }
}
