//! Stage 1, the user vector: the request's VECTOR, else the user's `emb`,
//! else the catalog's QUERY model over the user's hash fields (the
//! long-term vector), blended with what the user did last:
//! `unit(long-term) + s x unit(mean of the SESSION's recent items) + t x
//! unit(tower)`, where the tower is the catalog's RECENT model over the
//! user's recent items and `t` its SEQUENCE weight. A user without a long-term
//! vector gets the tower's vector, else the mean of their recent items,
//! else none: cold start from popular items.

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::pipeline::explain::VectorSource;
use crate::pipeline::request::{Session, UserInput};
use crate::rank::Model;

/// Stage 1's result: the query vector prepared for the catalog's index
/// (normalized for COSINE; `None` means cold start), where it came from,
/// how many recent items a SESSION blend averaged and the tower read (0:
/// none), and the tower's microseconds.
pub struct UserVector {
    pub vector: Option<Vec<f32>>,
    pub source: VectorSource,
    pub session_items: usize,
    pub tower_items: usize,
    pub tower_us: u64,
}

/// The tower's part of a request: the catalog's RECENT model at a weight.
pub struct SequenceBlend<'a> {
    pub model: &'a Model,
    pub weight: f32,
}

/// The RECENT model and its weight for a request that says `SEQUENCE w` (or
/// not: the catalog's default, else 1); `None` when the catalog has no
/// RECENT model or the weight is 0. Asking for a tower the catalog does
/// not have is an error.
pub fn sequence_blend(
    catalog: &Catalog,
    requested: Option<f32>,
) -> Result<Option<SequenceBlend<'_>>> {
    let model = catalog.models().recent_model();
    let weight = requested.or(catalog.sequence_default()).unwrap_or(1.0);
    match model {
        None if requested.is_some_and(|w| w > 0.0) => Err(Error::invalid(
            "SEQUENCE needs the catalog's RECENT model (RECSYS.MODEL.SET catalog name SEQUENCE weights)",
        )),
        Some(model) if weight > 0.0 => Ok(Some(SequenceBlend { model, weight })),
        _ => Ok(None),
    }
}

/// Computes the user vector (see the module doc).
pub fn user_vector(
    catalog: &Catalog,
    user: &UserInput,
    session: Option<Session>,
    tower: Option<SequenceBlend>,
) -> Result<UserVector> {
    let started = std::time::Instant::now();
    let towered = match &tower {
        Some(t) => tower_vector(catalog, user, t.model)?,
        None => None,
    };
    let tower_us = if tower.is_some() {
        started.elapsed().as_micros() as u64
    } else {
        0
    };
    let tower_items = towered.as_ref().map_or(0, |(_, n)| *n);
    let Some((base, source)) = base_vector(catalog, user)? else {
        // No long-term vector: the tower alone, the session mean alone, or
        // cold start.
        let limit = session.map_or(usize::MAX, |s| s.items);
        let (vector, source) = match towered {
            Some((v, n)) => (Some(v), VectorSource::Sequence(n)),
            None => match recent_mean(catalog, user, limit) {
                Some((mean, n)) => (Some(mean), VectorSource::Session(n)),
                None => (None, VectorSource::Popular),
            },
        };
        return Ok(UserVector {
            vector: vector.map(|v| catalog.index().prepare(&v)),
            source,
            session_items: 0,
            tower_items,
            tower_us,
        });
    };
    let mean = session.and_then(|s| Some((s.weight, recent_mean(catalog, user, s.items)?)));
    let session_items = mean.as_ref().map_or(0, |(_, (_, n))| *n);
    let parts = mean
        .map(|(w, (v, _))| (w, v))
        .into_iter()
        .chain(towered.zip(tower).map(|((v, _), t)| (t.weight, v)));
    let mut v = base;
    let mut blended = false;
    for (weight, part) in parts {
        if !blended {
            v = unit(&v);
            blended = true;
        }
        for (x, m) in v.iter_mut().zip(unit(&part)) {
            *x += weight * m;
        }
    }
    catalog
        .check_vector(&v)
        .map_err(|e| e.context("user vector with SESSION or SEQUENCE"))?;
    Ok(UserVector {
        vector: Some(catalog.index().prepare(&v)),
        source,
        session_items,
        tower_items,
        tower_us,
    })
}

/// The tower's vector over the user's recent items that are in the
/// catalog (newest first), and how many it read; `None` without any.
fn tower_vector(
    catalog: &Catalog,
    user: &UserInput,
    model: &Model,
) -> Result<Option<(Vec<f32>, usize)>> {
    let vectors: Vec<Vec<f32>> = user
        .recent
        .iter()
        .filter_map(|id| catalog.slot_of(id))
        .take(model.recent_positions())
        .map(|slot| catalog.index().vector(slot))
        .collect();
    let out = model
        .recent_query(vectors.iter().map(Vec::as_slice))
        .map_err(Error::invalid)?;
    Ok(out.map(|v| (v, vectors.len())))
}

/// The long-term vector (checked, not prepared): VECTOR, `emb`, or the
/// QUERY model; `None` when there is none.
fn base_vector(catalog: &Catalog, user: &UserInput) -> Result<Option<(Vec<f32>, VectorSource)>> {
    let checked = |v: &[f32], what: &str| -> Result<Vec<f32>> {
        catalog.check_vector(v).map_err(|e| e.context(what))?;
        Ok(v.to_vec())
    };
    if let Some(v) = &user.vector_arg {
        return Ok(Some((checked(v, "VECTOR")?, VectorSource::Argument)));
    }
    if let Some(v) = &user.embedding {
        return Ok(Some((
            checked(v, "user field emb")?,
            VectorSource::Embedding,
        )));
    }
    // The query model needs something to go on: a user with none of its
    // fields falls through to the session mean or cold start.
    let query_model = catalog.models().query_model().filter(|m| {
        m.user_fields()
            .iter()
            .any(|f| user.features.contains_key(f))
    });
    if let Some(model) = query_model {
        let v = model.query(&user.features).map_err(Error::invalid)?;
        let what = format!("query model '{}'", model.spec.name);
        return Ok(Some((checked(&v, &what)?, VectorSource::QueryModel)));
    }
    Ok(None)
}

/// Mean of the stored vectors of the user's `limit` most recent items that
/// are in the catalog, and how many there were; `None` when none are or the
/// mean is zero.
pub(crate) fn recent_mean(
    catalog: &Catalog,
    user: &UserInput,
    limit: usize,
) -> Option<(Vec<f32>, usize)> {
    let mut sum = vec![0f32; catalog.params().dim];
    let mut n = 0;
    for slot in user
        .recent
        .iter()
        .filter_map(|id| catalog.slot_of(id))
        .take(limit)
    {
        for (s, x) in sum.iter_mut().zip(catalog.index().vector(slot)) {
            *s += x;
        }
        n += 1;
    }
    if n == 0 || sum.iter().all(|&x| x == 0.0) {
        return None;
    }
    sum.iter_mut().for_each(|x| *x /= n as f32);
    Some((sum, n))
}

/// `v` scaled to unit length (unchanged when zero).
pub(crate) fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}
