//! The subset of Python's pickle format that PyTorch's `torch.save` (and LitGPT's
//! `incremental_save`) writes for state dicts: dicts, tuples, lists, strings, numbers, globals,
//! persistent storage ids and tensor rebuild calls. Anything else is a typed error, never a panic.
//!
//! A small hostile file can neither overflow the stack nor exhaust memory, because three things
//! are bounded:
//! - Nesting. Each container records its depth (one more than its deepest element), and building
//!   or growing one past `MAX_DEPTH` is an error ("pickle containers nested more than 256
//!   deep"), so no value is deeper. Nothing recurses on the input: `flatten` walks a work list,
//!   and the recursive `Drop` of a value is at most `MAX_DEPTH` levels deep.
//! - Copies. Values are reference counted, so storing into the memo (`BINPUT`, `MEMOIZE`) and
//!   fetching from it (`BINGET`) is O(1) whatever the value's size. The memo keeps a snapshot:
//!   growing a container that the memo also holds copies the container first (copy-on-write),
//!   and the copy is charged as work.
//! - Work. A parse may spend `max(MIN_WORK, WORK_PER_BYTE * input length)` units, and never more
//!   than `MAX_WORK` (about a GB of memory at worst, whatever the file's size). A unit is one
//!   value stored or copied into a container (a dict item is two), one byte of string or global
//!   name, one element of a tensor's shape or stride, and, while flattening, one dict item
//!   visited or one byte of dotted path built; each tensor listed costs `TENSOR_WORK` more.
//!   Sharing lets a few hundred bytes describe a tree exponentially larger than the file (a dict
//!   holding the same dict twice, 40 levels down); the budget turns that into an error ("pickle
//!   needs more work than its size allows") instead of unbounded time and memory. Each unit is
//!   at most a few dozen bytes of memory, so memory is linear in the input length too, and
//!   capped.
//!
//! The pickle stack and the memo grow by at most one entry per opcode, so the input length
//! bounds them without a charge.

mod value;

use std::collections::HashMap;
use std::rc::Rc;

use value::{grow, tuple, Node, Val, Work};

/// Work charged per tensor listed, for its path and record (around 200 bytes with allocations).
const TENSOR_WORK: usize = 8;

/// A tensor as described by the pickle: which storage, at which element offset, shape and strides.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// Key of the storage record (`data/<key>` in the zip).
    pub key: String,
    /// PyTorch storage type name, e.g. `FloatStorage`, `BFloat16Storage`.
    pub storage_type: String,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// Parses pickle `data` and returns every tensor with its dotted path (`a.b.weight`).
pub fn tensors(data: &[u8]) -> Result<Vec<(String, TensorRef)>, String> {
    let mut work = Work::for_input(data.len());
    let root = run(data, &mut work)?;
    flatten(root, &mut work)
}

/// The tensors under `root` with their dotted paths, depth first in dict order. Walks a work
/// list rather than recursing, and charges every dict item visited and every path byte built,
/// because a dict shared through the memo is listed once per path that reaches it.
fn flatten(root: Val, work: &mut Work) -> Result<Vec<(String, TensorRef)>, String> {
    let mut out = Vec::new();
    let mut todo = vec![(String::new(), root)];
    while let Some((path, v)) = todo.pop() {
        match v {
            Val::Tensor(t) => {
                let (key, ty) = (t.key.len(), t.storage_type.len());
                work.charge(TENSOR_WORK + key + ty + 2 * t.shape.len())?;
                out.push((path, TensorRef::clone(&t)));
            }
            Val::Dict(d) => {
                work.charge(d.items.len())?;
                let first = todo.len();
                for (k, v) in &d.items {
                    if !matches!(v, Val::Tensor(_) | Val::Dict(_)) {
                        continue;
                    }
                    let int;
                    let key = match k {
                        Val::Str(s) => &**s,
                        Val::Int(i) => {
                            int = i.to_string();
                            &int
                        }
                        _ => continue,
                    };
                    work.charge(path.len() + 1 + key.len())?;
                    let child = if path.is_empty() {
                        key.to_string()
                    } else {
                        format!("{path}.{key}")
                    };
                    todo.push((child, v.clone()));
                }
                // The work list pops from its end; reversing keeps dict order.
                todo[first..].reverse();
            }
            _ => {}
        }
    }
    Ok(out)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(format!("truncated pickle at byte {}", self.pos));
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn line(&mut self, work: &mut Work) -> Result<Rc<str>, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("unterminated GLOBAL line")?;
        self.pos += n + 1;
        text(&rest[..n], "GLOBAL name", work)
    }
}

