//! `recsys train`: a model directory from a dataset. Its manifest
//! (`manifest.json`, [`Manifest`]) says what it holds and how it was made:
//! the protocol stage it was trained at, the ALS settings and the SESSION
//! blend (chosen on the validation stage by [`tune`] unless given), the
//! ranker's verdict ([`verdict`]); beside it the ALS factors (`als.bin`)
//! and the ranker (`ranker.safetensors`, `ranker.schema`). `recsys load`
//! and `recsys eval` read it.

pub mod als;
pub mod ranker;
pub mod sequence;
pub mod tune;
pub mod verdict;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use recsys::user::Session;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Protocol, Split, Stage};
use als::{AlsParams, Csr, Factors};
use ranker::RankerParams;
use recsys::rank::sequence::SequenceTower;
use sequence::{TowerParams, TowerVerdict};
use tune::Tuning;
use verdict::{RankerCheck, Verdict};

/// First bytes of `als.bin`.
const MAGIC: &[u8] = b"recsys-als 2\n";
/// The manifest's format; a directory of another format is refused.
const FORMAT: u32 = 2;
const MANIFEST: &str = "manifest.json";
const FACTORS: &str = "als.bin";
const RANKER_WEIGHTS: &str = "ranker.safetensors";
const RANKER_SCHEMA: &str = "ranker.schema";
const TOWER: &str = "tower.safetensors";

/// The SESSION blend used when none is chosen on validation.
pub const DEFAULT_SESSION: Session = Session {
    items: 3,
    weight: 1.0,
};

/// What a model directory holds and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The dataset's `source` line (load and eval check they match).
    pub dataset: String,
    pub protocol: Protocol,
    /// [`Stage::Test`]: trained without the test items (evaluable);
    /// [`Stage::Full`]: on every positive.
    pub stage: Stage,
    pub als: AlsParams,
    /// The catalog's default SESSION blend `recsys load` sets.
    pub session: Session,
    /// What was chosen on validation and why (`None`: settings as given).
    pub tuning: Option<Tuning>,
    /// The ranker's verdict on validation (`None`: no ranker, or no user
    /// with a validation item).
    pub ranker: Option<Verdict>,
    /// The sequence tower's verdict on validation (`None`: no tower).
    #[serde(default)]
    pub tower: Option<TowerVerdict>,
    /// The files beside the manifest.
    pub files: Vec<String>,
}

/// What `recsys train` produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub manifest: Manifest,
    pub factors: Factors,
    /// The ranker, when one was trained.
    pub ranker: Option<SavedRanker>,
    /// The sequence tower's safetensors, when one was trained.
    pub tower: Option<Vec<u8>>,
}

/// A ranker as RECSYS.MODEL.SET takes it: SCHEMA tokens and DLRM weights.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedRanker {
    pub schema: String,
    pub weights: Vec<u8>,
}

