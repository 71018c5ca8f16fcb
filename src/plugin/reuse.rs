//! Which plugin components may keep one instance per thread between calls,
//! and the rewrite that makes it safe.
//!
//! A fresh instance per call costs more than most plugins' work (a store,
//! three core instances, a memory reset). An instance kept between calls is
//! only acceptable if nothing one call leaves behind can be read by the
//! next. The state a core instance carries is its linear memories (the host
//! restores them from a snapshot after every call, see `memory.rs`), its
//! tables, its mutable globals, and the component's own handle tables. This
//! module handles the rest at load time:
//!
//! - **Mutable globals** (the stack pointer of every Rust or C plugin, and
//!   whatever a hand-written plugin keeps) are reset on every entry from the
//!   host. Each defined function that can be reached from outside its module
//!   (exported, placed in a table, or taken by `ref.func`) gets a wrapper
//!   that, when no call of this module is already on the stack, sets every
//!   mutable global back to its initial value, then counts itself in and out
//!   of an added depth global around the original body. A re-entrant call
//!   (the host calling `cabi_realloc` while the guest waits on an import)
//!   sees a non-zero depth and leaves the live stack pointer alone.
//! - **Tables and passive segments**: a module that can change a table or a
//!   segment at run time (`table.set/grow/fill/copy/init`, `elem.drop`,
//!   `data.drop`, `memory.init`) is not reused.
//! - **Globals shared between modules** (an imported or exported mutable
//!   global) and **component state** (nested components, resource types of
//!   its own, `resource.new/rep`, async or thread built-ins, a start
//!   function) also mean no reuse.
//!
//! A component refused here still runs, with a fresh instance per call.

use std::collections::{BTreeSet, HashMap};

use wasm_encoder::reencode::{utils, Error as ReencodeError, Reencode};
use wasm_encoder::{CodeSection, ExportSection, Function, Instruction, ValType};
use wasmparser::{
    BinaryReader, CanonicalFunction, ComponentType, ConstExpr, ElementItems, ExternalKind,
    FunctionBody, Operator, Parser, Payload, SectionLimited, TypeRef,
};

/// Component binary section ids (component model binary format).
const CORE_MODULE: u8 = 1;
const COMPONENT: u8 = 4;
const TYPE: u8 = 7;
const CANON: u8 = 8;
const START: u8 = 9;

/// The component rewritten so that its instance can serve call after call,
/// or why it cannot.
pub fn prepare(component: &[u8]) -> Result<Vec<u8>, String> {
    if component.len() < 8 || &component[..4] != b"\0asm" || component[4..8] != [0x0d, 0, 1, 0] {
        return Err("not a component binary".into());
    }
    let mut out = component[..8].to_vec();
    let mut pos = 8;
    while pos < component.len() {
        let id = component[pos];
        let mut reader = BinaryReader::new(&component[pos + 1..], pos + 1);
        let size = reader.read_var_u32().map_err(|e| e.to_string())? as usize;
        let start = reader.original_position();
        let end = start
            .checked_add(size)
            .filter(|&e| e <= component.len())
            .ok_or("truncated section")?;
        let body = &component[start..end];
        match id {
            CORE_MODULE => {
                let module = wrap_entries(body)?;
                out.push(CORE_MODULE);
                leb(&mut out, module.len());
                out.extend_from_slice(&module);
                pos = end;
                continue;
            }
            COMPONENT => return Err("it nests components".into()),
            START => return Err("it has a start function".into()),
            TYPE => check_types(body, start)?,
            CANON => check_canon(body, start)?,
            _ => {}
        }
        out.extend_from_slice(&component[pos..end]);
        pos = end;
    }
    Ok(out)
}