fn text(b: &[u8], what: &str, work: &mut Work) -> Result<Rc<str>, String> {
    work.charge(b.len())?;
    let s = std::str::from_utf8(b).map_err(|_| format!("{what} is not UTF-8"))?;
    Ok(Rc::from(s))
}

fn to_usize(v: &Val, what: &str) -> Result<usize, String> {
    match v {
        Val::Int(i) => usize::try_from(*i).map_err(|_| format!("{what}: {i} is negative")),
        other => Err(format!("{what}: expected an int, got a {}", other.kind())),
    }
}

fn to_dims(v: &Val, what: &str, work: &mut Work) -> Result<Vec<usize>, String> {
    match v {
        Val::Tuple(xs) | Val::List(xs) => {
            work.charge(xs.items.len())?;
            xs.items.iter().map(|x| to_usize(x, what)).collect()
        }
        other => Err(format!("{what}: expected a tuple, got a {}", other.kind())),
    }
}

fn reduce(callable: Val, args: Val, work: &mut Work) -> Result<Val, String> {
    let (Val::Global(g), Val::Tuple(args)) = (&callable, args) else {
        return Ok(Val::Object);
    };
    let (module, name) = (&*g.0, &*g.1);
    let args = &args.items;
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            if args.len() < 4 {
                return Err(format!("{name} needs 4 arguments, got {}", args.len()));
            }
            let Val::Storage(storage) = &args[0] else {
                let got = args[0].kind();
                return Err(format!("{name}: first argument is not a storage (a {got})"));
            };
            let shape = to_dims(&args[2], "tensor size", work)?;
            let stride = to_dims(&args[3], "tensor stride", work)?;
            if shape.len() != stride.len() {
                let (s, t) = (shape.len(), stride.len());
                return Err(format!("tensor size has {s} dims but its stride has {t}"));
            }
            let (key, storage_type) = &**storage;
            work.charge(key.len() + storage_type.len())?;
            Ok(Val::Tensor(Rc::new(TensorRef {
                key: key.to_string(),
                storage_type: storage_type.to_string(),
                offset: to_usize(&args[1], "storage offset")?,
                shape,
                stride,
            })))
        }
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => {
            Ok(args.first().cloned().unwrap_or(Val::Atom("None")))
        }
        ("collections", "OrderedDict") => Ok(Val::Dict(Node::empty())),
        _ => Ok(Val::Object),
    }
}

fn pop(stack: &mut Vec<Val>) -> Result<Val, String> {
    match stack.pop() {
        Some(Val::Mark) => Err("pickle MARK used as a value".into()),
        Some(v) => Ok(v),
        None => Err("pickle stack underflow".into()),
    }
}

/// The values above the topmost MARK, which is removed. Each value is scanned at most once
/// before it is consumed, so repeated calls stay linear in the input.
fn pop_mark(stack: &mut Vec<Val>) -> Result<Vec<Val>, String> {
    let m = stack
        .iter()
        .rposition(|v| matches!(v, Val::Mark))
        .ok_or("MARK expected on the pickle stack")?;
    let items = stack.split_off(m + 1);
    stack.pop();
    Ok(items)
}