impl Embeddings {
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
        };
        let mut bytes = MAGIC.to_vec();
        bytes.extend(bincode::serde::encode_to_vec(
            &self.factors,
            bincode::config::standard(),
        )?);
        write(FACTORS, &bytes)?;
        // A ranker of an earlier training must not outlive these embeddings.
        for f in [RANKER_WEIGHTS, RANKER_SCHEMA, TOWER] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let mut manifest = self.manifest.clone();
        manifest.files = vec![FACTORS.to_string()];
        if let Some(r) = &self.ranker {
            write(RANKER_WEIGHTS, &r.weights)?;
            write(RANKER_SCHEMA, r.schema.as_bytes())?;
            manifest
                .files
                .extend([RANKER_WEIGHTS, RANKER_SCHEMA].map(String::from));
        }
        if let Some(t) = &self.tower {
            write(TOWER, t)?;
            manifest.files.push(TOWER.to_string());
        }
        // Last: a directory with a manifest is complete.
        write(
            MANIFEST,
            serde_json::to_string_pretty(&manifest)?.as_bytes(),
        )
    }

    pub fn load(dir: &Path) -> Result<Embeddings> {
        let path = dir.join(MANIFEST);
        if !path.exists() && dir.join(FACTORS).exists() {
            bail!(
                "{} was written by an older recsys (no {MANIFEST}): train again",
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (train first: recsys train)", path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a recsys model manifest", path.display()))?;
        if manifest.format != FORMAT {
            bail!(
                "{}: format {} (this recsys reads {FORMAT}): train again",
                path.display(),
                manifest.format
            );
        }
        let path = dir.join(FACTORS);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let Some(body) = bytes.strip_prefix(MAGIC) else {
            bail!("{} is not written by this recsys train", path.display());
        };
        let (factors, _): (Factors, usize) =
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .with_context(|| format!("{}: corrupt", path.display()))?;
        let k = factors.k;
        if k == 0 || factors.users.len() % k != 0 || factors.items.len() % k != 0 {
            bail!("{}: factor sizes do not match", path.display());
        }
        let ranker = if manifest.files.iter().any(|f| f == RANKER_WEIGHTS) {
            let schema = dir.join(RANKER_SCHEMA);
            Some(SavedRanker {
                weights: std::fs::read(dir.join(RANKER_WEIGHTS))
                    .with_context(|| format!("reading the ranker in {}", dir.display()))?,
                schema: std::fs::read_to_string(&schema)
                    .with_context(|| format!("reading {}", schema.display()))?,
            })
        } else {
            None
        };
        let tower = if manifest.files.iter().any(|f| f == TOWER) {
            let path = dir.join(TOWER);
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            SequenceTower::from_safetensors(&bytes, factors.k)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Some(bytes)
        } else {
            None
        };
        Ok(Embeddings {
            manifest,
            factors,
            ranker,
            tower,
        })
    }

    /// Checks that these embeddings were trained on `ds`.
    pub fn check_matches(&self, ds: &Dataset) -> Result<()> {
        if self.manifest.dataset != ds.source
            || self.factors.users.len() != ds.users.len() * self.factors.k
            || self.factors.items.len() != ds.items.len() * self.factors.k
        {
            bail!(
                "the model was trained on '{}', not on this dataset ('{}'): train again",
                self.manifest.dataset,
                ds.source
            );
        }
        Ok(())
    }

    /// The split these embeddings were trained on.
    pub fn split(&self, ds: &Dataset) -> Split {
        Split::new(ds, self.manifest.protocol, self.manifest.stage)
    }
}

/// The user x item matrix of training positives (weight 1 each).
pub fn positives_matrix(split: &Split) -> Csr {
    let rows: Vec<Vec<(u32, f32)>> = split
        .train
        .iter()
        .map(|items| items.iter().map(|&i| (i, 1.0)).collect())
        .collect();
    Csr::from_rows(&rows)
}

/// What to train and how.
#[derive(Debug, Clone)]
pub struct Plan {
    pub protocol: Protocol,
    /// Leave the test items out (to evaluate them); else train on every
    /// positive.
    pub holdout: bool,
    /// ALS settings (the starting point when tuning).
    pub als: AlsParams,
    /// SESSION blend (the starting point when tuning).
    pub session: Session,
    /// Choose ALS settings and the SESSION blend on validation within this
    /// time; `None`: use them as given.
    pub tune: Option<Duration>,
    /// Train a ranker: its epochs are the most, validation picks fewer.
    pub ranker: Option<RankerParams>,
    /// Train a sequence tower: epochs likewise.
    pub tower: Option<TowerParams>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            protocol: Protocol::default(),
            holdout: true,
            als: AlsParams::default(),
            session: DEFAULT_SESSION,
            tune: Some(Duration::from_secs(30)),
            ranker: Some(RankerParams::default()),
            tower: Some(TowerParams::default()),
        }
    }
}