fn leb(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn check_types(body: &[u8], offset: usize) -> Result<(), String> {
    let reader = SectionLimited::<ComponentType>::new(BinaryReader::new(body, offset))
        .map_err(|e| e.to_string())?;
    for ty in reader {
        if let ComponentType::Resource { .. } = ty.map_err(|e| e.to_string())? {
            return Err("it defines a resource type".into());
        }
    }
    Ok(())
}

fn check_canon(body: &[u8], offset: usize) -> Result<(), String> {
    let reader = SectionLimited::<CanonicalFunction>::new(BinaryReader::new(body, offset))
        .map_err(|e| e.to_string())?;
    for f in reader {
        match f.map_err(|e| e.to_string())? {
            CanonicalFunction::Lift { .. }
            | CanonicalFunction::Lower { .. }
            | CanonicalFunction::ResourceDrop { .. } => {}
            other => {
                let name = format!("{other:?}");
                let name = name.split([' ', '{', '(']).next().unwrap_or("");
                return Err(format!("it uses the canonical built-in {name}"));
            }
        }
    }
    Ok(())
}

/// What the rewrite needs to know about one core module.
#[derive(Default)]
struct Survey {
    imported_funcs: u32,
    imported_globals: u32,
    /// Type index of each defined function.
    func_types: Vec<u32>,
    /// (global index, initial value) of each defined mutable global.
    mutable: Vec<(u32, Vec<u8>)>,
    defined_globals: u32,
    /// Defined functions callable from outside the module.
    entries: BTreeSet<u32>,
    /// Parameter types of each function type.
    params: Vec<Option<Vec<ValType>>>,
}

/// Reads what [`Survey`] holds and refuses what cannot be reset.
fn survey(module: &[u8]) -> Result<Survey, String> {
    let mut s = Survey::default();
    let err = |e: wasmparser::BinaryReaderError| e.to_string();
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(err)? {
            Payload::TypeSection(types) => {
                for group in types {
                    for sub in group.map_err(err)?.into_types() {
                        s.params.push(match &sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => Some(
                                f.params()
                                    .iter()
                                    .map(|t| RoundTrip.val_type(*t))
                                    .collect::<Result<_, _>>()
                                    .map_err(|e| e.to_string())?,
                            ),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    match import.map_err(err)?.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => s.imported_funcs += 1,
                        TypeRef::Global(g) => {
                            if g.mutable {
                                return Err("it imports a mutable global".into());
                            }
                            s.imported_globals += 1;
                        }
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(funcs) => {
                for ty in funcs {
                    s.func_types.push(ty.map_err(err)?);
                }
            }
            Payload::GlobalSection(globals) => {
                for global in globals {
                    let global = global.map_err(err)?;
                    let index = s.imported_globals + s.defined_globals;
                    s.defined_globals += 1;
                    if global.ty.mutable {
                        s.mutable.push((index, const_bytes(&global.init_expr)?));
                    }
                    note_ref_funcs(&mut s.entries, global.init_expr)?;
                }
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.map_err(err)?;
                    match export.kind {
                        ExternalKind::Func | ExternalKind::FuncExact => {
                            s.entries.insert(export.index);
                        }
                        ExternalKind::Global
                            if s.mutable.iter().any(|(g, _)| *g == export.index) =>
                        {
                            return Err("it exports a mutable global".into());
                        }
                        _ => {}
                    }
                }
            }
            Payload::ElementSection(elements) => {
                for element in elements {
                    match element.map_err(err)?.items {
                        ElementItems::Functions(funcs) => {
                            for f in funcs {
                                s.entries.insert(f.map_err(err)?);
                            }
                        }
                        ElementItems::Expressions(_, exprs) => {
                            for e in exprs {
                                note_ref_funcs(&mut s.entries, e.map_err(err)?)?;
                            }
                        }
                    }
                }
            }
            Payload::CodeSectionEntry(body) => check_body(&mut s.entries, &body)?,
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                return Err("a core module nests modules".into())
            }
            _ => {}
        }
    }
    // Only defined functions get wrappers; re-exported imports are entries
    // of the module that defines them.
    let first_defined = s.imported_funcs;
    s.entries.retain(|&f| f >= first_defined);
    Ok(s)
}

fn const_bytes(expr: &ConstExpr) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut ops = expr.get_operators_reader();
    while !ops.is_end_then_eof() {
        let op = ops.read().map_err(|e| e.to_string())?;
        wasm_encoder::Encode::encode(
            &RoundTrip.instruction(op).map_err(|e| e.to_string())?,
            &mut bytes,
        );
    }
    Ok(bytes)
}

fn note_ref_funcs(entries: &mut BTreeSet<u32>, expr: ConstExpr) -> Result<(), String> {
    for op in expr.get_operators_reader() {
        if let Operator::RefFunc { function_index } = op.map_err(|e| e.to_string())? {
            entries.insert(function_index);
        }
    }
    Ok(())
}

fn check_body(entries: &mut BTreeSet<u32>, body: &FunctionBody) -> Result<(), String> {
    for op in body.get_operators_reader().map_err(|e| e.to_string())? {
        match op.map_err(|e| e.to_string())? {
            Operator::RefFunc { function_index } => {
                entries.insert(function_index);
            }
            Operator::TableSet { .. }
            | Operator::TableGrow { .. }
            | Operator::TableFill { .. }
            | Operator::TableCopy { .. }
            | Operator::TableInit { .. }
            | Operator::ElemDrop { .. } => return Err("it changes a table at run time".into()),
            Operator::DataDrop { .. } | Operator::MemoryInit { .. } => {
                return Err("it uses passive data segments".into())
            }
            _ => {}
        }
    }
    Ok(())
}

/// Re-encodes a module unchanged (type conversions only).
struct RoundTrip;
impl Reencode for RoundTrip {
    type Error = std::convert::Infallible;
}

/// Re-encodes a module with entry wrappers: entries point to them, and the
/// wrappers and the depth global are appended.
struct Wrapper<'s> {
    survey: &'s Survey,
    /// Defined entry function index -> its wrapper's index.
    wrapper_of: HashMap<u32, u32>,
    depth_global: u32,
}

