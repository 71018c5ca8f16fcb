//! A catalog's models by name, with at most one QUERY and one RECENT model
//! (they are used without being named, so two would be ambiguous), and
//! their persistence inside the catalog's encoding.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Kind, Model, ModelSpec, Role};
use crate::codec::{Reader, Writer};

#[derive(Default, Clone)]
pub struct ModelSet {
    models: BTreeMap<String, Arc<Model>>,
}

impl ModelSet {
    pub fn get(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The model of `role`, the first by name (QUERY and RECENT have at
    /// most one).
    pub fn with_role(&self, role: Role) -> Option<&Arc<Model>> {
        self.models.values().find(|m| m.spec.role == role)
    }

    /// The QUERY model, if the catalog has one.
    pub fn query_model(&self) -> Option<&Arc<Model>> {
        self.with_role(Role::Query)
    }

    /// The RECENT model (the sequence tower), if the catalog has one.
    pub fn recent_model(&self) -> Option<&Arc<Model>> {
        self.with_role(Role::Recent)
    }

    /// Checks that `name` with `role` may be stored (a second QUERY or
    /// RECENT model under another name may not).
    pub fn check_put(&self, name: &str, role: Role) -> Result<(), String> {
        match self.with_role(role) {
            Some(q) if role.is_implicit() && q.spec.name != name => Err(format!(
                "the catalog already has {} model '{}' (delete it, or set it again under that name)",
                role.name(),
                q.spec.name
            )),
            _ => Ok(()),
        }
    }

    /// Stores or replaces a model; true when it replaced one.
    pub fn put(&mut self, model: Arc<Model>) -> Result<bool, String> {
        self.check_put(&model.spec.name, model.spec.role)?;
        Ok(self.models.insert(model.spec.name.clone(), model).is_some())
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.models.remove(name).is_some()
    }

    pub fn memory_bytes(&self) -> usize {
        self.models.values().map(|m| m.memory_bytes()).sum()
    }

    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.models.len() as u64);
        for m in self.models.values() {
            let s = &m.spec;
            w.blob(s.name.as_bytes());
            w.blob(s.kind.name().as_bytes());
            w.blob(s.role.name().as_bytes());
            w.blob(s.schema.join("\n").as_bytes());
            w.blob(&s.bytes);
        }
    }

    /// Reads what [`ModelSet::encode`] wrote. A model that no longer builds
    /// (say, its runtime is missing) is kept when possible, else dropped
    /// with a note; only malformed bytes are errors.
    pub fn decode(r: &mut Reader, dim: usize, notes: &mut Vec<String>) -> Result<ModelSet, String> {
        let n = r.count(5 * 8)?;
        let mut set = ModelSet::default();
        for _ in 0..n {
            let text = |b: &[u8]| {
                String::from_utf8(b.to_vec()).map_err(|_| "model record is not UTF-8".to_string())
            };
            let name = text(r.blob()?)?;
            let kind = Kind::parse(&text(r.blob()?)?).ok_or("unknown model kind")?;
            let role = Role::parse(&text(r.blob()?)?).ok_or("unknown model role")?;
            let schema_text = text(r.blob()?)?;
            let schema = schema_text
                .split('\n')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            let bytes: Arc<[u8]> = r.blob()?.into();
            let spec = ModelSpec {
                name: name.clone(),
                kind,
                role,
                schema,
                bytes,
            };
            match Model::restore(spec, dim) {
                Ok(m) => {
                    if let Err(e) = m.runnable() {
                        notes.push(format!("model '{name}' restored but cannot run: {e}"));
                    }
                    set.models.insert(name, Arc::new(m));
                }
                Err(e) => notes.push(format!("model '{name}' dropped: {e}")),
            }
        }
        Ok(set)
    }
}