/// Trains what `plan` says on `ds`; `log` gets a line per step.
pub fn fit(ds: &Dataset, plan: &Plan, mut log: impl FnMut(String)) -> Result<Embeddings> {
    let (mut als_params, mut session) = (plan.als, plan.session);
    let tuning = plan.tune.and_then(|budget| {
        let t = tune::tune(ds, plan.protocol, &plan.als, plan.session, budget, |t| {
            log(format!("  tried {}", t.describe()))
        });
        match &t {
            Some(t) => {
                als_params = t.chosen.als(&plan.als);
                session = t.chosen.session;
                log(t.describe());
            }
            None => log("no user has a validation item: settings used as given".into()),
        }
        t
    });
    let stage = if plan.holdout {
        Stage::Test
    } else {
        Stage::Full
    };
    let split = Split::new(ds, plan.protocol, stage);
    let started = Instant::now();
    let factors = als::train(
        &positives_matrix(&split),
        ds.items.len(),
        &als_params,
        |_| {},
    );
    log(format!(
        "ALS: {} factors, {} iterations in {:.2} s",
        als_params.factors,
        als_params.iterations,
        started.elapsed().as_secs_f64()
    ));
    // The validation stage and its ALS, shared by the ranker's and the
    // tower's choices (`None` when no user has a validation item).
    let validation = (plan.ranker.is_some() || plan.tower.is_some())
        .then(|| Validation::new(ds, plan.protocol, &als_params))
        .flatten();
    let (ranker, verdict) = match &plan.ranker {
        Some(p) => fit_ranker(
            ds,
            &split,
            validation.as_ref(),
            &als_params,
            session,
            p,
            &mut log,
        )?,
        None => (None, None),
    };
    let (tower, tower_verdict) = match &plan.tower {
        Some(p) => fit_tower(&split, &factors, validation.as_ref(), session, p, &mut log)?,
        None => (None, None),
    };
    Ok(Embeddings {
        manifest: Manifest {
            format: FORMAT,
            dataset: ds.source.clone(),
            protocol: plan.protocol,
            stage,
            als: als_params,
            session,
            tuning,
            ranker: verdict,
            tower: tower_verdict,
            files: Vec::new(),
        },
        factors,
        ranker,
        tower,
    })
}

/// The best validation score over epochs so far, and its epoch: training
/// goes on until [`verdict::PATIENCE`] epochs pass without a better one.
struct EarlyStop {
    score: f64,
    epoch: usize,
}

impl Default for EarlyStop {
    fn default() -> Self {
        EarlyStop {
            score: f64::NEG_INFINITY,
            epoch: 0,
        }
    }
}

impl EarlyStop {
    /// Records `epoch`'s score; whether to train another epoch.
    fn keep_going(&mut self, epoch: usize, score: f64) -> bool {
        if score > self.score {
            (self.score, self.epoch) = (score, epoch);
        }
        epoch - self.epoch < verdict::PATIENCE
    }
}

/// The validation stage (its split: no test item in it) and the ALS
/// trained on it, which the ranker's and the tower's choices share.
struct Validation {
    split: Split,
    factors: Factors,
}

impl Validation {
    /// `None` when no user has a validation item.
    fn new(ds: &Dataset, protocol: Protocol, als_params: &AlsParams) -> Option<Validation> {
        let split = Split::new(ds, protocol, Stage::Validation);
        split.evaluated().next()?;
        let factors = als::train(
            &positives_matrix(&split),
            ds.items.len(),
            als_params,
            |_| {},
        );
        Some(Validation { split, factors })
    }
}

/// The sequence tower on `split` over `factors`, its epochs, blend weight
/// and verdict from the validation stage.
fn fit_tower(
    split: &Split,
    factors: &Factors,
    validation: Option<&Validation>,
    session: Session,
    p: &TowerParams,
    log: &mut impl FnMut(String),
) -> Result<(Option<Vec<u8>>, Option<TowerVerdict>)> {
    let started = Instant::now();
    let mut p = *p;
    let mut verdict = None;
    if let Some(Validation {
        split: validation,
        factors: f,
    }) = validation
    {
        let session_ndcg = tune::score_sessions(f, validation, &[session])[0].ndcg;
        let (mut best, mut best_weight) = (EarlyStop::default(), 0.0);
        sequence::train_with(f, validation, &p, |epoch, w| {
            let tower = SequenceTower::from_safetensors(w, f.k).map_err(anyhow::Error::msg)?;
            let queries: Vec<Option<Vec<f32>>> = validation
                .train
                .iter()
                .map(|history| sequence::query(&tower, f, history))
                .collect();
            let scored =
                tune::score_blends(f, validation, session, &queries, &sequence::BLEND_WEIGHTS);
            let (m, &w) = scored
                .iter()
                .zip(&sequence::BLEND_WEIGHTS)
                .max_by(|a, b| a.0.ndcg.total_cmp(&b.0.ndcg))
                .context("no blend weight")?;
            if m.ndcg > best.score {
                best_weight = w;
            }
            Ok(best.keep_going(epoch, m.ndcg))
        })?;
        let (best, best_epoch) = (best.score, best.epoch);
        p.epochs = best_epoch.max(1);
        let v = TowerVerdict {
            params: p,
            epochs: p.epochs,
            weight: best_weight,
            validation_users: validation.evaluated().count(),
            session_ndcg,
            tower_ndcg: best,
            suggested: best > session_ndcg,
        };
        log(v.describe());
        verdict = Some(v);
    }
    let weights = sequence::train_with(factors, split, &p, |_, _| Ok(true))?;
    log(format!(
        "sequence tower: {} epochs in {:.2} s",
        p.epochs,
        started.elapsed().as_secs_f64()
    ));
    Ok((Some(weights), verdict))
}