fn run(data: &[u8], work: &mut Work) -> Result<Val, String> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Val> = Vec::new();
    let mut memo: HashMap<u32, Val> = HashMap::new();
    loop {
        let op = r.u8()?;
        match op {
            0x80 | 0x95 => {
                // PROTO's version and FRAME's length: nothing to check.
                r.take(if op == 0x80 { 1 } else { 8 })?;
            }
            b'.' => return pop(&mut stack),
            b'(' => stack.push(Val::Mark),
            b'}' => stack.push(Val::Dict(Node::empty())),
            b']' => stack.push(Val::List(Node::empty())),
            b')' => stack.push(Val::Tuple(Node::empty())),
            b'N' => stack.push(Val::Atom("None")),
            0x88 | 0x89 => stack.push(Val::Atom("bool")),
            b'K' => stack.push(Val::Int(r.u8()? as i64)),
            b'M' => stack.push(Val::Int(u16::from_le_bytes(r.array()?) as i64)),
            b'J' => stack.push(Val::Int(r.u32()? as i32 as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    return Err(format!("LONG1 of {n} bytes is too large"));
                }
                let mut v: i64 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= (byte as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Val::Int(v));
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => r.u32()? as usize,
                    0x8c => r.u8()? as usize,
                    _ => usize::try_from(u64::from_le_bytes(r.array()?))
                        .map_err(|_| "string too long")?,
                };
                let s = text(r.take(n)?, "string", work)?;
                stack.push(Val::Str(s));
            }
            b'G' | b'C' | b'B' => {
                let n = match op {
                    b'G' => 8,
                    b'C' => r.u8()? as usize,
                    _ => r.u32()? as usize,
                };
                r.take(n)?;
                stack.push(Val::Atom(if op == b'G' { "float" } else { "bytes" }));
            }
            b'c' => {
                let module = r.line(work)?;
                let name = r.line(work)?;
                stack.push(Val::Global(Rc::new((module, name))));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Val::Str(m), Val::Str(n)) => stack.push(Val::Global(Rc::new((m, n)))),
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(tuple(items, work)?);
            }
            0x85..=0x87 => {
                // TUPLE1, TUPLE2, TUPLE3
                let n = usize::from(op - 0x84);
                let at = stack.len().checked_sub(n).ok_or("pickle stack underflow")?;
                let items = stack.split_off(at);
                if items.iter().any(|v| matches!(v, Val::Mark)) {
                    return Err("pickle MARK used as a value".into());
                }
                stack.push(tuple(items, work)?);
            }
            b'q' | b'r' | 0x94 => {
                // BINPUT, LONG_BINPUT, MEMOIZE: O(1), the value is shared.
                let k = match op {
                    b'q' => r.u8()? as u32,
                    b'r' => r.u32()?,
                    _ => memo.len() as u32,
                };
                let top = stack.last().ok_or("memo put on an empty stack")?;
                memo.insert(k, top.clone());
            }
            b'h' | b'j' => {
                // BINGET, LONG_BINGET: O(1), the value is shared.
                let k = if op == b'h' { r.u8()? as u32 } else { r.u32()? };
                let v = memo
                    .get(&k)
                    .ok_or_else(|| format!("memo get of unknown key {k}"))?;
                stack.push(v.clone());
            }
            b'Q' => {
                let Val::Tuple(p) = pop(&mut stack)? else {
                    return Err("persistent id is not a tuple".into());
                };
                let p = &p.items;
                let kind = |v: Option<&Val>| v.map_or("nothing", Val::kind);
                let storage_type = match p.get(1) {
                    Some(Val::Global(g)) => g.1.clone(),
                    other => return Err(format!("persistent id: storage type is {}", kind(other))),
                };
                let key = match p.get(2) {
                    Some(Val::Str(s)) => s.clone(),
                    Some(Val::Int(i)) => Rc::from(i.to_string()),
                    other => return Err(format!("persistent id: storage key is {}", kind(other))),
                };
                if !matches!(p.first(), Some(Val::Str(s)) if &**s == "storage") {
                    return Err("persistent id is not a storage".into());
                }
                stack.push(Val::Storage(Rc::new((key, storage_type))));
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                stack.push(reduce(callable, args, work)?);
            }
            0x81 => {
                let _args = pop(&mut stack)?;
                let _cls = pop(&mut stack)?;
                stack.push(Val::Object);
            }
            b'b' => {
                pop(&mut stack)?; // BUILD: state ignored (e.g. `_metadata`)
                if stack.is_empty() {
                    return Err("BUILD on an empty stack".into());
                }
            }
            b's' | b'u' => {
                let (name, items) = match op {
                    b's' => {
                        let v = pop(&mut stack)?;
                        ("SETITEM", vec![pop(&mut stack)?, v])
                    }
                    _ => ("SETITEMS", pop_mark(&mut stack)?),
                };
                if items.len() % 2 != 0 {
                    return Err(format!("{name} with an odd number of items"));
                }
                match stack.last_mut() {
                    Some(Val::Dict(d)) => {
                        let mut it = items.into_iter();
                        let mut pairs = Vec::with_capacity(it.len() / 2);
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            pairs.push((k, v));
                        }
                        grow(d, pairs, 2, |(k, v)| k.depth().max(v.depth()), work)?;
                    }
                    Some(Val::Object) => {}
                    _ => return Err(format!("{name} on a non-dict")),
                }
            }
            b'a' | b'e' => {
                let (name, items) = match op {
                    b'a' => ("APPEND", vec![pop(&mut stack)?]),
                    _ => ("APPENDS", pop_mark(&mut stack)?),
                };
                match stack.last_mut() {
                    Some(Val::List(l)) => grow(l, items, 1, Val::depth, work)?,
                    Some(Val::Object) => {}
                    _ => return Err(format!("{name} on a non-list")),
                }
            }
            other => {
                let at = r.pos - 1;
                return Err(format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {at}"
                ));
            }
        }
        if stack.len() > 1 << 20 {
            return Err("pickle stack grew beyond 1M entries".into());
        }
    }
}

#[cfg(test)]
mod tests;
