//! Stage 1, the user vector: the request's VECTOR, else the user's `emb`,
//! else the catalog's QUERY model over the user's hash fields, else the mean
//! of the vectors of the user's recent items (the session), else none: cold
//! start from popular items. With SESSION, the first three are blended with
//! the mean of the user's most recent items.

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::pipeline::explain::VectorSource;
use crate::pipeline::request::{Session, UserInput};

/// Stage 1's result: the query vector prepared for the catalog's index
/// (normalized for COSINE; `None` means cold start), where it came from, and
/// how many recent items a SESSION blend averaged (0: no blend).
pub struct UserVector {
    pub vector: Option<Vec<f32>>,
    pub source: VectorSource,
    pub session_items: usize,
}

/// Computes the user vector (see the module doc); with `session`, a base
/// vector is blended with the mean of the user's most recent items.
pub fn user_vector(
    catalog: &Catalog,
    user: &UserInput,
    session: Option<Session>,
) -> Result<UserVector> {
    let (base, source) = match base_vector(catalog, user)? {
        Some(found) => found,
        None => {
            // No long-term vector: the session mean alone, or cold start.
            let limit = session.map_or(usize::MAX, |s| s.items);
            return Ok(match recent_mean(catalog, user, limit) {
                Some((mean, n)) => UserVector {
                    vector: Some(catalog.index().prepare(&mean)),
                    source: VectorSource::Session(n),
                    session_items: 0,
                },
                None => UserVector {
                    vector: None,
                    source: VectorSource::Popular,
                    session_items: 0,
                },
            });
        }
    };
    let blend = session.and_then(|s| Some((s, recent_mean(catalog, user, s.items)?)));
    let (v, session_items) = match blend {
        Some((s, (mean, n))) => {
            let mut v = unit(&base);
            for (x, m) in v.iter_mut().zip(unit(&mean)) {
                *x += s.weight * m;
            }
            (v, n)
        }
        None => (base, 0),
    };
    catalog
        .check_vector(&v)
        .map_err(|e| e.context("user vector with SESSION"))?;
    Ok(UserVector {
        vector: Some(catalog.index().prepare(&v)),
        source,
        session_items,
    })
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
fn recent_mean(catalog: &Catalog, user: &UserInput, limit: usize) -> Option<(Vec<f32>, usize)> {
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
fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}