/// The ranker on `split`, its features, epochs and verdict from the
/// validation stage: the computed signals ([`ranker::SIGNALS`]) join the
/// derived schema one at a time, each kept only when it raises validation
/// NDCG by [`ranker::SIGNAL_MIN_GAIN`] (a schema given with
/// `--ranker-schema` is used as it is).
fn fit_ranker(
    ds: &Dataset,
    split: &Split,
    validation: Option<&Validation>,
    als_params: &AlsParams,
    session: Session,
    p: &RankerParams,
    log: &mut impl FnMut(String),
) -> Result<(Option<SavedRanker>, Option<Verdict>)> {
    let started = Instant::now();
    let given = p.schema.is_some();
    let mut schema = p.schema.clone().unwrap_or_else(|| ranker::schema_for(ds));
    let mut p = p.clone();
    let mut verdict = None;
    if let Some(Validation {
        split: validation,
        factors: f,
    }) = validation
    {
        // Validation NDCG of the best epoch, the epoch, and the check.
        let judge = |schema: &str| -> Result<(f64, usize, RankerCheck)> {
            let check = RankerCheck::new(ds, validation, f, session, schema)?;
            let trial = RankerParams {
                schema: Some(schema.to_string()),
                ..p.clone()
            };
            let mut best = EarlyStop::default();
            ranker::train_with(ds, validation, als_params, session, &trial, |epoch, w| {
                Ok(best.keep_going(epoch, check.ranker_ndcg(w)?))
            })?;
            Ok((best.score, best.epoch, check))
        };
        let (mut best, mut best_epoch, mut check) = judge(&schema)?;
        if !given {
            for signal in ranker::SIGNALS {
                let trial = ranker::with_signal(&schema, signal);
                let (ndcg, epoch, c) = judge(&trial)?;
                let keep = ndcg > best * (1.0 + ranker::SIGNAL_MIN_GAIN);
                log(format!(
                    "ranker: validation NDCG@{} {ndcg:.4} with DENSE {signal} vs {best:.4} without: {}",
                    crate::eval::K,
                    if keep { "kept" } else { "left out" }
                ));
                if keep {
                    (best, best_epoch, check, schema) = (ndcg, epoch, c, trial);
                }
            }
        }
        let retrieval_ndcg = check.retrieval_ndcg();
        p.epochs = best_epoch.max(1);
        let v = Verdict {
            epochs: p.epochs,
            validation_users: check.validation_users(),
            retrieval_ndcg,
            ranker_ndcg: best,
            suggested: best > retrieval_ndcg,
        };
        log(format!("ranker: {}", v.describe()));
        verdict = Some(v);
    }
    p.schema = Some(schema);
    let r = ranker::train(ds, split, als_params, session, &p)?;
    log(format!(
        "ranker: DLRM on {} rows ({} epochs, final loss {:.4}) in {:.2} s; SCHEMA {}",
        r.examples,
        p.epochs,
        r.final_loss,
        started.elapsed().as_secs_f64(),
        r.schema
    ));
    Ok((
        Some(SavedRanker {
            schema: r.schema,
            weights: r.weights,
        }),
        verdict,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_a_manifest_or_of_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = |d: &Path| format!("{:#}", Embeddings::load(d).unwrap_err());
        assert!(err(dir.path()).contains("train first"));
        std::fs::write(dir.path().join(FACTORS), b"recsys-als 1\n").unwrap();
        assert!(err(dir.path()).contains("older recsys"));
        std::fs::write(
            dir.path().join(MANIFEST),
            br#"{"format": 1, "dataset": "x", "protocol": "LatestPerUser", "stage": "Test",
                "als": {"factors": 1, "iterations": 1, "regularization": 1.0, "alpha": 1.0,
                        "cg_steps": 0, "seed": 1},
                "session": {"items": 0, "weight": 0.0}, "tuning": null, "ranker": null,
                "files": []}"#,
        )
        .unwrap();
        assert!(err(dir.path()).contains("format 1"), "{}", err(dir.path()));
        std::fs::write(dir.path().join(MANIFEST), b"{").unwrap();
        assert!(err(dir.path()).contains("not a recsys model manifest"));
    }
}
