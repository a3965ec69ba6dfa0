//! The pickle VM's values and its work budget (see the parent module's docs): values are shared,
//! never deep-copied; containers know their depth; every allocation an input can cause is charged.

use std::rc::Rc;

use super::TensorRef;

/// Deepest container nesting accepted. Torch state dicts nest fewer than 10 deep (dicts of dicts
/// of tensors whose rebuild arguments hold tuples); 256 leaves room for unusual writers and keeps
/// the recursive `Drop` of a value a few hundred frames deep at most.
pub(super) const MAX_DEPTH: u32 = 256;
/// Work units every parse may spend, so that small files are never short of budget.
pub(super) const MIN_WORK: u64 = 1 << 20;
/// Work units per input byte. Real state dicts spend about 1.5 (each value and string is stored
/// once and each tensor listed once), so 16 leaves a wide margin.
pub(super) const WORK_PER_BYTE: u64 = 16;
/// The most work units any parse may spend: real state dicts need ~1.5 units per byte, so this
/// serves a `data.pkl` of over 20 MB (~1 MB for a model with a thousand tensors), while a hostile
/// one stops at roughly 1-1.5 GB of memory.
pub(super) const MAX_WORK: u64 = 1 << 25;

/// A container's elements with its depth, kept so that growing it can enforce [`MAX_DEPTH`]
/// without walking it.
#[derive(Clone)]
pub(super) struct Node<T> {
    pub depth: u32,
    pub items: Vec<T>,
}

impl<T> Node<T> {
    pub fn empty() -> Rc<Self> {
        Rc::new(Node {
            depth: 1,
            items: Vec::new(),
        })
    }
}

/// A pickle value. Cloning is O(1): strings and containers are shared, never deep-copied, so
/// memo references cannot multiply the input.
#[derive(Clone)]
pub(super) enum Val {
    /// A value no tensor needs the contents of (`None`, a bool, a float, bytes), by type name.
    Atom(&'static str),
    Int(i64),
    Str(Rc<str>),
    Tuple(Rc<Node<Val>>),
    List(Rc<Node<Val>>),
    Dict(Rc<Node<(Val, Val)>>),
    /// Module and name.
    Global(Rc<(Rc<str>, Rc<str>)>),
    /// Storage key and storage type name.
    Storage(Rc<(Rc<str>, Rc<str>)>),
    Tensor(Rc<TensorRef>),
    /// The result of calling something we do not model (kept opaque).
    Object,
    Mark,
}

impl Val {
    pub fn depth(&self) -> u32 {
        match self {
            Val::Tuple(n) | Val::List(n) => n.depth,
            Val::Dict(n) => n.depth,
            _ => 0,
        }
    }

    /// The type name for error messages; never the contents, which sharing can make huge.
    pub fn kind(&self) -> &'static str {
        match self {
            Val::Atom(kind) => kind,
            Val::Int(_) => "int",
            Val::Str(_) => "str",
            Val::Tuple(_) => "tuple",
            Val::List(_) => "list",
            Val::Dict(_) => "dict",
            Val::Global(_) => "global",
            Val::Storage(_) => "storage",
            Val::Tensor(_) => "tensor",
            Val::Object => "object",
            Val::Mark => "mark",
        }
    }
}

/// The work budget left (see the module docs).
pub(super) struct Work {
    pub left: u64,
    input_len: usize,
}

impl Work {
    pub fn for_input(input_len: usize) -> Self {
        let left = MIN_WORK
            .max(WORK_PER_BYTE.saturating_mul(input_len as u64))
            .min(MAX_WORK);
        Self { left, input_len }
    }

    pub fn charge(&mut self, units: usize) -> Result<(), String> {
        self.left = self.left.checked_sub(units as u64).ok_or_else(|| {
            format!(
                "pickle needs more work than its size allows ({} bytes; shared values expand \
                 too far)",
                self.input_len
            )
        })?;
        Ok(())
    }
}

/// Depth of a container holding elements of the given depths, if within [`MAX_DEPTH`].
fn nest(depths: impl Iterator<Item = u32>) -> Result<u32, String> {
    let depth = 1 + depths.max().unwrap_or(0);
    if depth > MAX_DEPTH {
        return Err(format!(
            "pickle containers nested more than {MAX_DEPTH} deep"
        ));
    }
    Ok(depth)
}

pub(super) fn tuple(items: Vec<Val>, work: &mut Work) -> Result<Val, String> {
    work.charge(items.len())?;
    let depth = nest(items.iter().map(Val::depth))?;
    Ok(Val::Tuple(Rc::new(Node { depth, items })))
}

/// Appends `new` to the container on top of the stack, at `per_item` units each. If the memo
/// shares the container, `make_mut` first copies it so that the memo keeps its snapshot; the
/// copied items are charged too.
pub(super) fn grow<T: Clone>(
    node: &mut Rc<Node<T>>,
    new: Vec<T>,
    per_item: usize,
    depth: fn(&T) -> u32,
    work: &mut Work,
) -> Result<(), String> {
    let depth = nest(new.iter().map(depth))?.max(node.depth);
    let copied = if Rc::strong_count(node) > 1 {
        node.items.len()
    } else {
        0
    };
    work.charge(per_item * (copied + new.len()))?;
    let node = Rc::make_mut(node);
    node.depth = depth;
    if copied > 0 {
        // A fresh copy is exactly full; without this, extending it would double its capacity.
        node.items.reserve_exact(new.len());
    }
    node.items.extend(new);
    Ok(())
}