impl Reencode for Wrapper<'_> {
    type Error = String;

    fn instruction<'a>(
        &mut self,
        op: Operator<'a>,
    ) -> Result<Instruction<'a>, ReencodeError<String>> {
        if let Operator::RefFunc { function_index } = op {
            return Ok(Instruction::RefFunc(self.entry(function_index)));
        }
        utils::instruction(self, op)
    }

    fn element_items<'a>(
        &mut self,
        items: ElementItems<'a>,
    ) -> Result<wasm_encoder::Elements<'a>, ReencodeError<String>> {
        if let ElementItems::Functions(funcs) = items {
            let mut out = Vec::new();
            for f in funcs {
                out.push(self.entry(f?));
            }
            return Ok(wasm_encoder::Elements::Functions(out.into()));
        }
        utils::element_items(self, items)
    }

    fn parse_export(
        &mut self,
        exports: &mut ExportSection,
        export: wasmparser::Export<'_>,
    ) -> Result<(), ReencodeError<String>> {
        let index = match export.kind {
            ExternalKind::Func | ExternalKind::FuncExact => self.entry(export.index),
            _ => export.index,
        };
        exports.export(export.name, self.export_kind(export.kind)?, index);
        Ok(())
    }

    fn parse_function_section(
        &mut self,
        functions: &mut wasm_encoder::FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<(), ReencodeError<String>> {
        utils::parse_function_section(self, functions, section)?;
        for f in self.survey.entries.iter() {
            functions.function(self.survey.func_types[(f - self.survey.imported_funcs) as usize]);
        }
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut wasm_encoder::GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), ReencodeError<String>> {
        utils::parse_global_section(self, globals, section)?;
        globals.global(
            wasm_encoder::GlobalType {
                val_type: ValType::I32,
                mutable: true,
                shared: false,
            },
            &wasm_encoder::ConstExpr::i32_const(0),
        );
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> Result<(), ReencodeError<String>> {
        utils::parse_code_section(self, code, section)?;
        for &f in self.survey.entries.iter() {
            code.function(&self.wrapper_body(f)?);
        }
        Ok(())
    }
}

impl Wrapper<'_> {
    /// The index that callers from outside must use for `f`.
    fn entry(&self, f: u32) -> u32 {
        self.wrapper_of.get(&f).copied().unwrap_or(f)
    }

    fn wrapper_body(&self, f: u32) -> Result<Function, ReencodeError<String>> {
        let ty = self.survey.func_types[(f - self.survey.imported_funcs) as usize];
        let params = self
            .survey
            .params
            .get(ty as usize)
            .and_then(|p| p.as_ref())
            .ok_or_else(|| ReencodeError::UserError(format!("function {f} has no func type")))?;
        let depth = self.depth_global;
        let mut body = Function::new([]);
        body.instructions()
            .global_get(depth)
            .i32_eqz()
            .if_(wasm_encoder::BlockType::Empty);
        for (global, init) in &self.survey.mutable {
            body.raw(init.iter().copied());
            body.instructions().global_set(*global);
        }
        body.instructions()
            .end()
            .global_get(depth)
            .i32_const(1)
            .i32_add()
            .global_set(depth);
        for i in 0..params.len() as u32 {
            body.instructions().local_get(i);
        }
        body.instructions()
            .call(f)
            .global_get(depth)
            .i32_const(1)
            .i32_sub()
            .global_set(depth)
            .end();
        Ok(body)
    }
}

/// The module with its entries wrapped, or unchanged when it has no mutable
/// global (nothing to reset).
fn wrap_entries(module: &[u8]) -> Result<Vec<u8>, String> {
    let survey = survey(module)?;
    if survey.mutable.is_empty() {
        return Ok(module.to_vec());
    }
    let first_wrapper = survey.imported_funcs + survey.func_types.len() as u32;
    let wrapper_of = survey
        .entries
        .iter()
        .enumerate()
        .map(|(i, &f)| (f, first_wrapper + i as u32))
        .collect();
    let mut wrapper = Wrapper {
        survey: &survey,
        wrapper_of,
        depth_global: survey.imported_globals + survey.defined_globals,
    };
    let mut out = wasm_encoder::Module::new();
    wrapper
        .parse_core_module(&mut out, Parser::new(0), module)
        .map_err(|e| match e {
            ReencodeError::UserError(m) => m,
            other => other.to_string(),
        })?;
    Ok(out.finish())
}

#[cfg(test)]
mod tests;
